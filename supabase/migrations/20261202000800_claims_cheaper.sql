-- Claims that cost less (issue 12): the same rules, fewer writes per claim and completion.
--
-- Measured in one session (track_functions = 'all', 1,000 claim + complete pairs): 3.9 ms of database time per
-- job, of which 0.8 ms went to the capacity slots and 0.5 ms to six counter calls.
--   * Capacity slot rows are updated in place (HOT): the job_id index made every take and release a new row
--     version with new index entries, and with thousands of dead versions per minute each lookup walked them.
--     The table holds a few dozen rows; a release finds its job's slots by reading them all. At most one slot
--     per scope per job still holds: take_capacity_slot is the only writer of job_id, once per scope per claim.
--   * Counters: one call per transaction adds to every counter it bumps, in one shard row per name, chosen
--     through the first name (SKIP LOCKED), so claims and completions take one row lock per name each.

drop index private.capacity_slots_held;
alter table private.capacity_slots set (fillfactor = 25);  -- room on the page for in-place updates

create function private.queue_counters_add(p_names text[], p_deltas double precision[]) returns void
language plpgsql security definer set search_path = '' as $$
-- Adds p_deltas[i] to counter p_names[i], all in one shard: the first free one of p_names[1] (SKIP LOCKED), or
-- this backend's own when all 16 are held (then waited for, first name first, so no two callers wait in a
-- cycle). Callers bump a given set of names together, each set under its own first name. Internal.
declare
  v_shard smallint;
begin
  select s.shard into v_shard from private.queue_counter_shards s
   where s.name = p_names[1]
   order by (s.shard + pg_catalog.pg_backend_pid()) % 16
   limit 1 for update skip locked;
  if v_shard is null then
    v_shard := pg_catalog.pg_backend_pid() % 16;
    perform 1 from private.queue_counter_shards s where s.name = p_names[1] and s.shard = v_shard for update;
  end if;
  update private.queue_counter_shards s set value = s.value + d.delta
    from unnest(p_names, p_deltas) d(name, delta)
   where s.name = d.name and s.shard = v_shard and d.delta <> 0;
end $$;
revoke all on function private.queue_counters_add(text[], double precision[]) from public, anon, authenticated;

-- queue_counter_add: one counter, the same way.
create or replace function private.queue_counter_add(p_name text, p_delta double precision default 1) returns void
language sql security definer set search_path = '' as $$
  select private.queue_counters_add(array[p_name], array[p_delta])
$$;

CREATE OR REPLACE FUNCTION queue.claim_jobs(p_worker_id text, p_limit integer DEFAULT NULL::integer, p_now timestamp with time zone DEFAULT now()) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    SET jit TO 'off'
    SET enable_seqscan TO 'off'
    AS $$
