-- Client-facing queue functions: enqueue, cancel, get, list, admin retry.
-- Errors use SQLSTATE VQnnn (nnn = the HTTP status the functions answer), see docs/ARCHITECTURE.md.

create function public.enqueue_job(
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
  v_admin boolean := public.is_queue_admin();
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
  select * into v_type from public.job_types t where t.job_type = p_job_type;
  if not found then
    raise exception 'unknown job_type "%"', p_job_type using errcode = 'VQ400',
      hint = 'Use one of: doubt, topic_short, daily_ca.';
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
      hint = 'Use one of: manim, revideo, orchestrator.';
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
      return jsonb_build_object('job', public.job_to_json(v_job, p_now), 'created', false);
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
  return jsonb_build_object('job', public.job_to_json(v_job, p_now), 'created', true);
end $$;

create function public.cancel_job(p_job_id uuid, p_reason text default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Cancels a queued or processing job (processing: its attempt is fenced off). The owner or an admin.
declare
  v_job public.jobs;
  v_attempt public.job_attempts;
begin
  select * into v_job from public.jobs j where j.id = p_job_id for update;
  if not found or not (public.is_queue_admin() or (v_job.user_id is not null and v_job.user_id = auth.uid())) then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404',
      hint = 'Check the job id; you can only see your own jobs.';
  end if;
  if v_job.status in ('completed', 'failed', 'cancelled') then
    raise exception 'job % is % and cannot be cancelled', p_job_id, v_job.status using errcode = 'VQ409',
      hint = 'Only queued or processing jobs can be cancelled.';
  end if;
  if v_job.status = 'processing' then
    update public.job_attempts a set finished_at = p_now, outcome = 'cancelled', error = p_reason
     where a.job_id = v_job.id and a.attempt = v_job.attempt and a.outcome is null
    returning * into v_attempt;
  end if;
  update public.jobs j
     set status = 'cancelled', completed_at = p_now, cancel_reason = p_reason, lease_expires_at = null,
         next_attempt_at = null, updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  perform public.queue_counter_add('jobs_cancelled_total');
  return jsonb_build_object(
    'job', public.job_to_json(v_job, p_now),
    'cancelled_attempt', case when v_attempt.job_id is null then null
                              else jsonb_build_object('attempt', v_attempt.attempt, 'endpoint_url', v_attempt.endpoint_url) end);
end $$;

create function public.get_job(p_job_id uuid, p_now timestamptz default now()) returns jsonb
language plpgsql stable security invoker set search_path = '' as $$
-- One job as Job JSON. The owner or an admin (runs as the caller: RLS decides what is visible).
declare
  v_job public.jobs;
begin
  select * into v_job from public.jobs j where j.id = p_job_id;
  if not found then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404',
      hint = 'Check the job id; you can only see your own jobs.';
  end if;
  return public.job_to_json(v_job, p_now);
end $$;

create function public.list_jobs(p_status text default null, p_limit integer default 50, p_now timestamptz default now())
returns jsonb
language plpgsql stable security invoker set search_path = '' as $$
-- Jobs newest first, optionally of one status, at most 200. Admins only.
begin
  if not public.is_queue_admin() then
    raise exception 'only an admin may list jobs' using errcode = 'VQ403';
  end if;
  if p_status is not null and p_status not in ('queued', 'processing', 'completed', 'failed', 'cancelled') then
    raise exception 'status must be one of queued, processing, completed, failed, cancelled' using errcode = 'VQ400';
  end if;
  if p_limit is null or p_limit < 1 or p_limit > 200 then
    raise exception 'limit must be between 1 and 200' using errcode = 'VQ400';
  end if;
  return coalesce((
    select jsonb_agg(public.job_to_json(j, p_now) order by j.created_at desc, j.id desc)
      from (select * from public.jobs j
             where p_status is null or j.status = p_status
             order by j.created_at desc, j.id desc limit p_limit) j), '[]'::jsonb);
end $$;

create function public.retry_job(p_job_id uuid, p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Puts a failed job back in the queue with a fresh retry budget. Admins only.
declare
  v_job public.jobs;
begin
  if not public.is_queue_admin() then
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
  update public.jobs j
     set status = 'queued', retry_count = 0, completed_at = null, next_attempt_at = p_now,
         progress = 0, stage = null, worker_id = null, endpoint_id = null, updated_at = p_now
   where j.id = v_job.id
  returning * into v_job;
  return public.job_to_json(v_job, p_now);
end $$;
