-- An estimate measured against a simulated day (scripts/bench/estimate_day.ts, issue 12). The previous one
-- counted every queued job ahead as a render of this job's renderer, whatever renderer it would run on, and
-- every running render as a whole render still to go. Measured, that put the 90th percentile of the relative
-- error near 1 to 2: jobs of a capped renderer (Manim, Revideo) were told to wait for the doubts queued ahead
-- of them, and short waits were read off the soonest expected end of one render, while with several renders
-- running the first of them ends much sooner. Now:
--   - jobs ahead are counted per renderer (per-priority queue counters, each priority's job types'
--     renderer), so a capped renderer's backlog queues on its own slots and only holds its share of the
--     global ones;
--   - a running render is expected to need its type's mean render time minus what it has run (at least a
--     quarter of the mean: one that has run long may be a slow one);
--   - the k-th start in a pool of slots comes from when its running renders should end, taken together
--     (private.pool_departures), then one start per mean render time ÷ slots;
--   - a job that could be claimed now and has no claimable job ahead of it starts at the next pass (0);
--   - capacity that changes at a peak-window boundary opens (or takes back) slots at that instant.

-- pool_departures: when each running render of a pool of p_slots slots should end, in seconds from now, from
-- their expected remaining seconds; p_mean is the render time of the jobs that take the freed slots. Phase
-- model: the next end comes after 1 ÷ (the sum of the running renders' rates, 1 ÷ remaining), then the render
-- expected to end first counts as replaced by one of p_mean. Internal; used by job_wait_estimate.
create function private.pool_departures(p_remaining numeric[], p_mean numeric, p_slots integer) returns numeric[]
language plpgsql immutable set search_path = '' as $$
declare
  v_sorted numeric[] := array(select greatest(x, 1) from unnest(p_remaining) x order by 1);
  v_n integer := coalesce(cardinality(p_remaining), 0);
  v_rate numeric := 0;   -- the summed rate of the renders expected to end from the j-th on
  v_t numeric := 0;
  v_out numeric[] := '{}';
begin
  for j in 1..v_n loop v_rate := v_rate + 1 / v_sorted[j]; end loop;
  for j in 1..v_n loop
    v_t := v_t + 1 / (v_rate + (j - 1 + greatest(p_slots - v_n, 0)) / p_mean);
    v_out := v_out || v_t;
    v_rate := v_rate - 1 / v_sorted[j];
  end loop;
  return v_out;
end $$;

-- pool_start: seconds from now until the p_k-th start in a pool of p_slots slots whose running renders end at
-- p_departures (pool_departures): the free slots start the first jobs at once, each end starts the next (an end
-- beyond p_slots, after the capacity shrank, starts nothing), then p_slots starts per p_mean seconds.
-- Internal; used by job_wait_estimate.
create function private.pool_start(p_departures numeric[], p_mean numeric, p_slots integer, p_k numeric)
returns numeric
language plpgsql immutable set search_path = '' as $$
declare
  v_n integer := coalesce(cardinality(p_departures), 0);
  v_free integer := greatest(p_slots - v_n, 0);
  v_ends numeric := p_k - v_free + greatest(v_n - p_slots, 0);  -- the ends this start waits for
begin
  if p_k <= v_free then return 0; end if;
  if v_ends <= v_n then return p_departures[ceil(v_ends)::integer]; end if;
  return coalesce(p_departures[v_n], 0) + (v_ends - v_n) * p_mean / p_slots;
end $$;

-- pool_starts_within: how many starts the same pool makes within p_seconds from now (fractional). Internal.
create function private.pool_starts_within(p_departures numeric[], p_mean numeric, p_slots integer, p_seconds numeric)
returns numeric
language plpgsql immutable set search_path = '' as $$
declare
  v_n integer := coalesce(cardinality(p_departures), 0);
  v_starts numeric := greatest(p_slots - v_n, 0) - greatest(v_n - p_slots, 0);
begin
  for j in 1..v_n loop
    exit when p_departures[j] > p_seconds;
    v_starts := v_starts + 1;
  end loop;
  return v_starts + greatest(p_seconds - coalesce(p_departures[v_n], 0), 0) * p_slots / p_mean;
end $$;

-- recent_render_seconds: expected render times from the last 50 completions of each renderer in the last 24 h:
-- per renderer (job_type null: their mean, else job_queue_config.default_processing_seconds and estimate_basis
-- "default") and per job type with at least 3 of them (their mean). One query for every renderer, as the
-- estimate needs them all. Internal; used by render_seconds and job_wait_estimate.
create function private.recent_render_seconds(p_now timestamptz)
returns table (renderer text, job_type text, seconds numeric)
language plpgsql stable security definer set search_path = '' set plan_cache_mode = force_generic_plan as $$
begin
  return query
    select r.name, g.job_type,
           coalesce(g.seconds, (select c.default_processing_seconds from public.job_queue_config c limit 1))::numeric
      from public.renderers r
     cross join lateral (
       select case when grouping(x.job_type) = 0 then x.job_type end as job_type, avg(x.seconds) as seconds,
              count(*) as n, grouping(x.job_type) = 1 as whole
         from (select j.job_type, extract(epoch from (j.completed_at - j.started_at)) as seconds
                 from public.jobs j
                where j.status = 'completed' and j.renderer = r.name
                  and j.completed_at > p_now - interval '24 hours' and j.completed_at <= p_now
                order by j.completed_at desc limit 50) x
        group by grouping sets ((), (x.job_type))) g
     where g.whole or g.n >= 3;
end $$;

-- render_seconds (restated on recent_render_seconds, the one place of the rule): the expected render time of a
-- job of p_job_type (null: any) on p_renderer: its type's mean where the renderer has 3 recent completions of
-- it, else the renderer's mean, else the default.
create or replace function private.render_seconds(p_renderer text, p_job_type text, p_now timestamptz) returns numeric
language sql stable security definer set search_path = '' as $$
  select coalesce(max(s.seconds) filter (where s.job_type = p_job_type), max(s.seconds) filter (where s.job_type is null))
    from private.recent_render_seconds(p_now) s where s.renderer = p_renderer
$$;

create or replace function private.job_wait_estimate(p_job public.jobs, p_position integer, p_now timestamptz default now())
returns integer
language plpgsql stable security definer set search_path = '' set plan_cache_mode = force_generic_plan as $$
-- Wait estimate in seconds for a queued job. Internal; used by job_to_json. docs/ARCHITECTURE.md "The estimate".
--   ahead per renderer   the jobs ahead (position - 1) split by priority with the queue counters, each
--                        priority's jobs counted on its job types' renderer
--   own slots            a capped renderer: its (ahead + 1)-th start on its own slots
--   global slots         the (ahead + 1)-th start on the global slots, less those that other capped renderers
--                        with a backlog ahead keep (their backlog holds them), across peak-window boundaries
--   wait                 the later of the two; at least until its run_at / backoff and, for a user at
--                        max_processing_per_user, until their first running job should end. 0 when it could
--                        be claimed now and no claimable job ahead would take the free slot first.
--                        Null while paused or with no capacity.
declare
  v_cfg public.job_queue_config;
  v_global integer;
  v_cap integer;
  v_mean_renderer text[];   -- recent_render_seconds
  v_mean_type text[];
  v_mean_seconds numeric[];
  v_run_renderer text[];    -- the running renders: renderer, user, expected remaining seconds
  v_run_user uuid[];
  v_run_remaining numeric[];
  v_user_wait numeric;
  v_depth numeric[];        -- queued jobs per priority (high, medium, low)
  v_ahead_rank numeric[];   -- of those, ahead of this job
  v_names text[];           -- per renderer: name, cap, paused, running, jobs ahead
  v_caps integer[];
  v_paused boolean[];
  v_busy integer[];
  v_ahead numeric[];
  v_means numeric[];        -- its mean render time
  v_own integer;            -- this job's renderer in those arrays
  v_blockers text[] := '{}';
  v_reserved integer := 0;  -- global slots the blockers hold
  v_shared numeric := 0;    -- jobs ahead that take shared global slots, and their render-seconds
  v_work numeric := 0;
  v_mean numeric;
  v_mean_own numeric;
  v_ends numeric[];
  v_slots integer;
  v_own_start numeric := 0;
  v_start numeric;
  v_left numeric;
  v_t timestamptz;
  v_next timestamptz;
  v_new integer;
begin
  if p_job.status <> 'queued' or p_position is null then return null; end if;
  select * into v_cfg from public.job_queue_config limit 1;
  if v_cfg.paused or (select r.paused from public.renderers r where r.name = p_job.renderer) then return null; end if;
  select q.effective into v_global from private.queue_capacity(p_now) q;

  -- The running renders, each expected to need its type's render time minus what it has run (at least a
  -- quarter of it: one that has run long may be a slow one).
  select array_agg(s.renderer), array_agg(s.job_type), array_agg(greatest(s.seconds, 1))  -- never a 0 s render
    into v_mean_renderer, v_mean_type, v_mean_seconds from private.recent_render_seconds(p_now) s;
  select coalesce(array_agg(j.renderer), '{}'), coalesce(array_agg(j.user_id), '{}'),
         coalesce(array_agg(greatest(m.seconds - extract(epoch from (p_now - j.started_at)), m.seconds / 4)), '{}')
    into v_run_renderer, v_run_user, v_run_remaining
    from public.jobs j
   cross join lateral (
     select coalesce(max(x.seconds) filter (where x.job_type = j.job_type), max(x.seconds) filter (where x.job_type is null)) as seconds
       from unnest(v_mean_renderer, v_mean_type, v_mean_seconds) x(renderer, job_type, seconds)
      where x.renderer = j.renderer) m
   where j.status = 'processing';

  -- Jobs ahead per priority: strict priority puts every job of a higher one ahead, then this one's own; with
  -- priority offsets (all set or none) the counters do not keep the split: the jobs ahead are shared out pro rata.
  select array[coalesce(sum(d.n) filter (where d.priority_rank = 0), 0), coalesce(sum(d.n) filter (where d.priority_rank = 1), 0),
               coalesce(sum(d.n) filter (where d.priority_rank = 2), 0)]
    into v_depth from public.queue_depth_slots d;
  v_ahead_rank := array[0, 0, 0];
  if v_cfg.high_priority_offset_minutes is not null then
    for r in 1..3 loop
      v_ahead_rank[r] := (p_position - 1) * v_depth[r] / greatest(v_depth[1] + v_depth[2] + v_depth[3], 1);
    end loop;
  else
    v_ahead_rank[p_job.priority_rank + 1] := p_position - 1;
    for r in 1..p_job.priority_rank loop
      v_ahead_rank[r] := v_depth[r];
      v_ahead_rank[p_job.priority_rank + 1] := v_ahead_rank[p_job.priority_rank + 1] - v_depth[r];
    end loop;
  end if;

  -- Per renderer: its cap, pause, running renders, the jobs ahead on it (those of its job types' priorities) and
  -- its mean render time.
  select array_agg(rc.renderer), array_agg(rc.max_concurrent), array_agg(r.paused),
         array_agg((select count(*) from unnest(v_run_renderer) u where u = rc.renderer)),
         array_agg(coalesce(a.ahead, 0)), array_agg(m.seconds)
    into v_names, v_caps, v_paused, v_busy, v_ahead, v_means
    from private.renderer_caps() rc
    join public.renderers r on r.name = rc.renderer
    left join (select t.default_renderer, sum(greatest(v_ahead_rank[t.rank], 0) / t.shares) as ahead
                 from (select case jt.priority when 'high' then 1 when 'medium' then 2 else 3 end as rank,
                              jt.default_renderer, count(*) over (partition by jt.priority) as shares
                         from public.job_types jt) t
                group by t.default_renderer) a on a.default_renderer = rc.renderer
    left join unnest(v_mean_renderer, v_mean_type, v_mean_seconds) m(renderer, job_type, seconds)
      on m.renderer = rc.renderer and m.job_type is null;
  v_own := array_position(v_names, p_job.renderer);
  v_cap := v_caps[v_own];
  if coalesce(v_global, 0) <= 0 or v_cap = 0 then return null; end if;

  -- A user at max_processing_per_user waits at least until the first of their running jobs should end.
  select min(u.remaining) into v_user_wait from unnest(v_run_user, v_run_remaining) u(user_id, remaining)
   where u.user_id = p_job.user_id
  having count(*) >= v_cfg.max_processing_per_user;
  v_user_wait := coalesce(v_user_wait, 0);

  -- Claimable now beside a free slot: it starts at the next pass unless a claimable job ahead takes the slot
  -- first (jobs still queued beside a free slot are mostly held back: backoff, run_at, their user's limit).
  -- Looked at with strict priority and at most 63 jobs ahead (one short range of the claim-order index).
  if v_user_wait = 0 and p_job.next_attempt_at <= p_now and p_position <= 64
     and v_cfg.high_priority_offset_minutes is null
     and cardinality(v_run_renderer) < v_global and (v_cap is null or v_busy[v_own] < v_cap)
     and (select count(*) from public.jobs j
           where j.status = 'queued'
             and (j.priority_rank, j.created_at, j.id) < (p_job.priority_rank, p_job.created_at, p_job.id)
             and j.next_attempt_at <= p_now
             and j.renderer in (select x.name from unnest(v_names, v_caps, v_paused, v_busy) x(name, cap, paused, busy)
                                 where not x.paused and (x.cap is null or x.busy < x.cap))
             and (j.user_id is null
                  or j.user_id not in (select u.user_id from unnest(v_run_user) u(user_id) where u.user_id is not null
                                        group by u.user_id having count(*) >= v_cfg.max_processing_per_user)))
         < least(v_global - cardinality(v_run_renderer), coalesce(v_cap - v_busy[v_own], v_global)) then
    return 0;
  end if;

  -- Which renderers keep their global slots (blockers: another capped renderer with a backlog ahead of this
  -- job) and which jobs ahead share the rest (paused renderers' jobs start nothing).
  for i in 1..cardinality(v_names) loop
    continue when v_ahead[i] <= 0 or (v_paused[i] and i <> v_own);
    if i <> v_own and v_caps[i] < v_global then
      v_blockers := v_blockers || v_names[i];
      v_reserved := v_reserved + least(v_caps[i], v_busy[i] + v_ahead[i]);
    else
      v_shared := v_shared + v_ahead[i];
      v_work := v_work + v_ahead[i] * v_means[i];
    end if;
  end loop;
  v_mean_own := v_means[v_own];
  v_mean := coalesce(v_work / nullif(v_shared, 0), v_mean_own);

  -- Its renderer's own slots (renderer caps do not change at peak boundaries).
  if v_cap is not null then
    select coalesce(array_agg(u.remaining), '{}') into v_ends
      from unnest(v_run_renderer, v_run_remaining) u(renderer, remaining) where u.renderer = p_job.renderer;
    v_own_start := private.pool_start(private.pool_departures(v_ends, v_mean_own, v_cap), v_mean_own, v_cap,
                                      v_ahead[v_own] + 1);
  end if;
  -- The global slots it shares.
  v_slots := greatest(v_global - v_reserved, 1);
  select coalesce(array_agg(u.remaining), '{}') into v_ends
    from unnest(v_run_renderer, v_run_remaining) u(renderer, remaining) where u.renderer <> all (v_blockers);
  v_ends := private.pool_departures(v_ends, v_mean, v_slots);
  v_start := private.pool_start(v_ends, v_mean, v_slots, v_shared + 1);

  -- Capacity that changes before it would start: the starts made by the boundary, then stretch by stretch
  -- (at most 8 boundaries ahead; past them, the last capacity). Slots opened at a boundary start jobs there;
  -- slots taken back swallow the next ends.
  if v_start > 0 then v_t := private.next_peak_boundary(p_now); end if;
  if v_t is not null and v_start > extract(epoch from (v_t - p_now)) then
    v_left := v_shared + 1 - private.pool_starts_within(v_ends, v_mean, v_slots, extract(epoch from (v_t - p_now)));
    for i in 1..8 loop
      select greatest(q.effective - v_reserved, 1), q.effective into v_new, v_global from private.queue_capacity(v_t) q;
      if v_global <= 0 then return null; end if;
      v_left := v_left - (v_new - v_slots);
      v_slots := v_new;
      if v_left <= 0 then
        v_start := extract(epoch from (v_t - p_now));
        exit;
      end if;
      v_next := private.next_peak_boundary(v_t);
      if v_next is null or i = 8 or v_left * v_mean / v_slots <= extract(epoch from (v_next - v_t)) then
        v_start := extract(epoch from (v_t - p_now)) + v_left * v_mean / v_slots;
        exit;
      end if;
      v_left := v_left - extract(epoch from (v_next - v_t)) * v_slots / v_mean;
      v_t := v_next;
    end loop;
  end if;

  return ceil(round(greatest(v_start, v_own_start, v_user_wait,  -- round: 1 / (1 / 120) is 120 and a bit
                             extract(epoch from (p_job.next_attempt_at - p_now)), 0), 6))::integer;
end $$;
