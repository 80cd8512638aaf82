-- Stats from outcome buckets (issue 12: get_queue_stats p99 <= 10 ms with 1,000,000 finished jobs, on a fresh
-- table too). The counts of today (completed, failed, cancelled, expired) read every job finished today, ~34k
-- rows by evening at 1M a month, and on a table whose visibility map is empty each one is a heap fetch (1-30 ms
-- analyzed, seconds before hint bits are set). Outcomes are now counted as they happen, in 15-minute buckets of
-- completed_at (every zone's midnight and hour start is on a 15-minute boundary), and read in O(buckets):
--   * private.job_outcome_buckets: per bucket and outcome (completed, failed, cancelled, expired = cancelled by
--     expiry), the number of jobs and, for completed ones, their wait and render seconds. Sharded as
--     queue_counter_shards is: a writer takes a shard no other transaction holds (skip locked), so concurrent
--     completions never queue on one row; shard rows are made on first use, and folded into one when a job
--     is un-counted (so a pruned day leaves none).
--   * Statement triggers on jobs (beside the queued-depth ones, on the same transition tables) count a job in
--     the bucket of its completed_at when it becomes terminal, and un-count it when it leaves that state, moves
--     bucket, or is deleted (pruning); a truncate empties the buckets. Every path, the lifecycle functions and a
--     hand-written UPDATE alike, goes through them.
--   * private.job_outcomes_in(from, until) answers a window exactly: the buckets wholly inside it from the
--     counts, the rest of a bucket the window cuts from jobs (jobs_finished), at most one bucket's rows. The last
--     bucket counts whole when none of its jobs completed at or after the window's end (max_completed_at), so
--     "today up to now" reads no job at all.
-- get_queue_stats (today's counts, the last hour's throughput and averages), get_queue_history and
-- get_queue_alerts' failure rate read them; get_queue_metrics keeps its last-hour quantiles from the rows.

create table private.job_outcome_buckets (
  bucket timestamptz not null,
  outcome text not null check (outcome in ('completed', 'failed', 'cancelled', 'expired')),
  shard smallint not null check (shard between 0 and 15),
  n bigint not null default 0,
  timed_n bigint not null default 0,            -- completed jobs with a started_at (the averages' count)
  wait_sum numeric not null default 0,          -- seconds, started_at - created_at, over timed_n
  processing_sum numeric not null default 0,    -- seconds, completed_at - started_at, over timed_n
  max_completed_at timestamptz,                 -- no job counted here completed later (an upper bound)
  primary key (bucket, outcome, shard)
);
comment on table private.job_outcome_buckets is
  'Terminal outcomes per 15-minute bucket of completed_at, kept by the jobs triggers; read summed over shards '
  '(private.job_outcomes_in). What stats count as today, the last hour and the history.';
alter table private.job_outcome_buckets enable row level security;

-- job_outcome_of: the bucket and outcome a finished job counts in, and its part of the averages (the rule;
-- job_outcomes_in writes it out for its range reads of jobs). plpgsql, not sql: a SQL function that cannot be
-- inlined (its SET search_path) is planned again in every statement that calls it, 0.1 ms a trigger call.
create function private.job_outcome_of(p_status text, p_cancel_reason text, p_created_at timestamptz,
  p_started_at timestamptz, p_completed_at timestamptz,
  out bucket timestamptz, out outcome text, out timed integer, out wait_seconds numeric,
  out processing_seconds numeric)
language plpgsql immutable set search_path = '' as $$
begin
  bucket := pg_catalog.date_bin('15 minutes', p_completed_at, '2000-01-01 00:00+00');
  outcome := case when p_status = 'cancelled' and p_cancel_reason = 'expired' then 'expired' else p_status end;
  timed := case when p_status = 'completed' and p_started_at is not null then 1 else 0 end;
  wait_seconds := case when p_status = 'completed'
                       then coalesce(extract(epoch from p_started_at - p_created_at), 0) else 0 end;
  processing_seconds := case when p_status = 'completed'
                             then coalesce(extract(epoch from p_completed_at - p_started_at), 0) else 0 end;
end $$;

-- job_outcome_add: adds to one bucket's outcome in a shard no other transaction holds (a new shard row when
-- all are held). A subtraction (a retry, a move, a delete) also folds the shard rows no one else holds into
-- that one, and removes it when they net to nothing: pruned days leave no rows. Internal (called by the jobs
-- outcome triggers). enable_seqscan = off: every statement has its primary-key plan, and that is the one a
-- session caches even when it first ran on an empty table (see "Plans that cannot flip").
create function private.job_outcome_add(p_bucket timestamptz, p_outcome text, p_n bigint, p_timed_n bigint,
  p_wait_sum numeric, p_processing_sum numeric, p_max_completed_at timestamptz)
returns void language plpgsql security definer set search_path = '' set enable_seqscan = off as $$
declare
  v_shard smallint;
begin
  if p_n = 0 and p_timed_n = 0 and p_wait_sum = 0 and p_processing_sum = 0 and p_max_completed_at is null then
    return;
  end if;
  select b.shard into v_shard from private.job_outcome_buckets b
   where b.bucket = p_bucket and b.outcome = p_outcome
   order by (b.shard + pg_catalog.pg_backend_pid()) % 16
   limit 1 for update skip locked;
  if v_shard is null then
    v_shard := pg_catalog.pg_backend_pid() % 16;
    insert into private.job_outcome_buckets as b
           (bucket, outcome, shard, n, timed_n, wait_sum, processing_sum, max_completed_at)
    values (p_bucket, p_outcome, v_shard, p_n, p_timed_n, p_wait_sum, p_processing_sum, p_max_completed_at)
    on conflict (bucket, outcome, shard) do update
       set n = b.n + excluded.n, timed_n = b.timed_n + excluded.timed_n, wait_sum = b.wait_sum + excluded.wait_sum,
           processing_sum = b.processing_sum + excluded.processing_sum,
           max_completed_at = greatest(b.max_completed_at, excluded.max_completed_at);
  else
    update private.job_outcome_buckets b
       set n = b.n + p_n, timed_n = b.timed_n + p_timed_n, wait_sum = b.wait_sum + p_wait_sum,
           processing_sum = b.processing_sum + p_processing_sum,
           max_completed_at = greatest(b.max_completed_at, p_max_completed_at)
     where b.bucket = p_bucket and b.outcome = p_outcome and b.shard = v_shard;
  end if;
  if p_n < 0 then
    with held as (
      select b.shard from private.job_outcome_buckets b
       where b.bucket = p_bucket and b.outcome = p_outcome for update skip locked),
    gone as (
      delete from private.job_outcome_buckets b using held h
       where b.bucket = p_bucket and b.outcome = p_outcome and b.shard = h.shard
      returning b.n, b.timed_n, b.wait_sum, b.processing_sum, b.max_completed_at)
    insert into private.job_outcome_buckets (bucket, outcome, shard, n, timed_n, wait_sum, processing_sum,
                                             max_completed_at)
    select p_bucket, p_outcome, v_shard, sum(g.n), sum(g.timed_n), sum(g.wait_sum), sum(g.processing_sum),
           max(g.max_completed_at)
      from gone g
    having sum(g.n) <> 0 or sum(g.timed_n) <> 0 or sum(g.wait_sum) <> 0 or sum(g.processing_sum) <> 0;
  end if;
end $$;

-- The triggers: net change per bucket and outcome of the statement's rows (an update that leaves a finished
-- job where it was writes nothing).
create function private.jobs_outcomes_after_insert() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (insert): counts rows inserted finished. Called by Postgres only.
declare r record;
begin
  for r in
    select f.bucket, f.outcome, count(*) as n, sum(f.timed) as timed_n, sum(f.wait_seconds) as wait_sum,
           sum(f.processing_seconds) as processing_sum, max(w.completed_at) as max_at
      from new_rows w
     cross join lateral private.job_outcome_of(w.status, w.cancel_reason, w.created_at, w.started_at, w.completed_at) f
     where w.completed_at is not null
     group by 1, 2 order by 1, 2
  loop
    perform private.job_outcome_add(r.bucket, r.outcome, r.n, r.timed_n, r.wait_sum, r.processing_sum, r.max_at);
  end loop;
  return null;
