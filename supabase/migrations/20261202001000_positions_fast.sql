-- Positions and estimates cheaper (issue 12: "exact position + estimate at 100,000 waiting: p99 ≤ 5 ms"; every
-- enqueue also returns its job's place). Same results, less work:
--   - job_queue_position counts the nearer end of its priority's queued jobs, the other end following from
--     the exact queued depth of the priority (public.queue_depth_slots): a job in the middle of 100,000 was
--     counting all the jobs ahead of it;
--   - job_wait gives the estimate, the wait reason and the estimate's basis in one call, reading the shared
--     inputs (config, pauses, endpoints, capacity, running renders, render times) once; it replaces
--     job_wait_estimate, job_wait_reason and renderer_has_history, which each read them again;
--   - the estimate reads the next 9 peak boundaries in one query (peak_boundaries) and asks queue_capacity
--     once per kind of instant (peak, off-peak), not at every boundary; next_peak_boundary and
--     is_queue_admin are plpgsql, whose plans a session keeps (an SQL function that is not inlined is parsed
--     and planned again in every transaction);
--   - the estimate's "claimable now" check (positions 1-64) reads the head of jobs_position_order up to the
--     job: its row comparison on jobs_claim_order, after the renderer, did not stop at the job and walked the
--     renderer's whole queue (20 ms per head job at 100,000 waiting, for every head job of every pass);
--   - a job whose renderer has no usable endpoint has no estimate (null, wait_reason no_endpoint): no claim
--     starts it until an endpoint is back, so "about 0 s" was wrong.

-- job_queue_position: position of a queued job in claim order (null otherwise). Internal; used by job_to_json.
create or replace function private.job_queue_position(p_job public.jobs) returns integer
language plpgsql stable security definer set search_path = '' set jit = off as $$
declare
  v_higher bigint;
  v_same bigint;
  v_ahead bigint := 0;
  v_behind bigint;
  v_first timestamptz;
  v_last timestamptz;
  v_offsets interval[];
  v_key timestamptz;
begin
  if p_job.status <> 'queued' then return null; end if;
  -- priority_offsets (an SQL function, planned again in every transaction) only when they are set (all or none)
  if (select c.high_priority_offset_minutes from public.job_queue_config c limit 1) is not null then
    v_offsets := private.priority_offsets();
  end if;
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
  -- Strict priority: every queued job of a higher priority, then those of its own ahead of it. Its own are
  -- counted from the nearer end (ahead + behind + 1 = the priority's exact queued depth, in this snapshot as
  -- the counters are written with the rows): which end is nearer is read off its created_at between the
  -- first and the last of its priority (two index probes). Where arrivals are very uneven the guess can be
  -- wrong: it then counts more, at worst the whole priority, as the count of every job ahead did before.
  -- (A count stopped at half the depth would bound that, but its LIMIT costs 15 % on every count.)
  select coalesce(sum(d.n) filter (where d.priority_rank < p_job.priority_rank), 0),
         coalesce(sum(d.n) filter (where d.priority_rank = p_job.priority_rank), 0)
    into v_higher, v_same
    from public.queue_depth_slots d;
  select j.created_at into v_first from public.jobs j
   where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p_job.priority_rank
   order by j.created_at, j.id limit 1;
  select j.created_at into v_last from public.jobs j
   where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p_job.priority_rank
   order by j.created_at desc, j.id desc limit 1;
  if v_last - p_job.created_at <= p_job.created_at - v_first then
    select count(*) into v_behind from public.jobs j
     where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p_job.priority_rank
       and (j.created_at, j.id) > (p_job.created_at, p_job.id);
    v_ahead := greatest(v_same - v_behind - 1, 0);
  else
    select count(*) into v_ahead from public.jobs j
     where j.status = 'queued' and j.lease_expires_at is null and j.priority_rank = p_job.priority_rank
       and (j.created_at, j.id) < (p_job.created_at, p_job.id);
  end if;
  return (v_higher + v_ahead + 1)::integer;
end $$;

-- peak_boundaries: the next 9 instants after p_after at which a peak window begins or ends (local times in
-- peak_time_zone), in order; empty when there are no windows. Every local day has a boundary when any
-- exists, so days 0..9 from p_after's hold them. The estimate walks up to 9: one query (its plan kept by the
-- session; constants, so the generic plan is the small one) instead of a next_peak_boundary call for each.
create function private.peak_boundaries(p_after timestamptz) returns timestamptz[]
language plpgsql stable security definer set search_path = '' set jit = off as $$
begin
  return array(
    select distinct b.at
      from (select c.* from public.job_queue_config c limit 1) c  -- the one row (job_queue_config_singleton)
     cross join lateral (select c.peak_hour_start as t where c.peak_hour_start <> c.peak_hour_end
                         union all select c.peak_hour_end where c.peak_hour_start <> c.peak_hour_end
                         union all select w.starts_at from public.peak_windows w
                         union all select w.ends_at from public.peak_windows w) x
     cross join lateral (select (date_trunc('day', p_after at time zone c.peak_time_zone) + d * interval '1 day' + x.t)
                                  at time zone c.peak_time_zone as at
                           from generate_series(0, 9) d) b
     where b.at > p_after
     order by b.at
     limit 9);
