-- Read-side helpers: who is an admin, the effective capacity (peak windows), a job's exact position and
-- wait estimate, and the one place Job JSON is built.

create function public.is_queue_admin() returns boolean
language sql stable set search_path = '' as $$
  -- True for queue admins: service_role, a JWT with app_metadata.queue_role = "admin", or a direct SQL
  -- session of a privileged database role (no JWT claims, no SET ROLE: psql, the SQL editor, pg_cron).
  -- Any caller may ask. This is the only place the rule lives.
  select case
    when nullif(current_setting('request.jwt.claims', true), '') is not null then
      coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role', '') = 'service_role'
      or coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb -> 'app_metadata' ->> 'queue_role', '') = 'admin'
    when current_setting('role') = 'service_role' then true
    when current_setting('role') = 'none' then
      exists (select 1 from pg_catalog.pg_roles r
               where r.rolname = session_user and (r.rolsuper or r.rolname in ('postgres', 'supabase_admin')))
    else false
  end
$$;

-- Is p_now inside a peak window? Windows are local times in job_queue_config.peak_time_zone:
-- the config row's main window (the seed's peak_hour_start/end) plus the rows of peak_windows.
-- A window with start > end crosses midnight ([start, 24:00) and [00:00, end)); start = end is empty.
create function public.queue_is_peak(p_now timestamptz default now()) returns boolean
language plpgsql stable security definer set search_path = '' as $$
-- True when p_now is inside a peak window. Internal; used by claim, stats and estimates.
declare
  v_cfg public.job_queue_config;
  v_local time;
begin
  select * into v_cfg from public.job_queue_config limit 1;
  v_local := (p_now at time zone v_cfg.peak_time_zone)::time;
  return exists (
    select 1 from (select v_cfg.peak_hour_start as s, v_cfg.peak_hour_end as e
                   union all
                   select pw.starts_at, pw.ends_at from public.peak_windows pw) w
     where case when w.s < w.e then v_local >= w.s and v_local < w.e
                when w.s > w.e then v_local >= w.s or v_local < w.e
                else false end);
end $$;

-- The global cap now: floor(max_concurrent_renders * peak_worker_multiplier) inside a peak window,
-- max_concurrent_renders outside.
create function public.queue_capacity(p_now timestamptz default now())
returns table (max_concurrent integer, effective integer, peak boolean, multiplier numeric)
language plpgsql stable security definer rows 1 set search_path = '' as $$
-- Effective global capacity at p_now. Internal; used by claim, stats and estimates.
declare
  v_cfg public.job_queue_config;
  v_peak boolean := public.queue_is_peak(p_now);
begin
  select * into v_cfg from public.job_queue_config limit 1;
  max_concurrent := v_cfg.max_concurrent_renders;
  peak := v_peak;
  multiplier := v_cfg.peak_worker_multiplier;
  effective := case when v_peak then floor(v_cfg.max_concurrent_renders * v_cfg.peak_worker_multiplier)::integer
                    else v_cfg.max_concurrent_renders end;
  return next;
end $$;

-- Exact 1-based position in claim order among all queued jobs (jobs waiting for a retry backoff or a
-- run_at are queued and count too). Cost: the depth counters give the jobs of higher priorities in O(1);
-- within the job's own priority, when fewer than 1,000 jobs are behind it, depth minus the jobs behind it,
-- otherwise the jobs ahead of it (index-only scans of jobs_queued_order). A new job is last in its priority, so the
-- position lookup at enqueue costs the same with 100 or 100,000 jobs waiting.
create function public.job_queue_position(p_job public.jobs) returns integer
language plpgsql stable security definer set search_path = '' set jit = off as $$
-- Position of a queued job (null otherwise). Internal; used by job_to_json.
declare
  v_higher bigint;
  v_same bigint;
  v_ahead bigint;
  v_behind bigint;
begin
  if p_job.status <> 'queued' then return null; end if;
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

-- Average processing seconds of a renderer: the last 50 completed jobs of that renderer finished within
-- the last 24 hours; job_queue_config.default_processing_seconds when there are none.
create function public.renderer_avg_processing_seconds(p_renderer text, p_now timestamptz default now())
returns numeric
language plpgsql stable security definer set search_path = '' as $$
-- Recent average processing time of a renderer. Internal; used by estimates.
begin
  return coalesce(
    (select avg(extract(epoch from (j.completed_at - j.started_at))) from (
       select j.completed_at, j.started_at from public.jobs j
        where j.status = 'completed' and j.renderer = p_renderer
          and j.completed_at > p_now - interval '24 hours' and j.completed_at <= p_now
        order by j.completed_at desc limit 50) j),
    (select c.default_processing_seconds from public.job_queue_config c limit 1));
end $$;

-- Estimated seconds until a queued job starts, from its position:
--   slots  = least(effective global capacity, the renderer's cap)          (parallel renders available)
--   busy   = jobs processing now (of the renderer when its cap is the tighter one, else all)
--   before = max(0, (position - 1) + busy - slots + 1)                     (renders that must finish first)
--   wait   = ceil(before * avg_processing_seconds(renderer) / slots), at least the time to next_attempt_at.
-- Null when the job is not queued or the capacity is 0 (no estimate possible).
create function public.job_wait_estimate(p_job public.jobs, p_position integer, p_now timestamptz default now())
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
  select q.effective into v_effective from public.queue_capacity(p_now) q;
  select rc.max_concurrent into v_cap from public.renderer_caps() rc where rc.renderer = p_job.renderer;
  v_slots := least(v_effective, coalesce(v_cap, v_effective));
  if v_slots is null or v_slots <= 0 then return null; end if;
  if v_cap is not null and v_cap < v_effective then
    select count(*) into v_busy from public.jobs j where j.status = 'processing' and j.renderer = p_job.renderer;
  else
    select count(*) into v_busy from public.jobs j where j.status = 'processing';
  end if;
  v_before := greatest(0, (p_position - 1) + v_busy - v_slots + 1);
  v_wait := ceil(v_before * public.renderer_avg_processing_seconds(p_job.renderer, p_now) / v_slots);
  return greatest(v_wait, ceil(greatest(extract(epoch from (p_job.next_attempt_at - p_now)), 0)))::integer;
end $$;

-- The Job object of API.md, built in exactly one place.
create function public.job_to_json(p_job public.jobs, p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
-- Job JSON with fresh queue_position and estimated_wait_seconds. Service role (and the queue functions).
declare
  v_position integer := public.job_queue_position(p_job);
begin
  return jsonb_build_object(
    'id', p_job.id,
    'job_type', p_job.job_type,
    'priority', p_job.priority,
    'status', p_job.status,
    'renderer', p_job.renderer,
    'payload', p_job.payload,
    'queue_position', v_position,
    'estimated_wait_seconds', public.job_wait_estimate(p_job, v_position, p_now),
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
