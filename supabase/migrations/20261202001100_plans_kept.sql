-- Plans kept, not made again on every call (issue 12). The same rules; only how often Postgres plans them.
--
-- 1. claim_jobs keeps one plan per connection. plpgsql plans a statement with its parameters' values (a custom
--    plan) until a generic plan looks no dearer; the claim's candidate query (renderers x priorities, LIMIT from
--    the room) never does, so it was planned again on every call. pgbench, 10 clients, claim_jobs(p_limit => 1)
--    + complete_job, 3 runs each way: 256-287 pairs/s replanning, 322-353/s with the generic plan; at 100,000
--    waiting jobs of 1,000 users 247 against 294/s. Those generic plans are the ones tests/query_plans_test.ts
--    checks. Forced on enqueue_job and complete_job, measured the same way, it gained nothing: they keep the
--    default.
-- 2. Small helpers on the claim, completion and enqueue paths become plpgsql. A LANGUAGE sql function with
--    SECURITY DEFINER or SET is never inlined, and its body is parsed and planned again at every call (only
--    plpgsql caches plans per session): track_functions, one client, put attempt_lease at 0.14 ms a call,
--    claim_offsets at 0.22 ms (priority_offsets inside it 0.13), release_capacity_slots at 0.11 ms and
--    wakeup_listened at 0.09 ms (twice per job), for a claim + completion of 4.5 ms in all.
--    Same signatures, volatility, owners and grants (CREATE OR REPLACE keeps the ACL).
alter function queue.claim_jobs(text, integer, timestamptz) set plan_cache_mode = force_generic_plan;

create or replace function private.attempt_lease(p_started_at timestamptz, p_now timestamptz) returns timestamptz
language plpgsql stable security definer set search_path = '' as $$
-- When an attempt started at p_started_at and last alive at p_now stops being alive. Internal.
begin
  return (select least(p_now + make_interval(mins => c.job_timeout_minutes),
                       p_started_at + make_interval(mins => c.max_render_minutes))
            from public.job_queue_config c limit 1);
end $$;

create or replace function private.priority_offsets() returns interval[]
language plpgsql stable security definer set search_path = '' as $$
-- The configured offsets as intervals indexed by priority_rank + 1, or null (strict priority). Internal.
begin
  return (select case when c.high_priority_offset_minutes is not null then
                   array[make_interval(mins => c.high_priority_offset_minutes),
                         make_interval(mins => c.medium_priority_offset_minutes),
                         make_interval(mins => c.low_priority_offset_minutes)] end
            from public.job_queue_config c limit 1);
end $$;

create or replace function private.claim_offsets() returns interval[]
language plpgsql stable security definer set search_path = '' as $$
-- The offsets claim_jobs sorts by. Strict priority is offsets so large (100,000 years a rank) that a higher
-- priority always comes first, so one ordering serves both rules. Internal.
begin
  return coalesce(private.priority_offsets(),
                  array[interval '0', make_interval(years => -100000), make_interval(years => -200000)]);
end $$;

create or replace function private.release_capacity_slots(p_job_id uuid) returns void
language plpgsql security definer set search_path = '' as $$
-- Frees the slots p_job_id holds. Internal (the jobs trigger; claim_jobs undoing).
begin
  update private.capacity_slots s set job_id = null where s.job_id = p_job_id;
end $$;

create or replace function private.wakeup_listened() returns boolean
language plpgsql stable security definer set search_path = '' as $$
-- Whether a worker holds the wake-up listener now. Internal.
begin
  return exists (select 1 from private.wakeup_listeners l where l.listening_until > now());
end $$;