end $$;

-- next_peak_boundary: the first of them, or null when there are no windows. plpgsql, whose plan a session
-- keeps: as an SQL function (not inlined: security definer) it was parsed and planned in every transaction.
create or replace function private.next_peak_boundary(p_after timestamptz) returns timestamptz
language plpgsql stable security definer set search_path = '' as $$
begin
  return (private.peak_boundaries(p_after))[1];
end $$;

-- job_wait: why a queued job waits (wait_reason), when a claim should start it (estimated_wait_seconds) and
-- what that rests on (estimate_basis); all null for a job that is not queued. Internal; used by job_to_json.
-- docs/ARCHITECTURE.md "The estimate".
--   wait_reason          the first that applies: paused, scheduled / retry_backoff, no_endpoint, user_limit,
--                        renderer_busy, capacity, behind (API.md)
--   ahead per renderer   the jobs ahead (position - 1) split by priority with the queue counters, each
--                        priority's jobs counted on its job types' renderer
--   own slots            a capped renderer: its (ahead + 1)-th start on its own slots
--   global slots         the (ahead + 1)-th start on the global slots, less those that other capped renderers
--                        with a backlog ahead keep (their backlog holds them), across peak-window boundaries
--   wait                 the later of the two; at least until its run_at / backoff and, for a user at
--                        max_processing_per_user, until their first running job should end. 0 when it could
--                        be claimed now and no claimable job ahead would take the free slot first.
--                        Null while paused, with no capacity, or with no usable endpoint for its renderer
--                        (no claim starts it until one is back).
create function private.job_wait(p_job public.jobs, p_position integer, p_now timestamptz,
                                 out estimated_wait_seconds integer, out wait_reason text, out estimate_basis text)
language plpgsql stable security definer set search_path = '' set plan_cache_mode = force_generic_plan set jit = off as $$
declare
  v_cfg public.job_queue_config;
  v_renderer_paused boolean;
  v_endpoint boolean;
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
  v_bounds timestamptz[];   -- the next 9 peak boundaries
  v_peak boolean;
  v_peak_capacity integer[] := array[null, null];  -- effective capacity at peak, off peak