end $$;

create function private.jobs_outcomes_after_update() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (update): moves finished rows between buckets and outcomes (finished, retried,
-- changed by hand). Called by Postgres only.
declare r record;
begin
  for r in
    select f.bucket, f.outcome, sum(k.d) as n, sum(k.d * f.timed) as timed_n, sum(k.d * f.wait_seconds) as wait_sum,
           sum(k.d * f.processing_seconds) as processing_sum, max(k.completed_at) filter (where k.d > 0) as max_at
      from (select -1 as d, o.status, o.cancel_reason, o.created_at, o.started_at, o.completed_at
              from old_rows o where o.completed_at is not null
            union all
            select 1, w.status, w.cancel_reason, w.created_at, w.started_at, w.completed_at
              from new_rows w where w.completed_at is not null) k
     cross join lateral private.job_outcome_of(k.status, k.cancel_reason, k.created_at, k.started_at, k.completed_at) f
     group by 1, 2
    having sum(k.d) <> 0 or sum(k.d * f.timed) <> 0 or sum(k.d * f.wait_seconds) <> 0
        or sum(k.d * f.processing_seconds) <> 0
     order by 1, 2
  loop
    perform private.job_outcome_add(r.bucket, r.outcome, r.n, r.timed_n, r.wait_sum, r.processing_sum, r.max_at);
  end loop;
  return null;
