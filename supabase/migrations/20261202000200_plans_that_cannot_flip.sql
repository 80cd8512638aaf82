-- Plans that cannot flip (issue 12, part 2). Every statement the queue runs against jobs has one index on
-- which the plan it needs is the only cheap one, whatever the statistics say (a table analyzed while empty,
-- or one holding a million finished jobs, with or without its visibility map). docs/ARCHITECTURE.md, "Plans
-- that cannot flip", says which index serves which query; tests/query_plans_test.ts checks the plans.
--   * A partial index is a candidate for every query that implies its predicate. jobs_user_unfinished
--     (user_id, queued or processing) was one for every "status = 'queued'" query, and with the statistics
--     of an empty table the planner walked it whole for positions. It becomes jobs_user_open (completed_at
--     is null: the same rows by CHECK, a predicate no queued-row query implies) and jobs_user_processing.
--     jobs_queued_order (priority_rank, created_at, id) was another: with no column statistics claim_jobs
--     (renderer = .. and priority_rank = ..) walked it through every renderer's jobs instead of reading
--     jobs_claim_order. It becomes jobs_position_order, the same keys over queued rows that hold no lease:
--     every queued row (CHECK jobs_processing_has_lease), but only queries that say so, positions and
--     stats, can use it; the claim has jobs_claim_order alone.
--   * jobs_created (created_at) let "min(created_at) where status = 'queued'" walk every finished job before
--     the first queued one once a vacuum made that look cheap. It becomes jobs_status_created (status,
--     created_at, id), the list's order within a status. Stats take the oldest queued job per priority from
--     jobs_position_order, the last hour's completions per renderer from jobs_completed_by_renderer
--     (private.completed_renders); list_jobs merges the newest of each status.
--   * plpgsql keeps a connection's generic plan after five calls. Made while jobs was empty (a fresh deploy,
--     a truncate), every plan is a sequential scan, the cheapest way to read nothing, and it stays until the
--     next analyze however large the table grows: enqueue as users halved that way. The functions an empty
--     queue's first callers run (enqueue_job, get_queue_stats, get_queue_metrics, list_jobs) run with
--     enable_seqscan = off: every statement of theirs that reads jobs has an index plan, and that is the plan
--     they cache. And with jit = off: a disabled sequential scan still costs 1e10 where it is the only way
--     (the one-row config table), and that cost would JIT-compile the statement on every call.

create index jobs_user_open on public.jobs (user_id) where completed_at is null;
create index jobs_user_processing on public.jobs (user_id) where status = 'processing';
drop index public.jobs_user_unfinished;
create index jobs_status_created on public.jobs (status, created_at, id);
drop index public.jobs_created;
create index jobs_position_order on public.jobs (priority_rank, created_at, id)
  where status = 'queued' and lease_expires_at is null;
drop index public.jobs_queued_order;

