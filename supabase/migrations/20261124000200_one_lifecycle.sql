-- One lifecycle. Every move of a job out of `queued` or `processing`, other than the claim, goes through
-- one writer, private.set_job_state: it closes the open attempt with its outcome (private.close_attempt)
-- and writes every column the CHECKs tie to the new state (the rules: private.job_state). The outcome
-- functions are a guard plus one call. The trigger for hand-written `UPDATE jobs SET status = ...` (the
-- seeds' reset of stuck jobs) stays, as the operator's escape hatch, on the same rules.
--
--   queued ──claim_jobs──► processing ──complete_job──────────────► completed
--     ▲  ▲                   │  │  │ ──fail_job / recover (no retries left)──► failed ──retry_job──► queued
--     │  └──release_job──────┘  │  └──cancel_job───────────────────► cancelled
--     └───fail_job / recover (retry, with backoff)
--   queued ──cancel_job──► cancelled
--
-- Internals move to schema `private`, which no API role may use: no later migration has to remember to
-- revoke anything there. Functions whose bodies name a moved function are restated whole.

create schema private;
comment on schema private is 'Internals of the queue: helpers, trigger functions, the state writer. No API role may use it.';
revoke all on schema private from public, anon, authenticated, service_role;

alter function public.job_queue_config_validate() set schema private;
alter function public.renderer_caps() set schema private;
alter function public.jobs_before_insert() set schema private;
alter function public.jobs_touch_updated_at() set schema private;
alter function public.queue_depth_add(smallint, bigint) set schema private;
alter function public.jobs_depth_after_insert() set schema private;
alter function public.jobs_depth_after_update() set schema private;
alter function public.jobs_depth_after_delete() set schema private;
alter function public.jobs_depth_after_truncate() set schema private;
alter function public.queue_counter_add(text, double precision) set schema private;
alter function public.is_queue_admin() set schema private;
alter function public.queue_is_peak(timestamptz) set schema private;
alter function public.queue_capacity(timestamptz) set schema private;
alter function public.job_queue_position(public.jobs) set schema private;
alter function public.renderer_avg_processing_seconds(text, timestamptz) set schema private;
alter function public.job_wait_estimate(public.jobs, integer, timestamptz) set schema private;
alter function public.job_to_json(public.jobs, timestamptz) set schema private;
alter function public.lock_current_attempt(uuid, integer, text, boolean) set schema private;
alter function public.prune_finished_jobs(timestamptz) set schema private;
alter function public.jobs_complete_direct_status_change() set schema private;
alter function private.jobs_complete_direct_status_change() rename to jobs__complete_status;

-- Replaced by the writer: closing an attempt now also ends its endpoint's cool-down on a completion.
drop function public.fail_attempt(public.jobs, text, boolean, text, timestamptz);
drop trigger job_attempts_endpoint_back on public.job_attempts;
drop function public.job_attempts_endpoint_back();

-- Trigger names carry their firing order (Postgres fires same-kind triggers alphabetically).
alter trigger jobs_before_insert on public.jobs rename to _100_fill_defaults;
alter trigger jobs_complete_direct_status_change on public.jobs rename to _200_complete_status;
alter trigger jobs_touch_updated_at on public.jobs rename to _900_touch_updated_at;
alter trigger jobs_depth_after_insert on public.jobs rename to _500_count_queued_insert;
alter trigger jobs_depth_after_update on public.jobs rename to _500_count_queued_update;
alter trigger jobs_depth_after_delete on public.jobs rename to _500_count_queued_delete;
alter trigger jobs_depth_after_truncate on public.jobs rename to _500_count_queued_truncate;

-- The catalog is the rule: job types are checked by the foreign key to job_types, not by a copied list.
alter table public.jobs drop constraint jobs_job_type_check;

-- claim_lock_key: the key claim_jobs (and tests that change caps under load) serialize on.
create function private.claim_lock_key() returns bigint
language sql immutable set search_path = '' as $$
  select pg_catalog.hashtextextended('video_queue.claim', 0)
$$;
comment on table public.job_attempts is
  'One row per claim of a job. token_hash = sha256(callback token) hex; the token itself is never stored. '
  'claim_jobs serializes on pg_advisory_xact_lock(private.claim_lock_key()) before counting and claiming.';

-- close_attempt: ends the job's open attempt with its outcome (a no-op when none is open). A completion
-- shows its endpoint alive with a free slot, so it also ends the endpoint's cool-down (set after a 429,
-- a refused connection or a time-out) and the pass it kicks can use it at once.
create function private.close_attempt(p_job public.jobs, p_outcome text, p_error text, p_now timestamptz)
returns void
language plpgsql security definer set search_path = '' as $$
declare
  v_endpoint_id uuid;
