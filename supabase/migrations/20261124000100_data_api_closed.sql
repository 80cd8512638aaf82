-- The Data API sees nothing of the queue. On a hosted project PostgREST serves every table and function
-- in the exposed schemas (public, graphql_public) that anon or authenticated may use, to anyone with the
-- publishable key and a user's token, with any arguments (a p_now included). So:
--   * the queue's SQL API moves to schema `queue`, which PostgREST does not serve. The Edge Functions
--     call it over their direct connection as the caller (role + request.jwt.claims, docs/ARCHITECTURE.md);
--   * anon and authenticated keep no privilege on any table or function in `public`, now or later
--     (default privileges revoked), and RLS with no policy for them denies every row besides;
--   * operators keep the seeds' SQL: service_role's INSERT INTO jobs, the config UPDATEs,
--     `select get_queue_stats();`.

-- pg_cron in pg_catalog, as Supabase installs it (`create extension ... with schema` pg_catalog), not
-- in public (lint extension_in_public). pg_cron cannot be relocated: re-create it, keeping every job.
do $$
declare
  v_job record;
begin
  if (select e.extnamespace from pg_catalog.pg_extension e where e.extname = 'pg_cron') = 'public'::regnamespace then
    create temporary table saved_cron_jobs on commit drop as
      select j.jobname, j.schedule, j.command, j.database, j.username, j.active from cron.job j;
    drop extension pg_cron;
    create extension pg_cron with schema pg_catalog;
    for v_job in select * from saved_cron_jobs loop
      perform cron.schedule_in_database(v_job.jobname, v_job.schedule, v_job.command, v_job.database,
                                        v_job.username, v_job.active);
    end loop;
  end if;
end $$;

-- The API schema. Nothing in it is callable unless granted below.
create schema queue;
comment on schema queue is
  'The queue''s SQL API, called by the Edge Functions over their direct connection. Not exposed by PostgREST.';
revoke all on schema queue from public;
grant usage on schema queue to authenticated, service_role;

alter function public.enqueue_job(text, jsonb, text, text, timestamptz, text, timestamptz) set schema queue;
alter function public.cancel_job(uuid, text, timestamptz) set schema queue;
alter function public.get_job(uuid, timestamptz) set schema queue;
alter function public.list_jobs(text, integer, timestamptz) set schema queue;
alter function public.retry_job(uuid, timestamptz) set schema queue;
alter function public.get_queue_metrics(timestamptz) set schema queue;
alter function public.claim_jobs(text, integer, timestamptz) set schema queue;
alter function public.release_job(uuid, integer, timestamptz) set schema queue;
alter function public.report_progress(uuid, integer, text, text, integer, timestamptz) set schema queue;
alter function public.complete_job(uuid, integer, text, jsonb, timestamptz) set schema queue;
alter function public.fail_job(uuid, integer, text, text, boolean, timestamptz) set schema queue;
alter function public.recover_expired_attempts(timestamptz) set schema queue;
alter function public.mark_endpoint_unhealthy(uuid, integer, timestamptz) set schema queue;

-- Stats stay in public for operators (`select get_queue_stats();`, service_role and postgres only);
-- admins reach them through the status function and this entry.
create function queue.get_queue_stats(p_now timestamptz default now()) returns jsonb
language sql stable security definer set search_path = '' as $$
  -- The Stats object of API.md (public.get_queue_stats decides who is an admin).
  select public.get_queue_stats(p_now)
$$;

-- enqueue_job: as before, plus a token whose user was deleted while the token still lives is refused
-- (401, sign in again) instead of failing on the jobs.user_id foreign key.
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

-- get_job and list_jobs decide visibility themselves now: API roles read no table directly.
create or replace function queue.get_job(p_job_id uuid, p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
-- One job as Job JSON. The owner or an admin; anyone else's job is "not found".
declare
  v_job public.jobs;
begin
  select * into v_job from public.jobs j where j.id = p_job_id;
  if not found or not (public.is_queue_admin() or (v_job.user_id is not null and v_job.user_id = auth.uid())) then
    raise exception 'job % not found', p_job_id using errcode = 'VQ404',
      hint = 'Check the job id; you can only see your own jobs.';
  end if;
  return public.job_to_json(v_job, p_now);
end $$;

create or replace function queue.list_jobs(p_status text default null, p_limit integer default 50,
                                           p_now timestamptz default now())
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
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

-- A callback's token is checked before the job's row is locked: a bogus token costs no lock. The attempt
-- is read again once the row is locked, so a repeat racing the first completion sees it completed.
create or replace function public.lock_current_attempt(p_job_id uuid, p_attempt integer, p_token text,
                                                       p_allow_completed_repeat boolean default false)
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

-- Payloads stay under the documented request limit in SQL too (the service role inserts directly).
alter table public.jobs
  add constraint jobs_payload_is_small_object
    check (jsonb_typeof(payload) = 'object' and octet_length(payload::text) <= 65536);

-- The cron job that recovers expired leases calls the moved function.
select cron.schedule('video-queue-recover', '* * * * *', $cmd$select queue.recover_expired_attempts()$cmd$);

-- Privileges. anon and authenticated: nothing in public, now or in any later migration.
revoke all on all tables in schema public from anon, authenticated;
revoke all on all sequences in schema public from anon, authenticated;
revoke all on all functions in schema public from public, anon, authenticated;
alter default privileges for role postgres in schema public revoke all on tables from anon, authenticated;
alter default privileges for role postgres in schema public revoke all on sequences from anon, authenticated;
alter default privileges for role postgres in schema public revoke all on functions from anon, authenticated;
-- Postgres itself lets PUBLIC execute every new function, in any schema; a schema's defaults cannot take
-- that back, only these global ones can. Every function this project adds is granted explicitly.
alter default privileges for role postgres revoke execute on functions from public;
-- RLS stays on every table with no policy for the API roles: the second fence, should a grant ever slip in.
drop policy jobs_select_own_or_admin on public.jobs;
drop policy job_types_select on public.job_types;
drop policy renderers_select on public.renderers;

-- The operators' SQL (service_role is the secret key's role; postgres owns everything).
grant execute on function public.get_queue_stats(timestamptz) to service_role;
grant execute on function public.is_queue_admin() to service_role;

-- The queue API, each to its callers (docs/ARCHITECTURE.md, "The SQL API").
revoke all on all functions in schema queue from public, anon, authenticated, service_role;
grant execute on function queue.enqueue_job(text, jsonb, text, text, timestamptz, text, timestamptz),
                          queue.cancel_job(uuid, text, timestamptz),
                          queue.get_job(uuid, timestamptz),
                          -- admin-only: they check public.is_queue_admin() inside
                          queue.list_jobs(text, integer, timestamptz),
                          queue.retry_job(uuid, timestamptz),
                          queue.get_queue_stats(timestamptz),
                          queue.get_queue_metrics(timestamptz)
  to authenticated, service_role;
grant execute on function queue.claim_jobs(text, integer, timestamptz),
                          queue.release_job(uuid, integer, timestamptz),
                          queue.report_progress(uuid, integer, text, text, integer, timestamptz),
                          queue.complete_job(uuid, integer, text, jsonb, timestamptz),
                          queue.fail_job(uuid, integer, text, text, boolean, timestamptz),
                          queue.recover_expired_attempts(timestamptz),
                          queue.mark_endpoint_unhealthy(uuid, integer, timestamptz)
  to service_role;