end $$;

create function private.jobs_outcomes_after_delete() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (delete): un-counts deleted finished rows (pruning). Called by Postgres only.
declare r record;
begin
  for r in
    select f.bucket, f.outcome, count(*) as n, sum(f.timed) as timed_n, sum(f.wait_seconds) as wait_sum,
           sum(f.processing_seconds) as processing_sum
      from old_rows o
     cross join lateral private.job_outcome_of(o.status, o.cancel_reason, o.created_at, o.started_at, o.completed_at) f
     where o.completed_at is not null
     group by 1, 2 order by 1, 2
  loop
    perform private.job_outcome_add(r.bucket, r.outcome, -r.n, -r.timed_n, -r.wait_sum, -r.processing_sum, null);
  end loop;
  return null;
end $$;

create function private.jobs_outcomes_after_truncate() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (truncate): no finished job is left. Called by Postgres only.
begin
  delete from private.job_outcome_buckets b where b.n is not null;
  return null;
end $$;

create trigger _510_count_outcomes_insert after insert on public.jobs
  referencing new table as new_rows for each statement execute function private.jobs_outcomes_after_insert();
create trigger _510_count_outcomes_update after update on public.jobs
  referencing old table as old_rows new table as new_rows
  for each statement execute function private.jobs_outcomes_after_update();
create trigger _510_count_outcomes_delete after delete on public.jobs
  referencing old table as old_rows for each statement execute function private.jobs_outcomes_after_delete();
create trigger _510_count_outcomes_truncate after truncate on public.jobs
  for each statement execute function private.jobs_outcomes_after_truncate();