-- Claims what capacity and pauses allow, in claim order, and starts an attempt for each. service_role only.
declare
  v_cfg public.job_queue_config;
  v_effective integer;
  v_processing bigint;
  v_room integer;
  v_claims jsonb := '[]'::jsonb;
  v_id uuid;
  v_job public.jobs;
  v_renderer_cap integer;
  v_full text[] := '{}';  -- renderers found at their cap in this call
  v_token text;
  v_endpoint_id uuid;
  v_endpoint_url text;
  v_wait_sum double precision := 0;
  v_wait_n integer := 0;
  -- Claim order: by created_at minus the priority's offset; strict priority when no offsets are set.
  v_offsets interval[] := private.claim_offsets();
  -- Candidates beyond the room: claims running side by side take (and lock) the first ones.
  c_spare constant integer := 16;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'worker_id is required' using errcode = 'VQ400';
  end if;
  if p_limit is not null and p_limit < 0 then
    raise exception 'limit must not be negative' using errcode = 'VQ400';
  end if;
  -- The per-user count needs a fresh snapshot after its lock: only READ COMMITTED gives one.
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'claim_jobs must run in a READ COMMITTED transaction' using errcode = '25000';
  end if;

  -- Shared: claims never wait for each other here; a pause (exclusive) waits for the claims in flight.
  perform pg_catalog.pg_advisory_xact_lock_shared(private.claim_lock_key());

  select * into v_cfg from public.job_queue_config limit 1;
  perform private.expire_queued_jobs(p_now);
  if v_cfg.paused then return v_claims; end if;  -- a paused queue starts nothing; running jobs finish
  select q.effective into v_effective from private.queue_capacity(p_now) q;
  -- The room as committed now; the slots, not this count, decide (concurrent claims hold slots unseen here).
  select count(*) into v_processing from public.jobs j where j.status = 'processing';
  v_room := greatest(v_effective - v_processing, 0);
  if p_limit is not null then v_room := least(v_room, p_limit); end if;
  if v_room = 0 then return v_claims; end if;

  -- Per renderer with a usable endpoint and room under its cap, per priority: its first jobs in claim order
  -- (one partial-index scan each, skipping users at max_processing_per_user); merged, in claim order.
  for v_id, v_renderer_cap in
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
      select caps.renderer, caps.max_concurrent,
             least(v_room, greatest(coalesce(caps.max_concurrent - caps.busy, v_room), 0))::integer + c_spare as n
        from caps
       where coalesce(caps.max_concurrent - caps.busy, 1) > 0
    )
    select c.id, c.max_concurrent from room
      cross join lateral (
        select x.*, room.max_concurrent from (values (0::smallint), (1::smallint), (2::smallint)) pr(rank)
          cross join lateral (
            select j.id, j.priority_rank, j.created_at, j.created_at - v_offsets[pr.rank + 1] as claim_key
              from public.jobs j
             -- `= any(array[...])`: with a plain `=` the planner takes the renderer as fixed, and then the
             -- jobs_created index looks as good as jobs_claim_order for this order; walking it past every
             -- other renderer's jobs cost up to a second per claim at 100,000 waiting. This way only
             -- jobs_claim_order gives the order, read presorted from the first matching entry.
             where j.status = 'queued' and j.renderer = any(array[room.renderer]) and j.priority_rank = pr.rank
               and j.next_attempt_at <= p_now and (j.expires_at is null or j.expires_at > p_now)
               and (v_cfg.max_processing_per_user is null or j.user_id is null
                    or (select count(*) from public.jobs u where u.user_id = j.user_id and u.status = 'processing')
                       < v_cfg.max_processing_per_user)
             order by j.renderer, j.priority_rank, j.created_at, j.id
             limit room.n) x
         order by x.claim_key, x.priority_rank, x.created_at, x.id
         limit room.n) c
     order by c.claim_key, c.priority_rank, c.created_at, c.id
     limit v_room + c_spare
  loop
    exit when jsonb_array_length(v_claims) >= v_room;
    -- A job another claim (or a cancel) holds is skipped: it is that transaction's.
    select * into v_job from public.jobs j where j.id = v_id and j.status = 'queued' for update skip locked;
    continue when not found or v_job.renderer = any(v_full);

    -- Its user's cap: counted under the user's lock (fresh after it); a user being claimed elsewhere waits.
    if v_cfg.max_processing_per_user is not null and v_job.user_id is not null then
      continue when not pg_catalog.pg_try_advisory_xact_lock(private.user_claim_key(v_job.user_id));
      continue when (select count(*) from public.jobs u where u.user_id = v_job.user_id and u.status = 'processing')
                    >= v_cfg.max_processing_per_user;
    end if;

    -- Its renderer's slot, then a global slot (none left: nothing more starts in this call).
    if v_renderer_cap is not null then
      if not private.take_capacity_slot('renderer:' || v_job.renderer, v_renderer_cap, v_job.id) then
        v_full := v_full || v_job.renderer;
        continue;
      end if;
    end if;
    if not private.take_capacity_slot('global', v_effective, v_job.id) then
      perform private.release_capacity_slots(v_job.id);
      exit;
    end if;

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
    perform private.queue_counters_add(array['jobs_claimed_total', 'wait_seconds_count', 'wait_seconds_sum'],
                                       array[jsonb_array_length(v_claims), v_wait_n, v_wait_sum]);
  end if;
  return v_claims;
end $$;

CREATE OR REPLACE FUNCTION queue.complete_job(p_job_id uuid, p_attempt integer, p_token text, p_result jsonb, p_now timestamp with time zone DEFAULT now()) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
-- Completes the current attempt with its result (a repeat returns the job unchanged). service_role only.
declare
  v_job public.jobs;
