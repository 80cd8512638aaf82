-- Scheduling, part 2: bounded priority overtake and per-user fairness (API.md "Scheduling").
--   Offsets: a job is claimed in order of created_at minus its priority's offset, FIFO within a priority.
--     All three unset (the default): today's strict high > medium > low. With 0 / 30 / 60 minutes a daily
--     video waits behind newer doubts for at most an hour.
--   max_processing_per_user: a user's queued jobs beyond it wait (wait_reason user_limit) while other users'
--     jobs go ahead; positions stay exact in claim order.

alter table public.job_queue_config
  add column high_priority_offset_minutes integer check (high_priority_offset_minutes >= 0),
  add column medium_priority_offset_minutes integer check (medium_priority_offset_minutes >= 0),
  add column low_priority_offset_minutes integer check (low_priority_offset_minutes >= 0),
  add column max_processing_per_user integer check (max_processing_per_user > 0),
  add constraint job_queue_config_offsets_all_or_none check (
    num_nulls(high_priority_offset_minutes, medium_priority_offset_minutes, low_priority_offset_minutes) in (0, 3));
comment on column public.job_queue_config.low_priority_offset_minutes is
  'Priority offsets (high/medium/low, minutes; all set or none): claim order is created_at minus the offset. Unset: strict priority.';
comment on column public.job_queue_config.max_processing_per_user is
  'Jobs of one user running at once (null: no limit); the rest wait with wait_reason user_limit.';

-- priority_offsets: the configured offsets as intervals indexed by priority_rank + 1, or null (strict).
create function private.priority_offsets() returns interval[]
language sql stable security definer set search_path = '' as $$
  select case when c.high_priority_offset_minutes is not null then
           array[make_interval(mins => c.high_priority_offset_minutes),
                 make_interval(mins => c.medium_priority_offset_minutes),
                 make_interval(mins => c.low_priority_offset_minutes)] end
    from public.job_queue_config c limit 1
$$;

-- claim_offsets: the offsets claim_jobs sorts by. Strict priority is offsets so large (100,000 years a
-- rank) that a higher priority always comes first, so one ordering serves both rules.
create function private.claim_offsets() returns interval[]
language sql stable security definer set search_path = '' as $$
  select coalesce(private.priority_offsets(),
                  array[interval '0', make_interval(years => -100000), make_interval(years => -200000)])
$$;

create or replace function private.job_queue_position(p_job public.jobs) returns integer
language plpgsql stable security definer set search_path = '' set jit = off as $$
-- Position of a queued job in claim order (null otherwise). Internal; used by job_to_json.
declare
  v_higher bigint;
  v_same bigint;
  v_ahead bigint;
  v_behind bigint;
  v_offsets interval[] := private.priority_offsets();
  v_key timestamptz;
  v_rank smallint;
begin
  if p_job.status <> 'queued' then return null; end if;
  if v_offsets is not null then
    -- Bounded overtake: the jobs of every priority whose claim key (created_at - offset) is smaller, a tie
    -- going to the higher priority; one index range count on jobs_queued_order per priority.
    v_key := p_job.created_at - v_offsets[p_job.priority_rank + 1];
    v_ahead := 0;
    for v_rank in 0..2 loop
      v_ahead := v_ahead + case
        when v_rank = p_job.priority_rank then
          (select count(*) from public.jobs j where j.status = 'queued' and j.priority_rank = v_rank
              and (j.created_at, j.id) < (p_job.created_at, p_job.id))
        when v_rank < p_job.priority_rank then
          (select count(*) from public.jobs j where j.status = 'queued' and j.priority_rank = v_rank
              and j.created_at <= v_key + v_offsets[v_rank + 1])
        else
          (select count(*) from public.jobs j where j.status = 'queued' and j.priority_rank = v_rank
              and j.created_at < v_key + v_offsets[v_rank + 1])
        end;
    end loop;
    return (v_ahead + 1)::integer;
  end if;
  select coalesce(sum(d.n) filter (where d.priority_rank < p_job.priority_rank), 0),
         coalesce(sum(d.n) filter (where d.priority_rank = p_job.priority_rank), 0)
    into v_higher, v_same
    from public.queue_depth_slots d;
  -- Jobs behind it first (a new job has none), then jobs ahead, then a full count of the jobs ahead.
  select count(*) into v_behind from (
    select 1 from public.jobs j
     where j.status = 'queued' and j.priority_rank = p_job.priority_rank
       and (j.created_at, j.id) > (p_job.created_at, p_job.id)
     limit 1000) b;
  if v_behind < 1000 then
    v_ahead := greatest(v_same - v_behind - 1, 0);
  else
    select count(*) into v_ahead from public.jobs j
     where j.status = 'queued' and j.priority_rank = p_job.priority_rank
       and (j.created_at, j.id) < (p_job.created_at, p_job.id);
  end if;
  return (v_higher + v_ahead + 1)::integer;