begin
  if p_job.status <> 'queued' then return; end if;
  -- history: its renderer completed a render in the last 24 h (what recent_render_seconds averages)
  estimate_basis := case when exists (select 1 from public.jobs j
                                       where j.status = 'completed' and j.renderer = p_job.renderer
                                         and j.completed_at > p_now - interval '24 hours' and j.completed_at <= p_now)
                         then 'history' else 'default' end;
  select * into v_cfg from public.job_queue_config limit 1;
  select r.paused into v_renderer_paused from public.renderers r where r.name = p_job.renderer;
  if v_cfg.paused or v_renderer_paused then
    wait_reason := 'paused';
    return;
  end if;
  v_endpoint := exists (select 1 from public.render_endpoints e
                         where e.renderer = p_job.renderer and not e.disabled
                           and (e.unhealthy_until is null or e.unhealthy_until <= p_now));
  select q.effective, q.peak into v_global, v_peak from private.queue_capacity(p_now) q;
  v_peak_capacity[case when v_peak then 1 else 2 end] := v_global;

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
  if p_position is not null then
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

  wait_reason := case
    when p_job.next_attempt_at > p_now then case when p_job.retry_count > 0 then 'retry_backoff' else 'scheduled' end
    when not v_endpoint then 'no_endpoint'
    when p_job.user_id is not null
         and v_cfg.max_processing_per_user <= (select count(*) from unnest(v_run_user) u where u = p_job.user_id)
      then 'user_limit'
    when v_cap is not null and v_busy[v_own] >= v_cap then 'renderer_busy'
    when cardinality(v_run_renderer) >= v_global then 'capacity'
    else 'behind' end;

  if p_position is null or not v_endpoint or coalesce(v_global, 0) <= 0 or v_cap = 0 then return; end if;

  -- A user at max_processing_per_user waits at least until the first of their running jobs should end.
  select min(u.remaining) into v_user_wait from unnest(v_run_user, v_run_remaining) u(user_id, remaining)
   where u.user_id = p_job.user_id
  having count(*) >= v_cfg.max_processing_per_user;
  v_user_wait := coalesce(v_user_wait, 0);

  -- Claimable now beside a free slot: it starts at the next pass unless a claimable job ahead takes the slot
  -- first (jobs still queued beside a free slot are mostly held back: backoff, run_at, their user's limit).
  -- Looked at with strict priority and at most 63 jobs ahead: the head of jobs_position_order up to this job,
  -- in its order (a row comparison on the claim-order index, after its renderer, does not stop at this job:
  -- it walked the renderer's whole queue).
  if v_user_wait = 0 and p_job.next_attempt_at <= p_now and p_position <= 64
     and v_cfg.high_priority_offset_minutes is null
     and cardinality(v_run_renderer) < v_global and (v_cap is null or v_busy[v_own] < v_cap)
     and (select count(*) from (
            select j.renderer, j.user_id, j.next_attempt_at from public.jobs j
             where j.status = 'queued' and j.lease_expires_at is null
               and (j.priority_rank, j.created_at, j.id) < (p_job.priority_rank, p_job.created_at, p_job.id)
             order by j.priority_rank, j.created_at, j.id
             limit 64) j
           where j.next_attempt_at <= p_now
             and j.renderer in (select x.name from unnest(v_names, v_caps, v_paused, v_busy) x(name, cap, paused, busy)
                                 where not x.paused and (x.cap is null or x.busy < x.cap))
             and (j.user_id is null
                  or j.user_id not in (select u.user_id from unnest(v_run_user) u(user_id) where u.user_id is not null
                                        group by u.user_id having count(*) >= v_cfg.max_processing_per_user)))
         < least(v_global - cardinality(v_run_renderer), coalesce(v_cap - v_busy[v_own], v_global)) then
    estimated_wait_seconds := 0;
    return;
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
  if v_start > 0 then
    v_bounds := private.peak_boundaries(p_now);
    v_t := v_bounds[1];
  end if;
  if v_t is not null and v_start > extract(epoch from (v_t - p_now)) then
    v_left := v_shared + 1 - private.pool_starts_within(v_ends, v_mean, v_slots, extract(epoch from (v_t - p_now)));
    for i in 1..8 loop
      -- The capacity from this boundary on: queue_capacity's, which with the config fixed depends only on
      -- whether it is a peak instant (asked once per kind; a queue_capacity call costs several queries).
      v_peak := private.queue_is_peak(v_t);
      if v_peak_capacity[case when v_peak then 1 else 2 end] is null then
        v_peak_capacity[case when v_peak then 1 else 2 end] := (select q.effective from private.queue_capacity(v_t) q);
      end if;
      v_global := v_peak_capacity[case when v_peak then 1 else 2 end];
      v_new := greatest(v_global - v_reserved, 1);
      if v_global <= 0 then return; end if;
      v_left := v_left - (v_new - v_slots);
      v_slots := v_new;
      if v_left <= 0 then
        v_start := extract(epoch from (v_t - p_now));
        exit;
      end if;
      v_next := v_bounds[i + 1];  -- next_peak_boundary(v_t)
      if v_next is null or i = 8 or v_left * v_mean / v_slots <= extract(epoch from (v_next - v_t)) then
        v_start := extract(epoch from (v_t - p_now)) + v_left * v_mean / v_slots;
        exit;
      end if;
      v_left := v_left - extract(epoch from (v_next - v_t)) * v_slots / v_mean;
      v_t := v_next;
    end loop;
  end if;

  estimated_wait_seconds := ceil(round(greatest(v_start, v_own_start, v_user_wait,  -- round: 1 / (1 / 120) is 120 and a bit
                                                extract(epoch from (p_job.next_attempt_at - p_now)), 0), 6))::integer;
end $$;

-- job_to_json_at: the Job JSON of job_to_json with its queue position given. Internal.
create or replace function private.job_to_json_at(p_job public.jobs, p_position integer, p_now timestamptz) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_wait record;
begin
  -- only a queued job has a place: the others skip the helpers (their events are on the claim/complete path)
  if p_job.status = 'queued' then
    select * into v_wait from private.job_wait(p_job, p_position, p_now);
  else
    select null::integer as estimated_wait_seconds, null::text as wait_reason, null::text as estimate_basis into v_wait;
  end if;
  return jsonb_build_object(
    'id', p_job.id,
    'job_type', p_job.job_type,
    'priority', p_job.priority,
    'status', p_job.status,
    'renderer', p_job.renderer,
    'payload', p_job.payload,
    'queue_position', p_position,
    'estimated_wait_seconds', v_wait.estimated_wait_seconds,
    'wait_reason', v_wait.wait_reason,
    'estimate_basis', v_wait.estimate_basis,
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

drop function private.job_wait_estimate(public.jobs, integer, timestamptz);
drop function private.job_wait_reason(public.jobs, timestamptz);
drop function private.renderer_has_history(text, timestamptz);

-- is_queue_admin: the same rule in plpgsql, whose plan a session keeps. Every API call asks it; as an SQL
-- function (not inlined: it sets search_path) it was parsed and planned again in every transaction, a tenth
-- of a get_job that has no position to count.
create or replace function private.is_queue_admin() returns boolean
language plpgsql stable set search_path = '' as $$
begin
  -- True for queue admins: service_role, a JWT with app_metadata.queue_role = "admin", or a direct SQL
  -- session of a privileged database role (no JWT claims, no SET ROLE: psql, the SQL editor, pg_cron).
  -- Any caller may ask. This is the only place the rule lives.
  return case
    when nullif(current_setting('request.jwt.claims', true), '') is not null then
      coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role', '') = 'service_role'
      or coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb -> 'app_metadata' ->> 'queue_role', '') = 'admin'
    when current_setting('role') = 'service_role' then true
    when current_setting('role') = 'none' then
      exists (select 1 from pg_catalog.pg_roles r
               where r.rolname = session_user and (r.rolsuper or r.rolname in ('postgres', 'supabase_admin')))
    else false
  end;
end $$;
