-- Scheduling for long renders, part 1: heartbeats and a hard ceiling, pause and resume, expiry, and a
-- reason for every wait (API.md, "Scheduling"). Priority offsets and per-user fairness come later.

alter table public.job_queue_config
  -- job_timeout_minutes (the seed's 10) now means "minutes without a sign of life"; this is the ceiling.
  add column max_render_minutes integer not null default 60 check (max_render_minutes > 0),
  add column paused boolean not null default false;
comment on column public.job_queue_config.job_timeout_minutes is
  'The longest an attempt may go without a sign of life (its claim, a progress or heartbeat callback).';
comment on column public.job_queue_config.max_render_minutes is 'The longest an attempt may run, however alive.';
comment on column public.job_queue_config.paused is
  'The whole queue starts nothing new while true (POST /status/pause); running jobs finish.';

alter table public.renderers add column paused boolean not null default false;
comment on column public.renderers.paused is
  'This renderer starts nothing new while true (POST /status/pause {"renderer"}); running jobs finish.';

alter table public.jobs add column expires_at timestamptz;
comment on column public.jobs.expires_at is 'A job not started by then ends cancelled (cancel_reason expired).';
comment on column public.jobs.lease_expires_at is
  'Set while processing: the latest sign of life + job_timeout_minutes, never past started_at + '
  'max_render_minutes. Past it the attempt is over: its callbacks get 409, recovery retries or fails it.';
create index jobs_expiry on public.jobs (expires_at) where status = 'queued' and expires_at is not null;

insert into public.queue_counters (name) values ('jobs_expired_total');

-- attempt_lease: when an attempt started at p_started_at and last alive at p_now stops being alive.
create function private.attempt_lease(p_started_at timestamptz, p_now timestamptz) returns timestamptz
language sql stable security definer set search_path = '' as $$
  select least(p_now + make_interval(mins => c.job_timeout_minutes),
               p_started_at + make_interval(mins => c.max_render_minutes))
    from public.job_queue_config c limit 1
$$;

-- extend_lease: a sign of life of the job's current attempt (p_job locked by the caller).
create function private.extend_lease(p_job public.jobs, p_now timestamptz) returns void
language plpgsql security definer set search_path = '' as $$
begin
  update public.jobs j set lease_expires_at = private.attempt_lease(j.started_at, p_now) where j.id = p_job.id;
  update public.job_attempts a set lease_expires_at = private.attempt_lease(a.started_at, p_now)
   where a.job_id = p_job.id and a.attempt = p_job.attempt;
end $$;

-- job_state, restated: a cancelled job may say why (an expiry does; a user's cancel keeps the job's message).
create or replace function private.job_state(
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
  v.error_message := case p_status when 'completed' then null else coalesce(p_error, p_job.error_message) end;
  v.cancel_reason := case when p_status = 'cancelled' then p_cancel_reason else p_job.cancel_reason end;
  v.updated_at := p_now;
  return v;
end $$;

-- expire_queued_jobs: queued jobs whose expires_at has passed end cancelled (reason expired). Internal;
-- claim_jobs (before it claims) and recover_expired_attempts (the cron backstop) call it.
create function private.expire_queued_jobs(p_now timestamptz) returns integer
language plpgsql security definer set search_path = '' as $$
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
    perform private.queue_counter_add('jobs_cancelled_total', v_n);
    perform private.queue_counter_add('jobs_expired_total', v_n);
  end if;
  return v_n;
end $$;

-- job_wait_reason: why a queued job has not started, the first that applies (API.md's order). Null unless queued.
create function private.job_wait_reason(p_job public.jobs, p_now timestamptz) returns text
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

-- renderer_has_history: does the estimate rest on the renderer's recent render times (or on the default)?
create function private.renderer_has_history(p_renderer text, p_now timestamptz) returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (select 1 from public.jobs j
                  where j.status = 'completed' and j.renderer = p_renderer
                    and j.completed_at > p_now - interval '24 hours' and j.completed_at <= p_now)
$$;

-- Heartbeat: a sign of life of the current attempt, nothing else. service_role (render callbacks).
create function queue.record_heartbeat(p_job_id uuid, p_attempt integer, p_token text,
                                       p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Extends the current attempt's lease (a render service's heartbeat callback). service_role only.
declare
  v_job public.jobs;
begin
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token, p_now => p_now);
  perform private.extend_lease(v_job, p_now);
  select * into v_job from public.jobs j where j.id = p_job_id;
  return private.job_to_json(v_job, p_now);
end $$;

-- Pause and resume, for the whole queue (p_renderer null) or one renderer. Admins only; returns the stats.
create function queue.set_paused(p_paused boolean, p_renderer text default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Pauses or resumes a scope: paused scopes claim nothing new; queued jobs keep their order. Admins only.
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may pause or resume the queue' using errcode = 'VQ403';
  end if;
  if p_paused is null then
    raise exception 'paused must be true or false' using errcode = 'VQ400';
  end if;
  if p_renderer is null then
    update public.job_queue_config c set paused = p_paused where c.id = (select c2.id from public.job_queue_config c2 limit 1);
  else
    update public.renderers r set paused = p_paused where r.name = p_renderer;
    if not found then
      raise exception 'unknown renderer "%"', p_renderer using errcode = 'VQ400',
        hint = format('Use one of: %s.', (select string_agg(r.name, ', ' order by r.name) from public.renderers r));
    end if;
  end if;
  return public.get_queue_stats(p_now);
end $$;

-- The claim lock and a callback's fence now take the caller's clock; enqueue takes expires_at.
drop function private.lock_current_attempt(uuid, integer, text, boolean);
drop function queue.enqueue_job(text, jsonb, text, text, timestamptz, text, timestamptz);

create function private.lock_current_attempt(p_job_id uuid, p_attempt integer, p_token text,
                                             p_allow_completed_repeat boolean default false,
                                             p_now timestamptz default now())
returns public.jobs
language plpgsql security definer set search_path = '' as $$
-- Fences a callback to its attempt (VQ401 bad token, VQ409 stale attempt). Internal.
declare
  v_job public.jobs;
  v_attempt public.job_attempts;
begin
  if p_token is not null then
    select * into v_attempt from public.job_attempts a
     where a.token_hash = encode(sha256(convert_to(p_token, 'UTF8')), 'hex') and a.job_id = p_job_id;
  end if;
  if v_attempt.job_id is null or v_attempt.attempt <> p_attempt then
    raise exception 'the callback token is not valid for job % attempt %', p_job_id, p_attempt
      using errcode = 'VQ401', hint = 'Use the callback token handed over with this attempt''s dispatch.';
  end if;
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  -- Read the attempt again under the lock: a concurrent callback may have just closed it.
  select * into v_attempt from public.job_attempts a where a.job_id = p_job_id and a.attempt = p_attempt;
  if v_job.attempt = p_attempt and v_job.status = 'processing' then
    -- The lease is a fence in itself: past it, the attempt is over whether or not recovery has run yet.
    if v_job.lease_expires_at <= p_now then
      raise exception 'attempt % of job % ran past its lease (%)', p_attempt, p_job_id, v_job.lease_expires_at
        using errcode = 'VQ409',
              hint = 'Stop this render: send a progress or heartbeat callback at least every job_timeout_minutes.';
    end if;
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

create function queue.enqueue_job(
  p_job_type text,
  p_payload jsonb,
  p_idempotency_key text default null,
  p_priority text default null,
  p_run_at timestamptz default null,
  p_renderer text default null,
  p_expires_at timestamptz default null,
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
  if p_expires_at is not null and p_expires_at <= greatest(p_now, coalesce(p_run_at, p_now)) then
    raise exception 'expires_at must lie after now and after run_at' using errcode = 'VQ400',
      hint = 'Leave expires_at out for a job that waits as long as it takes.';
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
                           next_attempt_at, expires_at, created_at, updated_at)
  values (p_job_type, coalesce(p_priority, v_type.priority), coalesce(p_renderer, v_type.default_renderer),
          'queued', p_payload, v_uid, p_idempotency_key,
          greatest(p_now, coalesce(p_run_at, p_now)), p_expires_at, p_now, p_now)
  returning * into v_job;
  return jsonb_build_object('job', private.job_to_json(v_job, p_now), 'created', true);
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

  -- Per renderer with a usable endpoint and room under its cap: its first jobs in claim order
  -- (one partial-index scan each); merged, the first v_room of them in claim order win.
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
        select j.id, j.priority_rank, j.created_at from public.jobs j
         where j.status = 'queued' and j.renderer = room.renderer and j.next_attempt_at <= p_now
           and (j.expires_at is null or j.expires_at > p_now)
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

create or replace function queue.report_progress(p_job_id uuid, p_attempt integer, p_token text, p_stage text,
                                       p_progress integer, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Records a render's stage and progress (never lowers progress) and extends its lease. service_role only.
declare
  v_job public.jobs;
begin
  if p_progress is null or p_progress not between 0 and 100 then
    raise exception 'progress must be between 0 and 100' using errcode = 'VQ400';
  end if;
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token, p_now => p_now);
  perform private.extend_lease(v_job, p_now);
  update public.jobs j
     set progress = greatest(j.progress, p_progress),
         stage = case when p_progress >= j.progress then coalesce(p_stage, j.stage) else j.stage end,
         updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  return private.job_to_json(v_job, p_now);
end $$;

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
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token, true, p_now);
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
  v_job := private.lock_current_attempt(p_job_id, p_attempt, p_token, p_now => p_now);
  v_job := private.fail_attempt(v_job, coalesce(nullif(p_error, ''), 'render failed'), p_retryable, 'failed', p_now);
  perform private.queue_counter_add(case v_job.status when 'failed' then 'jobs_failed_total' else 'jobs_retried_total' end);
  return private.job_to_json(v_job, p_now);
end $$;

create or replace function queue.recover_expired_attempts(p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' as $$
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
  -- Counters once, in a fixed order (two concurrent recoveries never wait on each other in a cycle).
  if jsonb_array_length(v_out) > 0 then
    perform private.queue_counter_add('attempts_timed_out_total', jsonb_array_length(v_out));
    perform private.queue_counter_add('jobs_failed_total', v_failed);
    perform private.queue_counter_add('jobs_retried_total', v_retried);
  end if;
  return v_out;
end $$;

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
    'wait_reason', private.job_wait_reason(p_job, p_now),
    'estimate_basis', case when p_job.status = 'queued' then
                        case when private.renderer_has_history(p_job.renderer, p_now) then 'history' else 'default' end end,
    'expires_at', p_job.expires_at,
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
           'limit', least(coalesce(rc.max_concurrent, v_cap.effective), v_cap.effective),
           'paused', r.paused))
    into v_by_renderer
    from private.renderer_caps() rc join public.renderers r on r.name = rc.renderer;

  select count(*) filter (where j.status = 'completed') as completed,
         count(*) filter (where j.status = 'failed') as failed,
         count(*) filter (where j.status = 'cancelled') as cancelled,
         count(*) filter (where j.status = 'cancelled' and j.cancel_reason = 'expired') as expired
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
    'expired_today', v_finished.expired,
    'paused', v_cfg.paused,
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

-- Privileges of the new and re-created API functions.
grant execute on function queue.enqueue_job(text, jsonb, text, text, timestamptz, text, timestamptz, timestamptz),
                          queue.set_paused(boolean, text, timestamptz)
  to authenticated, service_role;
grant execute on function queue.record_heartbeat(uuid, integer, text, timestamptz) to service_role;