-- The jobs finished before this migration (the triggers above hold jobs' writers off until it commits).
insert into private.job_outcome_buckets (bucket, outcome, shard, n, timed_n, wait_sum, processing_sum, max_completed_at)
select f.bucket, f.outcome, 0, count(*), sum(f.timed), sum(f.wait_seconds), sum(f.processing_seconds), max(j.completed_at)
  from public.jobs j
 cross join lateral private.job_outcome_of(j.status, j.cancel_reason, j.created_at, j.started_at, j.completed_at) f
 where j.completed_at is not null
 group by 1, 2;

-- job_outcomes_in: finished jobs with completed_at in [p_from, p_until), per bucket and outcome, exact. Buckets
-- wholly inside come from the counts; the part of a bucket that a bound cuts comes from jobs (jobs_finished
-- ranges). The bucket holding p_until counts whole when no job of it completed at or after p_until: a window
-- ending now reads no job. Internal (stats, history, alerts).
create function private.job_outcomes_in(p_from timestamptz, p_until timestamptz)
returns table (bucket timestamptz, outcome text, n bigint, timed_n bigint, wait_sum numeric, processing_sum numeric)
language plpgsql stable security definer set search_path = '' set jit = off set enable_seqscan = off as $$
declare
  v_whole_from timestamptz := pg_catalog.date_bin('15 minutes', p_from, '2000-01-01 00:00+00');
  v_whole_until timestamptz := pg_catalog.date_bin('15 minutes', p_until, '2000-01-01 00:00+00');
  v_lo timestamptz;
  v_hi timestamptz;
begin
  if p_from >= p_until then
    return;
  end if;
  if v_whole_from < p_from then
    v_whole_from := v_whole_from + interval '15 minutes';
  end if;
  if v_whole_until < p_until and v_whole_until >= v_whole_from
     and not exists (select 1 from private.job_outcome_buckets b
                      where b.bucket = v_whole_until and b.max_completed_at >= p_until) then
    v_whole_until := v_whole_until + interval '15 minutes';
  end if;
  if v_whole_from >= v_whole_until then  -- no whole bucket: the window's jobs themselves
    v_whole_from := p_until;
    v_whole_until := p_until;
  else
    return query
      select b.bucket, b.outcome, sum(b.n)::bigint, sum(b.timed_n)::bigint, sum(b.wait_sum), sum(b.processing_sum)
        from private.job_outcome_buckets b
       where b.bucket >= v_whole_from and b.bucket < v_whole_until
       group by 1, 2;
  end if;
  -- The cut parts, [p_from, v_whole_from) and [v_whole_until, p_until): one range of jobs_finished each. Up
  -- to a bucket's rows, so job_outcome_of is written out here: a function call per row (its SET search_path
  -- keeps it from being inlined) made a busy quarter hour cost 4 ms.
  -- Two statements, not one join over both ranges: with the statistics of a table analyzed while empty the
  -- join ran the other way round, the whole index outside and the ranges as a filter (0.5 s).
  for v_lo, v_hi in
    select * from (values (p_from, v_whole_from), (v_whole_until, p_until)) r(lo, hi) where r.lo < r.hi
  loop
    return query
      select pg_catalog.date_bin('15 minutes', j.completed_at, '2000-01-01 00:00+00'),
             case when j.status = 'cancelled' and j.cancel_reason = 'expired' then 'expired' else j.status end,
             count(*), count(j.started_at) filter (where j.status = 'completed'),
             coalesce(sum(extract(epoch from j.started_at - j.created_at)) filter (where j.status = 'completed'), 0),
             coalesce(sum(extract(epoch from j.completed_at - j.started_at)) filter (where j.status = 'completed'), 0)
        from public.jobs j
       where j.completed_at >= v_lo and j.completed_at < v_hi
       group by 1, 2;
  end loop;
end $$;

-- The readers: only the statements that counted finished jobs change.
create or replace function public.get_queue_stats(p_now timestamptz default now())
returns jsonb
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

  -- Finished today (completed_at in [v_today, p_now]) and completed in the last hour ((p_now - 1 h, p_now]),
  -- from the outcome buckets: a timestamptz is whole microseconds, so "<= p_now" is "< p_now + 1 µs".
  select coalesce(sum(o.n) filter (where o.outcome = 'completed'), 0)::bigint as completed,
         coalesce(sum(o.n) filter (where o.outcome = 'failed'), 0)::bigint as failed,
         coalesce(sum(o.n) filter (where o.outcome in ('cancelled', 'expired')), 0)::bigint as cancelled,
         coalesce(sum(o.n) filter (where o.outcome = 'expired'), 0)::bigint as expired
    into v_finished
    from private.job_outcomes_in(v_today, p_now + interval '1 microsecond') o;

  select coalesce(sum(o.n), 0)::bigint as n, sum(o.wait_sum) / nullif(sum(o.timed_n), 0) as avg_wait,
         sum(o.processing_sum) / nullif(sum(o.timed_n), 0) as avg_processing
    into v_hour
    from private.job_outcomes_in(p_now - interval '1 hour' + interval '1 microsecond',
                                 p_now + interval '1 microsecond') o
   where o.outcome = 'completed';

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

create or replace function queue.get_queue_history(p_now timestamptz default now())
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_tz text;
  v_first timestamptz;
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may read the queue history' using errcode = 'VQ403';
  end if;
  select c.peak_time_zone into v_tz from public.job_queue_config c limit 1;
  v_first := pg_catalog.date_trunc('hour', p_now, v_tz) - interval '23 hours';
  return (
    select jsonb_agg(jsonb_build_object('hour', v_first + h.i * interval '1 hour', 'completed', coalesce(f.completed, 0),
                                        'failed', coalesce(f.failed, 0)) order by h.i)
      from pg_catalog.generate_series(0, 23) h(i)
      left join (
        -- the outcome buckets of the last day, each put in its hour by arithmetic (hours are 3,600 s from
        -- v_first, a local hour start; a 15-minute bucket lies within one hour)
        select floor(pg_catalog.date_part('epoch', o.bucket - v_first) / 3600)::integer as i,
               sum(o.n) filter (where o.outcome = 'completed') as completed,
               sum(o.n) filter (where o.outcome = 'failed') as failed
          from private.job_outcomes_in(v_first, p_now + interval '1 microsecond') o
         group by 1) f on f.i = h.i);
