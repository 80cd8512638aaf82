-- The worker side: claim, release, progress, complete, fail, recover expired leases, endpoint health.
-- Every outcome is fenced by (job_id, attempt, callback token): a stale attempt changes nothing (VQ409),
-- a token that matches no attempt of the job is refused (VQ401).

-- Transaction-level advisory lock key that serializes "count processing, then claim" (claim_jobs).
-- Tests that change caps while claims run take the same key.
comment on table public.job_attempts is
  'One row per claim of a job. token_hash = sha256(callback token) hex; the token itself is never stored. '
  'claim_jobs serializes on pg_advisory_xact_lock(7203184453001) before counting and claiming.';

create function public.claim_jobs(p_worker_id text, p_limit integer default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' set jit = off as $$
-- Claims what capacity allows, in claim order, and starts an attempt for each. service_role only.
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

  perform pg_catalog.pg_advisory_xact_lock(7203184453001);

  select * into v_cfg from public.job_queue_config limit 1;
  select q.effective into v_effective from public.queue_capacity(p_now) q;
  select count(*) into v_processing from public.jobs j where j.status = 'processing';
  v_room := greatest(v_effective - v_processing, 0);
  if p_limit is not null then v_room := least(v_room, p_limit); end if;
  if v_room = 0 then return v_claims; end if;

  -- Per renderer with a usable endpoint and room under its cap: its first jobs in claim order
  -- (one partial-index scan each); merged, the first v_room of them in claim order win.
  for v_id in
    with caps as (
      select rc.renderer, rc.max_concurrent,
             (select count(*) from public.jobs j where j.status = 'processing' and j.renderer = rc.renderer) as busy
        from public.renderer_caps() rc
       where exists (select 1 from public.render_endpoints e
                      where e.renderer = rc.renderer and not e.disabled
                        and (e.unhealthy_until is null or e.unhealthy_until <= p_now))
    ),
    room as (
      select caps.renderer, least(v_room, greatest(coalesce(caps.max_concurrent - caps.busy, v_room), 0))::integer as n
        from caps
    )
    select c.id from room
      cross join lateral (
        select j.id, j.priority_rank, j.created_at from public.jobs j
         where j.status = 'queued' and j.renderer = room.renderer and j.next_attempt_at <= p_now
         order by j.priority_rank, j.created_at, j.id
         limit room.n) c
     order by c.priority_rank, c.created_at, c.id
     limit v_room
  loop
    -- A row locked by a concurrent cancel is skipped (it is claimed next pass if still queued).
    select * into v_job from public.jobs j where j.id = v_id and j.status = 'queued' for update skip locked;
    continue when not found;

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
           lease_expires_at = p_now + make_interval(mins => v_cfg.job_timeout_minutes),
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
    perform public.queue_counter_add('jobs_claimed_total', jsonb_array_length(v_claims));
    perform public.queue_counter_add('wait_seconds_count', v_wait_n);
    perform public.queue_counter_add('wait_seconds_sum', v_wait_sum);
  end if;
  return v_claims;
end $$;

-- The attempt a callback token belongs to, checked against the current attempt of the job.
-- Returns the locked job row. Raises VQ401 when the token matches no attempt of the job (or the given
-- attempt number is not the token's), VQ409 when that attempt is no longer the current one.
-- When p_allow_completed_repeat, a current attempt that already completed is returned as is (a repeat).
create function public.lock_current_attempt(p_job_id uuid, p_attempt integer, p_token text,
                                            p_allow_completed_repeat boolean default false)
returns public.jobs
language plpgsql security definer set search_path = '' as $$
-- Fences a callback to its attempt. Internal (called by report_progress, complete_job, fail_job).
declare
  v_job public.jobs;
  v_attempt public.job_attempts;
begin
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if found and p_token is not null then
    select * into v_attempt from public.job_attempts a
     where a.job_id = p_job_id and a.token_hash = encode(sha256(convert_to(p_token, 'UTF8')), 'hex');
  end if;
  if v_attempt.job_id is null or v_attempt.attempt <> p_attempt then
    raise exception 'the callback token is not valid for job % attempt %', p_job_id, p_attempt
      using errcode = 'VQ401', hint = 'Use the callback token handed over with this attempt''s dispatch.';
  end if;
  if v_job.attempt = p_attempt and v_job.status = 'processing' then
    return v_job;
  end if;
  if p_allow_completed_repeat and v_job.attempt = p_attempt and v_job.status = 'completed'
     and v_attempt.outcome = 'completed' then
    return v_job;
  end if;
  raise exception 'attempt % of job % is no longer current (job is %)', p_attempt, p_job_id, v_job.status
    using errcode = 'VQ409',
          hint = 'Stop this render: the job was cancelled, timed out, or handed to a newer attempt.';
end $$;

-- A failed attempt: retryable and retries left -> queued again with backoff; otherwise -> failed.
-- Backoff = retry_interval_minutes * 2^retry_count (5, 10, 20 minutes with the seed's 5), plus jitter of
-- 0..10% (never earlier than the nominal interval). max_retries = 3 means 3 retries after the first
-- attempt, 4 attempts in all. Returns 'retry_scheduled' or 'failed'. The caller has locked the row.
create function public.fail_attempt(p_job public.jobs, p_error text, p_retryable boolean,
                                    p_attempt_outcome text, p_now timestamptz)
returns text
language plpgsql security definer set search_path = '' as $$
-- Applies a failed attempt to a locked processing job. Internal (fail_job, recover_expired_attempts).
declare
  v_interval integer;
  v_delay interval;
begin
  update public.job_attempts a set finished_at = p_now, outcome = p_attempt_outcome, error = p_error
   where a.job_id = p_job.id and a.attempt = p_job.attempt and a.outcome is null;
  if p_retryable and p_job.retry_count < p_job.max_retries then
    select c.retry_interval_minutes into v_interval from public.job_queue_config c limit 1;
    v_delay := make_interval(secs => v_interval * 60 * power(2, p_job.retry_count) * (1 + 0.1 * random()));
    update public.jobs j
       set status = 'queued', retry_count = j.retry_count + 1, next_attempt_at = p_now + v_delay,
           lease_expires_at = null, worker_id = null, endpoint_id = null, progress = 0, stage = null,
           error_message = p_error, updated_at = p_now
     where j.id = p_job.id;
    return 'retry_scheduled';
  end if;
  update public.jobs j
     set status = 'failed', completed_at = p_now, lease_expires_at = null, next_attempt_at = null,
         error_message = p_error, updated_at = p_now
   where j.id = p_job.id;
  return 'failed';
end $$;

create function public.release_job(p_job_id uuid, p_attempt integer, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Puts a claimed job back without counting a retry (the worker could not dispatch it). service_role only.
declare
  v_job public.jobs;
begin
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404';
  end if;
  if v_job.status <> 'processing' or v_job.attempt <> p_attempt then
    raise exception 'attempt % of job % is no longer current (job is %)', p_attempt, p_job_id, v_job.status
      using errcode = 'VQ409', hint = 'Nothing to release: the attempt ended already.';
  end if;
  update public.job_attempts a set finished_at = p_now, outcome = 'released'
   where a.job_id = v_job.id and a.attempt = v_job.attempt and a.outcome is null;
  update public.jobs j
     set status = 'queued', next_attempt_at = p_now, lease_expires_at = null, worker_id = null,
         endpoint_id = null, progress = 0, stage = null, updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  perform public.queue_counter_add('jobs_released_total');
  return public.job_to_json(v_job, p_now);
end $$;

create function public.report_progress(p_job_id uuid, p_attempt integer, p_token text, p_stage text,
                                       p_progress integer, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Records a render's stage and progress (never lowers progress; does not extend the lease). service_role only.
declare
  v_job public.jobs;
begin
  if p_progress is null or p_progress not between 0 and 100 then
    raise exception 'progress must be between 0 and 100' using errcode = 'VQ400';
  end if;
  v_job := public.lock_current_attempt(p_job_id, p_attempt, p_token);
  update public.jobs j
     set progress = greatest(j.progress, p_progress),
         stage = case when p_progress >= j.progress then coalesce(p_stage, j.stage) else j.stage end,
         updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  return public.job_to_json(v_job, p_now);
end $$;

create function public.complete_job(p_job_id uuid, p_attempt integer, p_token text, p_result jsonb,
                                    p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Completes the current attempt with its result (a repeat returns the job unchanged). service_role only.
declare
  v_job public.jobs;
begin
  if p_result is null or jsonb_typeof(p_result) <> 'object' or jsonb_typeof(p_result -> 'video_url') is distinct from 'string' then
    raise exception 'result must be an object with a video_url string' using errcode = 'VQ400';
  end if;
  v_job := public.lock_current_attempt(p_job_id, p_attempt, p_token, true);
  if v_job.status = 'completed' then
    return public.job_to_json(v_job, p_now);  -- the same callback again: harmless
  end if;
  update public.job_attempts a set finished_at = p_now, outcome = 'completed'
   where a.job_id = v_job.id and a.attempt = v_job.attempt and a.outcome is null;
  update public.jobs j
     set status = 'completed', completed_at = p_now, result = p_result, progress = 100, stage = 'completed',
         lease_expires_at = null, next_attempt_at = null, error_message = null, updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  perform public.queue_counter_add('jobs_completed_total');
  perform public.queue_counter_add('processing_seconds_count');
  perform public.queue_counter_add('processing_seconds_sum', extract(epoch from (p_now - v_job.started_at))::double precision);
  return public.job_to_json(v_job, p_now);
end $$;

create function public.fail_job(p_job_id uuid, p_attempt integer, p_token text, p_error text,
                                p_retryable boolean, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Fails the current attempt: retried with backoff while retries remain and it is retryable. service_role only.
declare
  v_job public.jobs;
  v_outcome text;
begin
  if p_retryable is null then
    raise exception 'retryable must be true or false' using errcode = 'VQ400';
  end if;
  v_job := public.lock_current_attempt(p_job_id, p_attempt, p_token);
  v_outcome := public.fail_attempt(v_job, coalesce(nullif(p_error, ''), 'render failed'), p_retryable, 'failed', p_now);
  perform public.queue_counter_add(case v_outcome when 'failed' then 'jobs_failed_total' else 'jobs_retried_total' end);
  select * into v_job from public.jobs j where j.id = p_job_id;
  return public.job_to_json(v_job, p_now);
end $$;

create function public.recover_expired_attempts(p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Treats every attempt whose lease expired as a retryable failure ("timed out after N minutes").
-- service_role (worker passes) and the video-queue-recover cron job.
declare
  v_job public.jobs;
  v_outcome text;
  v_out jsonb := '[]'::jsonb;
  v_failed integer := 0;
  v_retried integer := 0;
begin
  for v_job in
    select * from public.jobs j
     where j.status = 'processing' and j.lease_expires_at <= p_now
     order by j.lease_expires_at
     for update skip locked
  loop
    v_outcome := public.fail_attempt(
      v_job,
      format('timed out after %s minutes',
             round(extract(epoch from (v_job.lease_expires_at - v_job.started_at)) / 60)),
      true, 'timed_out', p_now);
    if v_outcome = 'failed' then v_failed := v_failed + 1; else v_retried := v_retried + 1; end if;
    v_out := v_out || jsonb_build_object('job_id', v_job.id, 'attempt', v_job.attempt, 'outcome', v_outcome);
  end loop;
  -- Counters once, in a fixed order (two concurrent recoveries never wait on each other in a cycle).
  if jsonb_array_length(v_out) > 0 then
    perform public.queue_counter_add('attempts_timed_out_total', jsonb_array_length(v_out));
    perform public.queue_counter_add('jobs_failed_total', v_failed);
    perform public.queue_counter_add('jobs_retried_total', v_retried);
  end if;
  return v_out;
end $$;

create function public.mark_endpoint_unhealthy(p_endpoint_id uuid, p_cooldown_seconds integer default 30,
                                               p_now timestamptz default now())
returns void
language plpgsql security definer set search_path = '' as $$
-- Takes a render endpoint out of rotation for a cool-down (claims skip it until then). service_role only.
begin
  if p_cooldown_seconds is null or p_cooldown_seconds < 0 then
    raise exception 'cooldown must be zero or more seconds' using errcode = 'VQ400';
  end if;
  update public.render_endpoints e
     set unhealthy_until = greatest(coalesce(e.unhealthy_until, p_now), p_now + make_interval(secs => p_cooldown_seconds))
   where e.id = p_endpoint_id;
  if not found then
    raise exception 'render endpoint % not found', p_endpoint_id using errcode = 'VQ404';
  end if;
end $$;