begin
  if p_result is null or jsonb_typeof(p_result) <> 'object' or jsonb_typeof(p_result -> 'video_url') is distinct from 'string' then
    raise exception 'result must be an object with a video_url string' using errcode = 'VQ400';
  end if;
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token, true, p_now);
  if v_job.status = 'completed' then
    return private.job_to_json(v_job, p_now);  -- the same callback again: harmless
  end if;
  v_job := private.set_job_state(v_job, 'completed', p_now, p_outcome => 'completed', p_result => p_result);
  perform private.queue_counters_add(array['jobs_completed_total', 'processing_seconds_count', 'processing_seconds_sum'],
                                     array[1, 1, extract(epoch from (p_now - v_job.started_at))::double precision]);
  return private.job_to_json(v_job, p_now);
end $$;

CREATE OR REPLACE FUNCTION queue.recover_expired_attempts(p_now timestamp with time zone DEFAULT now()) RETURNS jsonb
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
-- Treats every attempt whose lease expired as a retryable failure (silent too long, or over max_render_minutes).
-- service_role (worker passes) and the video-queue-recover cron job.
declare
  v_cfg public.job_queue_config;
  v_job public.jobs;
  v_out jsonb := '[]'::jsonb;
  v_failed integer := 0;
  v_retried integer := 0;
begin
  perform private.expire_queued_jobs(p_now);  -- the cron backstop expires jobs even with no worker pass
  select * into v_cfg from public.job_queue_config limit 1;
  for v_job in
    select * from public.jobs j
     where j.status = 'processing' and j.lease_expires_at <= p_now
     order by j.lease_expires_at
     for update skip locked
  loop
    v_job := private.fail_attempt(
      v_job,
      case when v_job.lease_expires_at >= v_job.started_at + make_interval(mins => v_cfg.max_render_minutes)
           then format('timed out after %s minutes (max_render_minutes)', v_cfg.max_render_minutes)
           else format('timed out after %s minutes', v_cfg.job_timeout_minutes) end,  -- without a sign of life
      true, 'timed_out', p_now);
    if v_job.status = 'failed' then v_failed := v_failed + 1; else v_retried := v_retried + 1; end if;
    v_out := v_out || jsonb_build_object('job_id', v_job.id, 'attempt', v_job.attempt,
                                         'outcome', case v_job.status when 'failed' then 'failed' else 'retry_scheduled' end);
  end loop;
  -- Counters once (two concurrent recoveries never wait on each other in a cycle).
  if jsonb_array_length(v_out) > 0 then
    perform private.queue_counters_add(array['attempts_timed_out_total', 'jobs_failed_total', 'jobs_retried_total'],
                                       array[jsonb_array_length(v_out), v_failed, v_retried]);
  end if;
  return v_out;
end $$;

CREATE OR REPLACE FUNCTION private.expire_queued_jobs(p_now timestamp with time zone) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO ''
    AS $$
declare
  v_job public.jobs;
  v_n integer := 0;
begin
  for v_job in
    select * from public.jobs j
     where j.status = 'queued' and j.expires_at is not null and j.expires_at <= p_now
     order by j.expires_at
     for update skip locked
  loop
    perform private.set_job_state(v_job, 'cancelled', p_now, p_cancel_reason => 'expired',
      p_error => format('expired: not started by its expires_at (%s)', v_job.expires_at));
    v_n := v_n + 1;
  end loop;
  if v_n > 0 then
    perform private.queue_counters_add(array['jobs_cancelled_total', 'jobs_expired_total'], array[v_n, v_n]);
  end if;
  return v_n;
end $$;
-- Two row triggers that run on every claim and outcome only to find they have nothing to do: their functions'
-- own first tests, as WHEN conditions, so Postgres does not call them at all then.
drop trigger _900_touch_updated_at on public.jobs;
create trigger _900_touch_updated_at before update on public.jobs
  for each row when (new.updated_at is not distinct from old.updated_at)
  execute function private.jobs_touch_updated_at();
drop trigger _200_complete_status on public.jobs;
create trigger _200_complete_status before update of status on public.jobs
  for each row when (new.status <> old.status and new.status <> 'processing')
  execute function private.jobs__complete_status();