end $$;

-- (jit = off: the per-renderer alert's statement, costed with disabled-looking subplans, was JIT-compiled on
-- every call, 230 ms.)
create or replace function queue.get_queue_alerts(p_now timestamptz default now())
returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off as $$
declare
  v_cfg public.job_queue_config;
  v_stats jsonb;
  v_hour record;
  v_active jsonb := '[]'::jsonb;
  v_rate numeric;
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may read the queue alerts' using errcode = 'VQ403';
  end if;
  select * into v_cfg from public.job_queue_config limit 1;
  v_stats := public.get_queue_stats(p_now); -- the same depth and age the stats show

  if (v_stats ->> 'queued')::bigint >= v_cfg.alert_queue_depth then
    v_active := v_active || jsonb_build_object('kind', 'queue_depth',
      'value', (v_stats ->> 'queued')::bigint, 'threshold', v_cfg.alert_queue_depth,
      'message', format('%s queued (alert at %s).', private.jobs_text((v_stats ->> 'queued')::bigint),
                        v_cfg.alert_queue_depth));
  end if;

  if (v_stats ->> 'oldest_queued_seconds')::bigint >= v_cfg.alert_oldest_queued_seconds then
    v_active := v_active || jsonb_build_object('kind', 'oldest_queued',
      'value', (v_stats ->> 'oldest_queued_seconds')::bigint, 'threshold', v_cfg.alert_oldest_queued_seconds,
      'message', format('The oldest queued job has waited %s min (alert at %s min).',
                        round((v_stats ->> 'oldest_queued_seconds')::numeric / 60),
                        round(v_cfg.alert_oldest_queued_seconds::numeric / 60, 1)));
  end if;

  -- Completed and failed jobs of the last hour, (p_now - 1 h, p_now] (outcome buckets); a rate needs at least
  -- 5 of them to mean much.
  select coalesce(sum(o.n) filter (where o.outcome = 'failed'), 0)::bigint as failed, coalesce(sum(o.n), 0)::bigint as finished
    into v_hour
    from private.job_outcomes_in(p_now - interval '1 hour' + interval '1 microsecond',
                                 p_now + interval '1 microsecond') o
   where o.outcome in ('completed', 'failed');
  if v_hour.finished >= 5 then
    v_rate := round(v_hour.failed::numeric / v_hour.finished, 3);
    if v_rate >= v_cfg.alert_failure_rate then
      v_active := v_active || jsonb_build_object('kind', 'failure_rate',
        'value', v_rate, 'threshold', v_cfg.alert_failure_rate,
        'message', format('%s of the %s jobs finished in the last hour failed (%s%%; alert at %s%%).',
                          v_hour.failed, v_hour.finished, round(v_rate * 100),
                          round(v_cfg.alert_failure_rate * 100)));
    end if;
  end if;

  -- A renderer is in use when it has endpoints registered or jobs waiting for it; healthy endpoints are
  -- what claim_jobs may dispatch to (enabled, not cooling down). Queued jobs are counted only for an alert.
  select v_active || coalesce(jsonb_agg(jsonb_build_object('kind', 'no_healthy_endpoint', 'renderer', a.name,
           'value', a.queued, 'threshold', 1,
           'message', format('Renderer %s has no healthy render endpoint; %s waiting for it.',
                             a.name, private.jobs_text(a.queued))) order by a.name), '[]'::jsonb)
    into v_active
    from (select r.name,
                 (select count(*) from public.jobs j where j.status = 'queued' and j.renderer = r.name) as queued
            from public.renderers r
           where not exists (select 1 from public.render_endpoints e
                              where e.renderer = r.name and not e.disabled
                                and (e.unhealthy_until is null or e.unhealthy_until <= p_now))
             and (exists (select 1 from public.render_endpoints e where e.renderer = r.name)
                  or exists (select 1 from public.jobs j where j.status = 'queued' and j.renderer = r.name))) a;

  return jsonb_build_object(
    'thresholds', jsonb_build_object('queue_depth', v_cfg.alert_queue_depth,
                                     'oldest_queued_seconds', v_cfg.alert_oldest_queued_seconds,
                                     'failure_rate', v_cfg.alert_failure_rate),
    'active', v_active,
    'generated_at', p_now);
end $$;