end $$;
create or replace function private.job_wait_reason(p_job public.jobs, p_now timestamptz) returns text
language plpgsql stable security definer set search_path = '' as $$
declare
  v_cap integer;
  v_effective integer;
begin
  if p_job.status <> 'queued' then return null; end if;
  if (select c.paused from public.job_queue_config c limit 1)
     or (select r.paused from public.renderers r where r.name = p_job.renderer) then
    return 'paused';
  end if;
  if p_job.next_attempt_at > p_now then
    return case when p_job.retry_count > 0 then 'retry_backoff' else 'scheduled' end;
  end if;
  if not exists (select 1 from public.render_endpoints e
                  where e.renderer = p_job.renderer and not e.disabled
                    and (e.unhealthy_until is null or e.unhealthy_until <= p_now)) then
    return 'no_endpoint';
  end if;
  if p_job.user_id is not null
     and (select c.max_processing_per_user from public.job_queue_config c limit 1)
         <= (select count(*) from public.jobs j where j.status = 'processing' and j.user_id = p_job.user_id) then
    return 'user_limit';
  end if;
  select rc.max_concurrent into v_cap from private.renderer_caps() rc where rc.renderer = p_job.renderer;
  if v_cap is not null
     and (select count(*) from public.jobs j where j.status = 'processing' and j.renderer = p_job.renderer) >= v_cap then
    return 'renderer_busy';
  end if;
  select q.effective into v_effective from private.queue_capacity(p_now) q;
  if (select count(*) from public.jobs j where j.status = 'processing') >= v_effective then
    return 'capacity';
  end if;
  return 'behind';
