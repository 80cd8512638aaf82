-- An honest estimate (API.md "Scheduling", item 7 of the scheduling issue): capacity that changes at the
-- peak-window boundaries that come before the job would start; render times per job type where a running
-- job's type has history; and no estimate while the job's queue or renderer is paused (nothing starts until
-- someone resumes; wait_reason says "paused").

-- render_seconds: the expected render time of a job of p_job_type (null: any) on p_renderer: the mean of
-- that type among the renderer's last 50 completions in the last 24 h when it has at least 3 of them, else
-- the renderer's mean, else job_queue_config.default_processing_seconds (estimate_basis "default").
create function private.render_seconds(p_renderer text, p_job_type text, p_now timestamptz) returns numeric
language sql stable security definer set search_path = '' as $$
  with recent as (
    select j.job_type, extract(epoch from (j.completed_at - j.started_at)) as seconds
      from public.jobs j
     where j.status = 'completed' and j.renderer = p_renderer
       and j.completed_at > p_now - interval '24 hours' and j.completed_at <= p_now
     order by j.completed_at desc limit 50)
  select coalesce((select avg(r.seconds) from recent r where r.job_type = p_job_type having count(*) >= 3),
                  (select avg(r.seconds) from recent r),
                  (select c.default_processing_seconds from public.job_queue_config c limit 1))
$$;

-- next_peak_boundary: the first instant after p_after at which a peak window begins or ends (local times
-- in peak_time_zone), or null when there are no windows.
create function private.next_peak_boundary(p_after timestamptz) returns timestamptz
language sql stable security definer set search_path = '' as $$
  select min(b.at)
    from public.job_queue_config c
   cross join lateral (select c.peak_hour_start as t where c.peak_hour_start <> c.peak_hour_end
                       union all select c.peak_hour_end where c.peak_hour_start <> c.peak_hour_end
                       union all select w.starts_at from public.peak_windows w
                       union all select w.ends_at from public.peak_windows w) x
   cross join lateral (select (date_trunc('day', p_after at time zone c.peak_time_zone) + d * interval '1 day' + x.t)
                                at time zone c.peak_time_zone as at
                         from generate_series(0, 1) d) b
   where b.at > p_after
$$;

create or replace function private.job_wait_estimate(p_job public.jobs, p_position integer, p_now timestamptz default now())
returns integer
language plpgsql stable security definer set search_path = '' as $$
-- Wait estimate in seconds for a queued job. Internal; used by job_to_json.
--   before = (position - 1) + busy - slots + 1     renders that must end before a slot is this job's
--   work   = before × render_seconds(renderer)       render-seconds to get through (the renderer's recent
--            mean: the renders ahead are of any type), at the slots of each stretch between
--            peak-window boundaries (capacity changes there)
--   wait   = at least until its run_at / backoff, and for a user at max_processing_per_user at least until
--            their first running job should end. Null while paused or with no capacity.
declare
  v_cap integer;
  v_effective integer;
  v_slots integer;
  v_busy bigint;
  v_before bigint;
  v_work numeric;
  v_t timestamptz := p_now;
  v_next timestamptz;
  v_wait numeric;
begin
  if p_job.status <> 'queued' or p_position is null then return null; end if;
  if (select c.paused from public.job_queue_config c limit 1)
     or (select r.paused from public.renderers r where r.name = p_job.renderer) then
    return null;
  end if;
  select rc.max_concurrent into v_cap from private.renderer_caps() rc where rc.renderer = p_job.renderer;
  select q.effective into v_effective from private.queue_capacity(p_now) q;
  v_slots := least(v_effective, coalesce(v_cap, v_effective));
  if v_slots is null or v_slots <= 0 then return null; end if;
  if v_cap is not null and v_cap < v_effective then
    select count(*) into v_busy from public.jobs j where j.status = 'processing' and j.renderer = p_job.renderer;
  else
    select count(*) into v_busy from public.jobs j where j.status = 'processing';
  end if;
  v_before := greatest(0, (p_position - 1) + v_busy - v_slots + 1);
  v_work := v_before * private.render_seconds(p_job.renderer, null, p_now);
  for i in 1..8 loop  -- at most 8 capacity changes ahead; past them, the last capacity
    exit when v_work <= 0;
    v_next := private.next_peak_boundary(v_t);
    if v_next is null or i = 8 or v_t + make_interval(secs => v_work / v_slots) <= v_next then
      v_t := v_t + make_interval(secs => v_work / v_slots);
      exit;
    end if;
    v_work := v_work - extract(epoch from (v_next - v_t)) * v_slots;
    v_t := v_next;
    select least(q.effective, coalesce(v_cap, q.effective)) into v_slots from private.queue_capacity(v_t) q;
    if v_slots <= 0 then return null; end if;
  end loop;
  v_wait := ceil(extract(epoch from (v_t - p_now)));
  -- A user at max_processing_per_user waits at least until the first of their running jobs should end.
  if p_job.user_id is not null
     and (select c.max_processing_per_user from public.job_queue_config c limit 1)
         <= (select count(*) from public.jobs j where j.status = 'processing' and j.user_id = p_job.user_id) then
    v_wait := greatest(v_wait, (select ceil(min(greatest(0, private.render_seconds(j.renderer, j.job_type, p_now)
                                                            - extract(epoch from (p_now - j.started_at)))))
                                  from public.jobs j where j.status = 'processing' and j.user_id = p_job.user_id));
  end if;
  return greatest(v_wait, ceil(greatest(extract(epoch from (p_job.next_attempt_at - p_now)), 0)))::integer;
end $$;
