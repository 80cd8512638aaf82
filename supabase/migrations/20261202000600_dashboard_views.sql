-- What the operator's dashboard reads (issue 14), all admin-only and cheap with a million finished jobs:
--   list_jobs gains filters by type, renderer and user (restated; the old signature is dropped);
--   get_queue_history: completed and failed jobs per hour over the last 24 hours (the jobs_finished index);
--   get_queue_alerts: configurable thresholds (job_queue_config.alert_*) and the alerts in force now;
--   get_peak_schedule: the peak windows behind the stats' capacity.peak, and when the next one starts or ends.

alter table public.job_queue_config
  add column alert_queue_depth integer not null default 100 check (alert_queue_depth > 0),
  add column alert_oldest_queued_seconds integer not null default 900 check (alert_oldest_queued_seconds > 0),
  add column alert_failure_rate numeric(4, 3) not null default 0.2
    check (alert_failure_rate > 0 and alert_failure_rate <= 1);
comment on column public.job_queue_config.alert_queue_depth is
  'Alert (dashboard, get_queue_alerts) when at least this many jobs are queued.';
comment on column public.job_queue_config.alert_oldest_queued_seconds is
  'Alert when the oldest queued job has waited at least this many seconds.';
comment on column public.job_queue_config.alert_failure_rate is
  'Alert when at least this share (0..1] of the jobs finished in the last hour failed (from 5 finished jobs on).';

-- The filtered lists read newest first within one status on jobs_status_created (20261202000200).

drop function queue.list_jobs(text, integer, timestamptz);

-- list_jobs: jobs newest first, each filter optional (status, job type, renderer, owner), at most 200. Admins only.
-- The new filters come last, so calls written for (p_status, p_limit, p_now) keep working.
create function queue.list_jobs(p_status text default null, p_limit integer default 50,
                                p_now timestamptz default now(), p_job_type text default null,
                                p_renderer text default null, p_user_id uuid default null)
returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off set enable_seqscan = off as $$
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may list jobs' using errcode = 'VQ403';
  end if;
  if p_status is not null and p_status not in ('queued', 'processing', 'completed', 'failed', 'cancelled') then
    raise exception 'status must be one of queued, processing, completed, failed, cancelled' using errcode = 'VQ400';
  end if;
  if p_job_type is not null and not exists (select 1 from public.job_types t where t.job_type = p_job_type) then
    raise exception 'unknown job_type "%"', p_job_type using errcode = 'VQ400',
      hint = format('Use one of: %s.', (select string_agg(t.job_type, ', ' order by t.job_type) from public.job_types t));
  end if;
  if p_renderer is not null and not exists (select 1 from public.renderers r where r.name = p_renderer) then
    raise exception 'unknown renderer "%"', p_renderer using errcode = 'VQ400',
      hint = format('Use one of: %s.', (select string_agg(r.name, ', ' order by r.name) from public.renderers r));
  end if;
  if p_limit is null or p_limit < 1 or p_limit > 200 then
    raise exception 'limit must be between 1 and 200' using errcode = 'VQ400';
  end if;
  return coalesce((
    select jsonb_agg(private.job_to_json(n.job, p_now) order by (n.job).created_at desc, (n.job).id desc)
      from (select x.job
              -- per status, newest first on jobs_status_created, merged: never a sort of every job
              from unnest(case when p_status is null then array['queued', 'processing', 'completed', 'failed', 'cancelled']
                               else array[p_status] end) s(status)
             cross join lateral (select j as job from public.jobs j
                                  where j.status = s.status
                                    and (p_job_type is null or j.job_type = p_job_type)
                                    and (p_renderer is null or j.renderer = p_renderer)
                                    and (p_user_id is null or j.user_id = p_user_id)
                                  order by j.created_at desc, j.id desc limit p_limit) x
             order by (x.job).created_at desc, (x.job).id desc limit p_limit) n), '[]'::jsonb);
end $$;

-- get_queue_history: completed and failed jobs per hour (hours of peak_time_zone), the 24 hours up to p_now,
-- oldest first; the current hour is the last and still running. Admins only.
create function queue.get_queue_history(p_now timestamptz default now())
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
        -- a range of the jobs_finished index (completed_at, status): only the last day's entries are read,
        -- each put in its hour by arithmetic (hours are 3,600 s from v_first, a local hour start)
        select floor(pg_catalog.date_part('epoch', j.completed_at - v_first) / 3600)::integer as i,
               count(*) filter (where j.status = 'completed') as completed,
               count(*) filter (where j.status = 'failed') as failed
          from public.jobs j
         where j.completed_at >= v_first and j.completed_at <= p_now
         group by 1) f on f.i = h.i);
end $$;

-- jobs_text: "1 job", "3 jobs", for messages people read. Internal.
create function private.jobs_text(p_n bigint) returns text
language sql immutable set search_path = '' as $$
  select p_n || case when p_n = 1 then ' job' else ' jobs' end
$$;

-- get_queue_alerts: the thresholds and the alerts in force: queue too deep, oldest job waiting too long, too
-- many failures in the last hour, a renderer in use with no healthy endpoint. Admins only.
create function queue.get_queue_alerts(p_now timestamptz default now())
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
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

  -- Terminal outcomes of the last hour (jobs_finished index); a rate needs at least 5 of them to mean much.
  select count(*) filter (where j.status = 'failed') as failed, count(*) as finished
    into v_hour
    from public.jobs j
   where j.completed_at > p_now - interval '1 hour' and j.completed_at <= p_now
     and j.status in ('completed', 'failed');
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

-- get_peak_schedule: the peak windows (local times in peak_time_zone, start > end crosses midnight), the
-- multiplier, whether p_now is in one and the next window start or end after p_now. Admins only.
create function queue.get_peak_schedule(p_now timestamptz default now())
returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_cfg public.job_queue_config;
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may read the peak schedule' using errcode = 'VQ403';
  end if;
  select * into v_cfg from public.job_queue_config limit 1;
  return jsonb_build_object(
    'time_zone', v_cfg.peak_time_zone,
    'multiplier', v_cfg.peak_worker_multiplier,
    'windows', coalesce((
      select jsonb_agg(jsonb_build_object('start', to_char(w.s, 'HH24:MI'), 'end', to_char(w.e, 'HH24:MI'),
                                          'label', w.label) order by w.s, w.e)
        from (select v_cfg.peak_hour_start as s, v_cfg.peak_hour_end as e, null as label
               where v_cfg.peak_hour_start <> v_cfg.peak_hour_end
              union all
              select pw.starts_at, pw.ends_at, pw.label from public.peak_windows pw) w), '[]'::jsonb),
    'peak', private.queue_is_peak(p_now),
    'next_boundary_at', private.next_peak_boundary(p_now));
end $$;

revoke all on function queue.list_jobs(text, integer, timestamptz, text, text, uuid),
                       queue.get_queue_history(timestamptz),
                       queue.get_queue_alerts(timestamptz),
                       queue.get_peak_schedule(timestamptz)
  from public, anon;
-- Admin-only, as list_jobs always was: they check private.is_queue_admin() inside.
grant execute on function queue.list_jobs(text, integer, timestamptz, text, text, uuid),
                          queue.get_queue_history(timestamptz),
                          queue.get_queue_alerts(timestamptz),
                          queue.get_peak_schedule(timestamptz)
  to authenticated, service_role;