-- enqueue_job: the per-user unfinished count reads jobs_user_open.
create or replace function queue.enqueue_job(
  p_job_type text,
  p_payload jsonb,
  p_idempotency_key text default null,
  p_priority text default null,
  p_run_at timestamptz default null,
  p_renderer text default null,
  p_expires_at timestamptz default null,
  p_now timestamptz default now()
) returns jsonb
language plpgsql security definer set search_path = '' set jit = off set enable_seqscan = off as $$
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
    -- Unfinished = completed_at is null (the CHECK jobs_finished_has_completed_at), the predicate of
    -- jobs_user_open: a predicate that no query on queued rows implies, so none of them can walk this index.
    select count(*) into v_count from (
      select 1 from public.jobs j where j.user_id = v_uid and j.completed_at is null
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

-- job_queue_position: the same counts on jobs_position_order (queued rows that hold no lease).
create or replace function private.job_queue_position(p_job public.jobs) returns integer
language plpgsql stable security definer set search_path = '' set jit = off as $$
-- Position of a queued job in claim order (null otherwise). Internal; used by job_to_json.
declare
  v_higher bigint;
  v_same bigint;
  v_ahead bigint := 0;
  v_behind bigint;
  v_offsets interval[] := private.priority_offsets();
  v_key timestamptz;
begin
  if p_job.status <> 'queued' then return null; end if;
  if v_offsets is not null then
    -- Bounded overtake: the jobs of every priority whose claim key (created_at - offset) is smaller, a tie
    -- going to the higher priority; one index range count on jobs_position_order per priority.
    v_key := p_job.created_at - v_offsets[p_job.priority_rank + 1];
    for v_rank in 0..2 loop
      v_ahead := v_ahead + case
        when v_rank = p_job.priority_rank then
          (select count(*) from public.jobs j
            where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = v_rank
              and (j.created_at, j.id) < (p_job.created_at, p_job.id))
        when v_rank < p_job.priority_rank then
          (select count(*) from public.jobs j
            where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = v_rank
              and j.created_at <= v_key + v_offsets[v_rank + 1])
        else
          (select count(*) from public.jobs j
            where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = v_rank
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
     where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p_job.priority_rank
       and (j.created_at, j.id) > (p_job.created_at, p_job.id)
     limit 1000) b;
  if v_behind < 1000 then
    v_ahead := greatest(v_same - v_behind - 1, 0);
  else
    select count(*) into v_ahead from public.jobs j
     where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p_job.priority_rank
       and (j.created_at, j.id) < (p_job.created_at, p_job.id);
  end if;
  return (v_higher + v_ahead + 1)::integer;
end $$;

-- completed_renders: jobs completed in (p_from, p_to] with their wait (created -> last start) and render
-- seconds, renderer by renderer: one range of jobs_completed_by_renderer each. Over all renderers that index
-- has no range to read, yet its predicate makes it a candidate for every query on completed jobs, and with
-- the statistics of a small table the planner walked all of it. Internal; used by stats and metrics.
create function private.completed_renders(p_from timestamptz, p_to timestamptz)
returns table (wait_seconds numeric, processing_seconds numeric)
language plpgsql stable security definer set search_path = '' as $$
declare
  v_renderer text;
begin
  for v_renderer in select r.name from public.renderers r loop
    return query
      select extract(epoch from (j.started_at - j.created_at)), extract(epoch from (j.completed_at - j.started_at))
        from public.jobs j
       where j.status = 'completed' and j.renderer = v_renderer and j.completed_at > p_from and j.completed_at <= p_to;
  end loop;
end $$;

-- get_queue_stats: the oldest queued job from jobs_queued_order, the last hour from completed_renders.
create or replace function public.get_queue_stats(p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off set enable_seqscan = off as $$
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

  select count(*) as n, avg(c.wait_seconds) as avg_wait, avg(c.processing_seconds) as avg_processing
    into v_hour
    from private.completed_renders(p_now - interval '1 hour', p_now) c;

  -- The oldest queued job: the first of each priority on jobs_position_order. (A plain min(created_at) over
  -- queued rows has no index in that order and walked past every finished job.)
  select min(o.created_at) into v_oldest
    from (values (0::smallint), (1::smallint), (2::smallint)) p(rank)
   cross join lateral (select j.created_at from public.jobs j
                        where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p.rank
                        order by j.created_at limit 1) o;

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

-- list_jobs: the newest p_limit of each status asked for (a backward range of jobs_status_created each), merged.
create or replace function queue.list_jobs(p_status text default null, p_limit integer default 50,
                                           p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off set enable_seqscan = off as $$
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
    select jsonb_agg(private.job_to_json(n.job, p_now) order by (n.job).created_at desc, (n.job).id desc)
      from (select x.job
              from unnest(case when p_status is null then array['queued', 'processing', 'completed', 'failed', 'cancelled']
                               else array[p_status] end) s(status)
             cross join lateral (select j as job from public.jobs j where j.status = s.status
                                  order by j.created_at desc, j.id desc limit p_limit) x
             order by (x.job).created_at desc, (x.job).id desc limit p_limit) n), '[]'::jsonb);
end $$;

-- get_queue_metrics: the last hour's completions from completed_renders.
create or replace function queue.get_queue_metrics(p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off set enable_seqscan = off as $$
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
  select jsonb_object_agg(c.name, c.value) into v_counters from private.queue_counters c;
  select percentile_cont(array[0.5, 0.9, 0.99]) within group (order by c.wait_seconds) as wait_q,
         percentile_cont(array[0.5, 0.9, 0.99]) within group (order by c.processing_seconds) as proc_q
    into v_q
    from private.completed_renders(p_now - interval '1 hour', p_now) c;
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