begin
  update public.job_attempts a set finished_at = p_now, outcome = p_outcome, error = p_error
   where a.job_id = p_job.id and a.attempt = p_job.attempt and a.outcome is null
  returning a.endpoint_id into v_endpoint_id;
  if p_outcome = 'completed' and v_endpoint_id is not null then
    update public.render_endpoints e set unhealthy_until = null
     where e.id = v_endpoint_id and e.unhealthy_until is not null;
  end if;
end $$;

-- job_state: the row p_job becomes in p_status, by the rules the CHECKs enforce. Pure; the one place the
-- columns of each state are written down. Queued: claimable at p_run_at (default p_now), a fresh start
-- (no lease, worker, endpoint, progress). Finished: completed_at, no lease or next attempt; where and how
-- far it ran is kept; completed carries its result and 100 %; failed its error.
create function private.job_state(
  p_job public.jobs,
  p_status text,
  p_now timestamptz,
  p_error text default null,
  p_result jsonb default null,
  p_run_at timestamptz default null,
  p_retry_count integer default null,
  p_cancel_reason text default null
) returns public.jobs
language plpgsql immutable set search_path = '' as $$
declare
  v public.jobs := p_job;
  v_queued boolean := p_status = 'queued';
begin
  if p_status not in ('queued', 'completed', 'failed', 'cancelled') then
    raise exception 'a job cannot be moved to %', p_status using errcode = '22023',
      hint = 'Only claim_jobs starts an attempt (processing).';
  end if;
  v.status := p_status;
  v.retry_count := coalesce(p_retry_count, p_job.retry_count);
  v.lease_expires_at := null;
  v.next_attempt_at := case when v_queued then coalesce(p_run_at, p_now) end;
  v.completed_at := case when v_queued then null else p_now end;
  v.worker_id := case when v_queued then null else p_job.worker_id end;
  v.endpoint_id := case when v_queued then null else p_job.endpoint_id end;
  v.progress := case p_status when 'queued' then 0 when 'completed' then 100 else p_job.progress end;
  v.stage := case p_status when 'queued' then null when 'completed' then 'completed' else p_job.stage end;
  v.result := case when p_status = 'completed' then p_result else p_job.result end;
  v.error_message := case p_status when 'completed' then null
                                   when 'cancelled' then p_job.error_message
                                   else coalesce(p_error, p_job.error_message) end;
  v.cancel_reason := case when p_status = 'cancelled' then p_cancel_reason else p_job.cancel_reason end;
  v.updated_at := p_now;
  return v;
end $$;

-- set_job_state: the one writer of a job's state after its claim. p_job is the caller's locked row;
-- p_outcome closes its open attempt (completed, failed, timed_out, released, cancelled). Returns the row.
create function private.set_job_state(
  p_job public.jobs,
  p_status text,
  p_now timestamptz,
  p_outcome text default null,
  p_error text default null,
  p_result jsonb default null,
  p_run_at timestamptz default null,
  p_retry_count integer default null,
  p_cancel_reason text default null
) returns public.jobs
language plpgsql security definer set search_path = '' as $$
declare
  v_next public.jobs := private.job_state(p_job, p_status, p_now, p_error, p_result, p_run_at, p_retry_count,
                                          p_cancel_reason);
  v_job public.jobs;
begin
  if p_job.status = 'processing' then
    -- First the attempt, then the job: the status trigger then finds nothing open to close.
    perform private.close_attempt(p_job, p_outcome, coalesce(p_error, p_cancel_reason), p_now);
  end if;
  update public.jobs j
     set status = v_next.status, retry_count = v_next.retry_count, lease_expires_at = v_next.lease_expires_at,
         next_attempt_at = v_next.next_attempt_at, completed_at = v_next.completed_at,
         worker_id = v_next.worker_id, endpoint_id = v_next.endpoint_id, progress = v_next.progress,
         stage = v_next.stage, result = v_next.result, error_message = v_next.error_message,
         cancel_reason = v_next.cancel_reason, updated_at = v_next.updated_at
   where j.id = p_job.id
  returning * into v_job;
  return v_job;
