-- Stats for the dashboard (get_queue_stats: the Stats object of API.md) and the Prometheus metrics.
-- Cheap with a million finished jobs: depths come from the counters, "today"/"last hour" from index
-- range scans on completed_at, processing from a small partial index.

create function public.get_queue_stats(p_now timestamptz default now()) returns jsonb
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
  if not public.is_queue_admin() then
    raise exception 'only an admin may read queue stats' using errcode = 'VQ403';
  end if;
  select * into v_cfg from public.job_queue_config limit 1;
  select * into v_cap from public.queue_capacity(p_now);
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
    from public.renderer_caps() rc;

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

create function public.get_queue_metrics(p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off as $$
-- What /status/metrics renders: gauges, monotonic counters, last-hour quantiles. Admins (as get_queue_stats).
declare
  v_stats jsonb;
  v_counters jsonb;
  v_q record;
begin
  if not public.is_queue_admin() then
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