end $$;
create or replace function queue.claim_jobs(p_worker_id text, p_limit integer default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' set jit = off as $$
-- Claims what capacity and pauses allow, in claim order, and starts an attempt for each. service_role only.
declare
  v_cfg public.job_queue_config;
  v_effective integer;
  v_processing bigint;
  v_room integer;
  v_claims jsonb := '[]'::jsonb;
  v_id uuid;
  v_job public.jobs;
  v_token text;
  v_endpoint_id uuid;
  v_endpoint_url text;
  v_wait_sum double precision := 0;
  v_wait_n integer := 0;
  -- Claim order: by created_at minus the priority's offset; strict priority when no offsets are set.
  v_offsets interval[] := private.claim_offsets();
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'worker_id is required' using errcode = 'VQ400';
  end if;
  if p_limit is not null and p_limit < 0 then
    raise exception 'limit must not be negative' using errcode = 'VQ400';
  end if;
  -- The cap check needs a fresh snapshot after the lock: only READ COMMITTED gives one.
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'claim_jobs must run in a READ COMMITTED transaction' using errcode = '25000';
  end if;

  perform pg_catalog.pg_advisory_xact_lock(private.claim_lock_key());

  select * into v_cfg from public.job_queue_config limit 1;
  perform private.expire_queued_jobs(p_now);
  if v_cfg.paused then return v_claims; end if;  -- a paused queue starts nothing; running jobs finish
  select q.effective into v_effective from private.queue_capacity(p_now) q;
  select count(*) into v_processing from public.jobs j where j.status = 'processing';
  v_room := greatest(v_effective - v_processing, 0);
  if p_limit is not null then v_room := least(v_room, p_limit); end if;
  if v_room = 0 then return v_claims; end if;

  -- Per renderer with a usable endpoint and room under its cap, per priority: its first jobs in claim order
  -- (one partial-index scan each, skipping users at max_processing_per_user); merged, the first v_room win.
  for v_id in
    with caps as (
      select rc.renderer, rc.max_concurrent,
             (select count(*) from public.jobs j where j.status = 'processing' and j.renderer = rc.renderer) as busy
        from private.renderer_caps() rc
        join public.renderers r on r.name = rc.renderer
       where not r.paused
         and exists (select 1 from public.render_endpoints e
                      where e.renderer = rc.renderer and not e.disabled
                        and (e.unhealthy_until is null or e.unhealthy_until <= p_now))
    ),
    room as (
      select caps.renderer, least(v_room, greatest(coalesce(caps.max_concurrent - caps.busy, v_room), 0))::integer as n
        from caps
    )
    select c.id from room
      cross join lateral (
        select x.* from (values (0::smallint), (1::smallint), (2::smallint)) pr(rank)
          cross join lateral (
            select j.id, j.priority_rank, j.created_at, j.created_at - v_offsets[pr.rank + 1] as claim_key
              from public.jobs j
             where j.status = 'queued' and j.renderer = room.renderer and j.priority_rank = pr.rank
               and j.next_attempt_at <= p_now and (j.expires_at is null or j.expires_at > p_now)
               and (v_cfg.max_processing_per_user is null or j.user_id is null
                    or (select count(*) from public.jobs u where u.user_id = j.user_id and u.status = 'processing')
                       < v_cfg.max_processing_per_user)
             order by j.created_at, j.id
             limit room.n) x
         order by x.claim_key, x.priority_rank, x.created_at, x.id
         limit room.n) c
     order by c.claim_key, c.priority_rank, c.created_at, c.id
     limit v_room
  loop
    -- A row locked by a concurrent cancel is skipped (it is claimed next pass if still queued).
    select * into v_job from public.jobs j where j.id = v_id and j.status = 'queued' for update skip locked;
    continue when not found;
    -- Its user may have reached the cap with this pass's earlier claims: it waits (a later pass fills the slot).
    continue when v_cfg.max_processing_per_user is not null and v_job.user_id is not null
      and (select count(*) from public.jobs u where u.user_id = v_job.user_id and u.status = 'processing')
          >= v_cfg.max_processing_per_user;

    -- Least-loaded usable endpoint of the renderer (load counts this claim's earlier picks too).
    select e.id, e.url into v_endpoint_id, v_endpoint_url
      from public.render_endpoints e
     where e.renderer = v_job.renderer and not e.disabled
       and (e.unhealthy_until is null or e.unhealthy_until <= p_now)
     order by (select count(*) from public.jobs p
                where p.status = 'processing' and p.renderer = e.renderer and p.endpoint_id = e.id),
              e.created_at, e.id
     limit 1;

    -- 64 hex chars from two v4 UUIDs (244 random bits); only its sha256 is stored.
    v_token := replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');

    update public.jobs j
       set status = 'processing', attempt = j.attempt + 1, started_at = p_now,
           lease_expires_at = private.attempt_lease(p_now, p_now),
           next_attempt_at = null, worker_id = p_worker_id, endpoint_id = v_endpoint_id,
           progress = 0, stage = null, updated_at = p_now
     where j.id = v_id
    returning * into v_job;

    insert into public.job_attempts (job_id, attempt, token_hash, worker_id, endpoint_id, endpoint_url,
                                     started_at, lease_expires_at)
    values (v_job.id, v_job.attempt, encode(sha256(convert_to(v_token, 'UTF8')), 'hex'), p_worker_id,
            v_endpoint_id, v_endpoint_url, p_now, v_job.lease_expires_at);

    if v_job.attempt = 1 then
      v_wait_sum := v_wait_sum + extract(epoch from (p_now - v_job.created_at));
      v_wait_n := v_wait_n + 1;
    end if;

    v_claims := v_claims || jsonb_build_object(
      'job_id', v_job.id, 'attempt', v_job.attempt, 'callback_token', v_token,
      'job_type', v_job.job_type, 'renderer', v_job.renderer, 'payload', v_job.payload,
      'deadline', v_job.lease_expires_at,
      'endpoint', jsonb_build_object('id', v_endpoint_id, 'url', v_endpoint_url));
  end loop;

  if jsonb_array_length(v_claims) > 0 then
    perform private.queue_counter_add('jobs_claimed_total', jsonb_array_length(v_claims));
    perform private.queue_counter_add('wait_seconds_count', v_wait_n);
    perform private.queue_counter_add('wait_seconds_sum', v_wait_sum);
  end if;
  return v_claims;
end $$;

create or replace function private.job_wait_estimate(p_job public.jobs, p_position integer, p_now timestamptz default now())
returns integer
language plpgsql stable security definer set search_path = '' as $$
-- Wait estimate in seconds for a queued job (its position, its user's running cap). Internal; used by job_to_json.
declare
  v_effective integer;
  v_cap integer;
  v_slots integer;
  v_busy bigint;
  v_before bigint;
  v_wait numeric;
begin
  if p_job.status <> 'queued' or p_position is null then return null; end if;
  select q.effective into v_effective from private.queue_capacity(p_now) q;
  select rc.max_concurrent into v_cap from private.renderer_caps() rc where rc.renderer = p_job.renderer;
  v_slots := least(v_effective, coalesce(v_cap, v_effective));
  if v_slots is null or v_slots <= 0 then return null; end if;
  if v_cap is not null and v_cap < v_effective then
    select count(*) into v_busy from public.jobs j where j.status = 'processing' and j.renderer = p_job.renderer;
  else
    select count(*) into v_busy from public.jobs j where j.status = 'processing';
  end if;
  v_before := greatest(0, (p_position - 1) + v_busy - v_slots + 1);
  v_wait := ceil(v_before * private.renderer_avg_processing_seconds(p_job.renderer, p_now) / v_slots);
  -- A user at max_processing_per_user waits at least until the first of their running jobs should end.
  if p_job.user_id is not null
     and (select c.max_processing_per_user from public.job_queue_config c limit 1)
         <= (select count(*) from public.jobs j where j.status = 'processing' and j.user_id = p_job.user_id) then
    v_wait := greatest(v_wait, (select ceil(min(greatest(0, private.renderer_avg_processing_seconds(j.renderer, p_now)
                                                            - extract(epoch from (p_now - j.started_at)))))
                                  from public.jobs j where j.status = 'processing' and j.user_id = p_job.user_id));
  end if;
  return greatest(v_wait, ceil(greatest(extract(epoch from (p_job.next_attempt_at - p_now)), 0)))::integer;
end $$;