end $$;

-- fail_attempt: a failed attempt of a locked processing job. Retryable with retries left: queued again
-- after retry_interval_minutes × 2^retry_count (5, 10, 20 minutes with the seed's 5) plus 0–10 % jitter,
-- never earlier; max_retries = 3 means 3 retries after the first attempt. Otherwise: failed.
create function private.fail_attempt(p_job public.jobs, p_error text, p_retryable boolean, p_outcome text,
                                     p_now timestamptz)
returns public.jobs
language plpgsql security definer set search_path = '' as $$
declare
  v_interval integer;
begin
  if p_retryable and p_job.retry_count < p_job.max_retries then
    select c.retry_interval_minutes into v_interval from public.job_queue_config c limit 1;
    return private.set_job_state(p_job, 'queued', p_now, p_outcome => p_outcome, p_error => p_error,
      p_run_at => p_now + make_interval(secs => v_interval * 60 * power(2, p_job.retry_count) * (1 + 0.1 * random())),
      p_retry_count => p_job.retry_count + 1);
  end if;
  return private.set_job_state(p_job, 'failed', p_now, p_outcome => p_outcome, p_error => p_error);
end $$;

-- The escape hatch: a hand-written status change (the seeds' "reset stuck jobs") gets the columns of its
-- new state by the same rules, for every column the statement left as it was; what it set itself is kept,
-- so contradictions still fail the CHECKs. The attempt it ends is closed as released (its late callbacks
-- get 409). The queue's own functions write complete states through set_job_state, which this leaves as is.
create or replace function private.jobs__complete_status() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_rule public.jobs;
begin
  if new.status = old.status or new.status = 'processing' then
    return new;  -- only claim_jobs starts an attempt; a hand-made one is left to the CHECKs
  end if;
  v_rule := private.job_state(old, new.status, now(),
    p_error => case when new.status = 'failed' then coalesce(new.error_message, 'failed by an operator') end,
    p_result => new.result, p_retry_count => new.retry_count, p_cancel_reason => new.cancel_reason);
  if old.status = 'processing' then
    perform private.close_attempt(old, 'released', 'ended by a direct status change to ' || new.status, now());
  end if;
  if new.lease_expires_at is not distinct from old.lease_expires_at then new.lease_expires_at := v_rule.lease_expires_at; end if;
  if new.next_attempt_at is not distinct from old.next_attempt_at then new.next_attempt_at := v_rule.next_attempt_at; end if;
  if new.completed_at is not distinct from old.completed_at then new.completed_at := v_rule.completed_at; end if;
  if new.worker_id is not distinct from old.worker_id then new.worker_id := v_rule.worker_id; end if;
  if new.endpoint_id is not distinct from old.endpoint_id then new.endpoint_id := v_rule.endpoint_id; end if;
  if new.progress is not distinct from old.progress then new.progress := v_rule.progress; end if;
  if new.stage is not distinct from old.stage then new.stage := v_rule.stage; end if;
  if new.error_message is not distinct from old.error_message then new.error_message := v_rule.error_message; end if;
  return new;
end $$;

-- The outcome functions: a guard, then one call of the writer. -------------------------------------------

create or replace function queue.complete_job(p_job_id uuid, p_attempt integer, p_token text, p_result jsonb,
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
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token, true);
  if v_job.status = 'completed' then
    return private.job_to_json(v_job, p_now);  -- the same callback again: harmless
  end if;
  v_job := private.set_job_state(v_job, 'completed', p_now, p_outcome => 'completed', p_result => p_result);
  perform private.queue_counter_add('jobs_completed_total');
  perform private.queue_counter_add('processing_seconds_count');
  perform private.queue_counter_add('processing_seconds_sum', extract(epoch from (p_now - v_job.started_at))::double precision);
  return private.job_to_json(v_job, p_now);
end $$;

create or replace function queue.fail_job(p_job_id uuid, p_attempt integer, p_token text, p_error text,
                                          p_retryable boolean, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Fails the current attempt: retried with backoff while retries remain and it is retryable. service_role only.
declare
  v_job public.jobs;
begin
  if p_retryable is null then
    raise exception 'retryable must be true or false' using errcode = 'VQ400';
  end if;
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token);
  v_job := private.fail_attempt(v_job, coalesce(nullif(p_error, ''), 'render failed'), p_retryable, 'failed', p_now);
  perform private.queue_counter_add(case v_job.status when 'failed' then 'jobs_failed_total' else 'jobs_retried_total' end);
  return private.job_to_json(v_job, p_now);
end $$;

create or replace function queue.release_job(p_job_id uuid, p_attempt integer, p_now timestamptz default now())
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
  v_job := private.set_job_state(v_job, 'queued', p_now, p_outcome => 'released');
  perform private.queue_counter_add('jobs_released_total');
  return private.job_to_json(v_job, p_now);
end $$;

create or replace function queue.recover_expired_attempts(p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Treats every attempt whose lease expired as a retryable failure ("timed out after N minutes").
-- service_role (worker passes) and the video-queue-recover cron job.
declare
  v_job public.jobs;
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
    v_job := private.fail_attempt(
      v_job,
      format('timed out after %s minutes',
             round(extract(epoch from (v_job.lease_expires_at - v_job.started_at)) / 60)),
      true, 'timed_out', p_now);
    if v_job.status = 'failed' then v_failed := v_failed + 1; else v_retried := v_retried + 1; end if;
    v_out := v_out || jsonb_build_object('job_id', v_job.id, 'attempt', v_job.attempt,
                                         'outcome', case v_job.status when 'failed' then 'failed' else 'retry_scheduled' end);
  end loop;
  -- Counters once, in a fixed order (two concurrent recoveries never wait on each other in a cycle).
  if jsonb_array_length(v_out) > 0 then
    perform private.queue_counter_add('attempts_timed_out_total', jsonb_array_length(v_out));
    perform private.queue_counter_add('jobs_failed_total', v_failed);
    perform private.queue_counter_add('jobs_retried_total', v_retried);
  end if;
  return v_out;
end $$;

create or replace function queue.cancel_job(p_job_id uuid, p_reason text default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Cancels a queued or processing job (processing: its attempt is fenced off). The owner or an admin.
declare
  v_job public.jobs;
  v_attempt public.job_attempts;
begin
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found or not (private.is_queue_admin() or (v_job.user_id is not null and v_job.user_id = auth.uid())) then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404',
      hint = 'Check the job id; you can only see your own jobs.';
  end if;
  if v_job.status in ('completed', 'failed', 'cancelled') then
    raise exception 'job % is % and cannot be cancelled', p_job_id, v_job.status using errcode = 'VQ409',
      hint = 'Only queued or processing jobs can be cancelled.';
  end if;
  if v_job.status = 'processing' then  -- the render service to tell, best effort
    select * into v_attempt from public.job_attempts a where a.job_id = v_job.id and a.attempt = v_job.attempt;
  end if;
  v_job := private.set_job_state(v_job, 'cancelled', p_now, p_outcome => 'cancelled', p_cancel_reason => p_reason);
  perform private.queue_counter_add('jobs_cancelled_total');
  return jsonb_build_object(
    'job', private.job_to_json(v_job, p_now),
    'cancelled_attempt', case when v_attempt.job_id is null then null
                              else jsonb_build_object('attempt', v_attempt.attempt, 'endpoint_url', v_attempt.endpoint_url) end);
end $$;

create or replace function queue.retry_job(p_job_id uuid, p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Puts a failed job back in the queue with a fresh retry budget. Admins only.
declare
  v_job public.jobs;
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may retry a job' using errcode = 'VQ403';
  end if;
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404';
  end if;
  if v_job.status <> 'failed' then
    raise exception 'job % is % and only failed jobs can be retried', p_job_id, v_job.status
      using errcode = 'VQ409', hint = 'Cancel or wait for the job instead.';
  end if;
  v_job := private.set_job_state(v_job, 'queued', p_now, p_retry_count => 0);
  return private.job_to_json(v_job, p_now);
end $$;

-- Functions that name a moved function, restated whole with the new names. --------------------------------

create or replace function private.job_to_json(p_job public.jobs, p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
-- Job JSON with fresh queue_position and estimated_wait_seconds. Service role (and the queue functions).
declare
  v_position integer := private.job_queue_position(p_job);
begin
  return jsonb_build_object(
    'id', p_job.id,
    'job_type', p_job.job_type,
    'priority', p_job.priority,
    'status', p_job.status,
    'renderer', p_job.renderer,
    'payload', p_job.payload,
    'queue_position', v_position,
    'estimated_wait_seconds', private.job_wait_estimate(p_job, v_position, p_now),
    'progress', p_job.progress,
    'stage', p_job.stage,
    'retry_count', p_job.retry_count,
    'max_retries', p_job.max_retries,
    -- Shown only while it still lies ahead (a delayed or backing-off job); null = may run now.
    'next_attempt_at', case when p_job.status = 'queued' and p_job.next_attempt_at > p_now then p_job.next_attempt_at end,
    'error_message', p_job.error_message,
    'result', p_job.result,
    'created_at', p_job.created_at,
    'started_at', p_job.started_at,
    'completed_at', p_job.completed_at,
    'updated_at', p_job.updated_at);
end $$;
create or replace function private.job_wait_estimate(p_job public.jobs, p_position integer, p_now timestamptz default now())
returns integer
language plpgsql stable security definer set search_path = '' as $$
-- Wait estimate in seconds for a queued job. Internal; used by job_to_json.
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
  return greatest(v_wait, ceil(greatest(extract(epoch from (p_job.next_attempt_at - p_now)), 0)))::integer;
end $$;
create or replace function private.jobs_depth_after_delete() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (delete): removes deleted queued rows from the depth. Called by Postgres only.
declare r record;
begin
  for r in select priority_rank, count(*) as n from old_rows where status = 'queued' group by 1 order by 1 loop
    perform private.queue_depth_add(r.priority_rank, -r.n);
  end loop;
  return null;
end $$;
create or replace function private.jobs_depth_after_insert() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (insert): counts new queued rows per priority. Called by Postgres only.
declare r record;
begin
  for r in select priority_rank, count(*) as n from new_rows where status = 'queued' group by 1 order by 1 loop
    perform private.queue_depth_add(r.priority_rank, r.n);
  end loop;
  return null;
end $$;
create or replace function private.jobs_depth_after_update() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (update): applies queued-depth changes per priority. Called by Postgres only.
declare r record;
begin
  for r in
    select k.priority_rank, sum(k.d) as n from (
      select o.priority_rank, -1 as d from old_rows o where o.status = 'queued'
      union all
      select w.priority_rank, 1 from new_rows w where w.status = 'queued') k
     group by 1 having sum(k.d) <> 0 order by 1
  loop
    perform private.queue_depth_add(r.priority_rank, r.n);
  end loop;
  return null;
end $$;
create or replace function private.queue_capacity(p_now timestamptz default now())
returns table (max_concurrent integer, effective integer, peak boolean, multiplier numeric)
language plpgsql stable security definer rows 1 set search_path = '' as $$
-- Effective global capacity at p_now. Internal; used by claim, stats and estimates.
declare
  v_cfg public.job_queue_config;
  v_peak boolean := private.queue_is_peak(p_now);
begin
  select * into v_cfg from public.job_queue_config limit 1;
  max_concurrent := v_cfg.max_concurrent_renders;
  peak := v_peak;
  multiplier := v_cfg.peak_worker_multiplier;
  effective := case when v_peak then floor(v_cfg.max_concurrent_renders * v_cfg.peak_worker_multiplier)::integer
                    else v_cfg.max_concurrent_renders end;
  return next;
end $$;
create or replace function queue.claim_jobs(p_worker_id text, p_limit integer default null, p_now timestamptz default now())
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

  perform pg_catalog.pg_advisory_xact_lock(private.claim_lock_key());

  select * into v_cfg from public.job_queue_config limit 1;
  select q.effective into v_effective from private.queue_capacity(p_now) q;
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
        from private.renderer_caps() rc
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
    perform private.queue_counter_add('jobs_claimed_total', jsonb_array_length(v_claims));
    perform private.queue_counter_add('wait_seconds_count', v_wait_n);
    perform private.queue_counter_add('wait_seconds_sum', v_wait_sum);
  end if;
  return v_claims;
end $$;
create or replace function queue.enqueue_job(
  p_job_type text,
  p_payload jsonb,
  p_idempotency_key text default null,
  p_priority text default null,
  p_run_at timestamptz default null,
  p_renderer text default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Enqueues a job for the calling user ({"job", "created"}). Authenticated users and service_role.
declare
  v_uid uuid := auth.uid();
  v_admin boolean := private.is_queue_admin();
  v_type public.job_types;
  v_cfg public.job_queue_config;
  v_job public.jobs;
  v_count bigint;
  v_oldest timestamptz;
begin
  if v_uid is null and not v_admin then
    raise exception 'sign in to enqueue jobs' using errcode = 'VQ401',
      hint = 'Send a user access token or a secret key.';
  end if;
  if v_uid is not null and not exists (select 1 from auth.users u where u.id = v_uid) then
    raise exception 'the account this access token belongs to no longer exists' using errcode = 'VQ401',
      hint = 'Sign in again.';
  end if;
  select * into v_type from public.job_types t where t.job_type = p_job_type;
  if not found then
    raise exception 'unknown job_type "%"', p_job_type using errcode = 'VQ400',
      hint = format('Use one of: %s.', (select string_agg(t.job_type, ', ' order by t.job_type) from public.job_types t));
  end if;
  if p_payload is null or jsonb_typeof(p_payload) <> 'object' then
    raise exception 'payload must be a JSON object' using errcode = 'VQ400';
  end if;
  if p_idempotency_key is not null and length(p_idempotency_key) not between 1 and 128 then
    raise exception 'idempotency_key must be 1 to 128 characters' using errcode = 'VQ400';
  end if;
  if p_priority is not null and p_priority not in ('high', 'medium', 'low') then
    raise exception 'priority must be high, medium or low' using errcode = 'VQ400';
  end if;
  if p_priority is not null and not v_admin then
    raise exception 'only an admin may set a job''s priority' using errcode = 'VQ403',
      hint = 'Leave priority out: it follows the job type.';
  end if;
  if p_renderer is not null and not exists (select 1 from public.renderers r where r.name = p_renderer) then
    raise exception 'unknown renderer "%"', p_renderer using errcode = 'VQ400',
      hint = format('Use one of: %s.', (select string_agg(r.name, ', ' order by r.name) from public.renderers r));
  end if;
  if p_renderer is not null and not v_admin then
    raise exception 'only an admin may choose a job''s renderer' using errcode = 'VQ403',
      hint = 'Leave renderer out: it follows the job type.';
  end if;

  -- One user's enqueues are serialized (limits and idempotency are per user); users do not wait on each other.
  if v_uid is not null or p_idempotency_key is not null then
    perform pg_catalog.pg_advisory_xact_lock(
      pg_catalog.hashtextextended('video_queue.enqueue:' || coalesce(v_uid::text, '-'), 0));
  end if;

  if p_idempotency_key is not null then
    if v_uid is null then
      select * into v_job from public.jobs j where j.user_id is null and j.idempotency_key = p_idempotency_key;
    else
      select * into v_job from public.jobs j where j.user_id = v_uid and j.idempotency_key = p_idempotency_key;
    end if;
    if found then
      return jsonb_build_object('job', private.job_to_json(v_job, p_now), 'created', false);
    end if;
  end if;

  -- Per-user limits (end users only; admins and the service role are not limited).
  if v_uid is not null and not v_admin then
    select * into v_cfg from public.job_queue_config limit 1;
    select count(*) into v_count from (
      select 1 from public.jobs j where j.user_id = v_uid and j.status in ('queued', 'processing')
       limit v_cfg.max_queued_per_user) x;
    if v_count >= v_cfg.max_queued_per_user then
      raise exception 'you already have % unfinished jobs, the most allowed at once', v_count
        using errcode = 'VQ429', detail = jsonb_build_object('retry_after_seconds', 60)::text,
              hint = 'Wait for a job to finish (or cancel one), then try again.';
    end if;
    select count(*), min(j.created_at) into v_count, v_oldest from (
      select j.created_at from public.jobs j
       where j.user_id = v_uid and j.created_at > p_now - interval '1 minute' and j.created_at <= p_now
       order by j.created_at limit v_cfg.max_enqueues_per_minute) j;
    if v_count >= v_cfg.max_enqueues_per_minute then
      raise exception 'too many jobs enqueued in the last minute (limit %)', v_cfg.max_enqueues_per_minute
        using errcode = 'VQ429',
              detail = jsonb_build_object('retry_after_seconds',
                greatest(1, ceil(extract(epoch from (v_oldest + interval '1 minute' - p_now))))::integer)::text,
              hint = 'Wait the number of seconds in Retry-After, then try again.';
    end if;
  end if;

  insert into public.jobs (job_type, priority, renderer, status, payload, user_id, idempotency_key,
                           next_attempt_at, created_at, updated_at)
  values (p_job_type, coalesce(p_priority, v_type.priority), coalesce(p_renderer, v_type.default_renderer),
          'queued', p_payload, v_uid, p_idempotency_key,
          greatest(p_now, coalesce(p_run_at, p_now)), p_now, p_now)
  returning * into v_job;
  return jsonb_build_object('job', private.job_to_json(v_job, p_now), 'created', true);
end $$;
create or replace function queue.get_job(p_job_id uuid, p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
-- One job as Job JSON. The owner or an admin; anyone else's job is "not found".
declare
  v_job public.jobs;
begin
  select * into v_job from public.jobs j where j.id = p_job_id;
  if not found or not (private.is_queue_admin() or (v_job.user_id is not null and v_job.user_id = auth.uid())) then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404',
      hint = 'Check the job id; you can only see your own jobs.';
  end if;
  return private.job_to_json(v_job, p_now);
end $$;
create or replace function queue.get_queue_metrics(p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off as $$
-- What /status/metrics renders: gauges, monotonic counters, last-hour quantiles. Admins (as get_queue_stats).
declare
  v_stats jsonb;
  v_counters jsonb;
  v_q record;
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may read queue metrics' using errcode = 'VQ403';
  end if;
  v_stats := public.get_queue_stats(p_now);
  select jsonb_object_agg(c.name, c.value) into v_counters from public.queue_counters c;
  select percentile_cont(array[0.5, 0.9, 0.99]) within group (order by extract(epoch from (j.started_at - j.created_at))) as wait_q,
         percentile_cont(array[0.5, 0.9, 0.99]) within group (order by extract(epoch from (j.completed_at - j.started_at))) as proc_q
    into v_q
    from public.jobs j
   where j.completed_at > p_now - interval '1 hour' and j.completed_at <= p_now and j.status = 'completed';
  return jsonb_build_object(
    'queued_by_priority', (select jsonb_object_agg(k, v -> 'queued') from jsonb_each(v_stats -> 'by_priority') e(k, v)),
    'processing_by_renderer', (select jsonb_object_agg(k, v -> 'processing') from jsonb_each(v_stats -> 'by_renderer') e(k, v)),
    'renderer_limit', (select jsonb_object_agg(k, v -> 'limit') from jsonb_each(v_stats -> 'by_renderer') e(k, v)),
    'capacity', v_stats -> 'capacity',
    'oldest_queued_seconds', v_stats -> 'oldest_queued_seconds',
    -- Monotonic since the database was created (Prometheus counters / summary _sum and _count).
    'counters', v_counters,
    -- Quantiles over jobs completed in the last hour (null when none).
    'wait_seconds_quantiles', jsonb_build_object('0.5', v_q.wait_q[1], '0.9', v_q.wait_q[2], '0.99', v_q.wait_q[3]),
    'processing_seconds_quantiles', jsonb_build_object('0.5', v_q.proc_q[1], '0.9', v_q.proc_q[2], '0.99', v_q.proc_q[3]),
    'generated_at', p_now);
end $$;
create or replace function queue.list_jobs(p_status text default null, p_limit integer default 50,
                                           p_now timestamptz default now())
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
-- Jobs newest first, optionally of one status, at most 200. Admins only.
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may list jobs' using errcode = 'VQ403';
  end if;
  if p_status is not null and p_status not in ('queued', 'processing', 'completed', 'failed', 'cancelled') then
    raise exception 'status must be one of queued, processing, completed, failed, cancelled' using errcode = 'VQ400';
  end if;
  if p_limit is null or p_limit < 1 or p_limit > 200 then
    raise exception 'limit must be between 1 and 200' using errcode = 'VQ400';
  end if;
  return coalesce((
    select jsonb_agg(private.job_to_json(j, p_now) order by j.created_at desc, j.id desc)
      from (select * from public.jobs j
             where p_status is null or j.status = p_status
             order by j.created_at desc, j.id desc limit p_limit) j), '[]'::jsonb);
end $$;
create or replace function queue.report_progress(p_job_id uuid, p_attempt integer, p_token text, p_stage text,
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
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token);
  update public.jobs j
     set progress = greatest(j.progress, p_progress),
         stage = case when p_progress >= j.progress then coalesce(p_stage, j.stage) else j.stage end,
         updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  return private.job_to_json(v_job, p_now);
end $$;
create or replace function public.get_queue_stats(p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off as $$
-- The queue's Stats object. Admins: service_role, an admin JWT, or a direct SQL session (psql, SQL editor).
declare
  v_cfg public.job_queue_config;
  v_cap record;
  v_today timestamptz;
  v_depth jsonb;
  v_proc_by_priority jsonb;
  v_by_renderer jsonb;
  v_finished record;
  v_hour record;
  v_oldest timestamptz;
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may read queue stats' using errcode = 'VQ403';
  end if;
  select * into v_cfg from public.job_queue_config limit 1;
  select * into v_cap from private.queue_capacity(p_now);
  -- "Today" is the calendar day in the configured time zone.
  v_today := date_trunc('day', p_now at time zone v_cfg.peak_time_zone) at time zone v_cfg.peak_time_zone;

  select jsonb_object_agg(p.priority, coalesce(d.n, 0)) into v_depth
    from (values (0::smallint, 'high'), (1::smallint, 'medium'), (2::smallint, 'low')) p(rank, priority)
    left join (select s.priority_rank, sum(s.n) as n from public.queue_depth_slots s group by 1) d
      on d.priority_rank = p.rank;

  select coalesce(jsonb_object_agg(j.priority, j.n), '{}'::jsonb) into v_proc_by_priority
    from (select j.priority, count(*) as n from public.jobs j where j.status = 'processing' group by 1) j;

  select jsonb_object_agg(rc.renderer, jsonb_build_object(
           'processing', (select count(*) from public.jobs j where j.status = 'processing' and j.renderer = rc.renderer),
           'limit', least(coalesce(rc.max_concurrent, v_cap.effective), v_cap.effective)))
    into v_by_renderer
    from private.renderer_caps() rc;

  select count(*) filter (where j.status = 'completed') as completed,
         count(*) filter (where j.status = 'failed') as failed,
         count(*) filter (where j.status = 'cancelled') as cancelled
    into v_finished
    from public.jobs j where j.completed_at >= v_today and j.completed_at <= p_now;

  select count(*) as n,
         avg(extract(epoch from (j.started_at - j.created_at))) as avg_wait,
         avg(extract(epoch from (j.completed_at - j.started_at))) as avg_processing
    into v_hour
    from public.jobs j
   where j.completed_at > p_now - interval '1 hour' and j.completed_at <= p_now and j.status = 'completed';

  select min(j.created_at) into v_oldest from public.jobs j where j.status = 'queued';

  return jsonb_build_object(
    'queued', (v_depth ->> 'high')::bigint + (v_depth ->> 'medium')::bigint + (v_depth ->> 'low')::bigint,
    'processing', (select count(*) from public.jobs j where j.status = 'processing'),
    'completed_today', v_finished.completed,
    'failed_today', v_finished.failed,
    'cancelled_today', v_finished.cancelled,
    'by_priority', (select jsonb_object_agg(p.priority, jsonb_build_object(
                       'queued', (v_depth ->> p.priority)::bigint,
                       'processing', coalesce((v_proc_by_priority ->> p.priority)::bigint, 0)))
                      from unnest(array['high', 'medium', 'low']) p(priority)),
    'by_renderer', v_by_renderer,
    'capacity', jsonb_build_object('max_concurrent', v_cap.max_concurrent, 'effective', v_cap.effective,
                                   'peak', v_cap.peak, 'multiplier', v_cap.multiplier),
    -- Averages over jobs completed in the last hour (null when none): wait = created -> last start.
    'avg_wait_seconds', round(v_hour.avg_wait, 1),
    'avg_processing_seconds', round(v_hour.avg_processing, 1),
    'throughput_last_hour', v_hour.n,
    'oldest_queued_seconds', case when v_oldest is null then null
                                  else greatest(0, floor(extract(epoch from (p_now - v_oldest))))::bigint end,
    'generated_at', p_now);
end $$;

-- The daily prune calls the moved function.
select cron.schedule('video-queue-prune', '17 3 * * *', $cmd$
  select private.prune_finished_jobs();
  delete from cron.job_run_details where end_time < now() - interval '7 days';
$cmd$);
