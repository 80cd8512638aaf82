-- Claims that scale with their callers, every cap still exact (issue 12).
--
-- Before: every claim took one global advisory lock and held it through its commit's WAL flush, so claims
-- ran one at a time whatever the number of workers. Now capacity is a semaphore in rows:
--   * private.capacity_slots holds one row per unit of capacity: scope 'global' (slots below the effective
--     capacity count) and 'renderer:<name>' for a capped renderer (slots below its cap count).
--   * A claim locks its candidate job, then takes a free slot of its renderer and a free global slot, each
--     with FOR UPDATE SKIP LOCKED, and writes the job's id into them in its own transaction. Two claims
--     never hold the same slot row, so claims in flight plus running jobs never outnumber the slots below
--     the cap. A held slot at or above the cap (the cap was lowered while jobs ran) is first moved down
--     into a free one; while one stays above, that scope takes nothing new, so a lowered cap is never
--     exceeded by a new claim either.
--   * The per-user cap is counted under a per-user transaction lock taken without waiting: only claims of
--     the same user ever wait for each other's commit (they skip instead), and the count is fresh after it.
--   * Claims take the old claim lock in SHARED mode: they never wait for each other on it, and whoever must
--     see no claim in flight (a pause; a test changing caps atomically) takes it exclusively.
-- A job leaving processing frees its slots in a trigger: one place, whichever path ends the attempt.
-- The monotonic counters that every claim and outcome bumped (a hot row each) are sharded like the depth.

create table private.capacity_slots (
  scope text not null check (scope = 'global' or scope ~ '^renderer:[a-z][a-z0-9_]*$'),
  slot integer not null check (slot >= 0),
  job_id uuid,
  primary key (scope, slot)
);
comment on table private.capacity_slots is
  'Capacity as rows: a processing job holds one global slot and, when its renderer is capped, one slot of '
  'it. Slots below the scope''s cap count; rows are never removed (a lowered cap just counts fewer).';
alter table private.capacity_slots enable row level security;
-- A job holds at most one slot per scope; also the lookup when it leaves processing.
create unique index capacity_slots_held on private.capacity_slots (job_id, scope) where job_id is not null;

-- ensure_capacity_slots: slot rows for every cap as configured now (caps only ever add rows). Internal.
create function private.ensure_capacity_slots() returns void
language sql security definer set search_path = '' as $$
  insert into private.capacity_slots (scope, slot)
  select 'global', g
    from public.job_queue_config c,
         generate_series(0, greatest(c.max_concurrent_renders,
                                     floor(c.max_concurrent_renders * c.peak_worker_multiplier)::integer) - 1) g
  union all
  select 'renderer:' || rc.renderer, g
    from private.renderer_caps() rc, generate_series(0, rc.max_concurrent - 1) g
   where rc.max_concurrent is not null
  on conflict do nothing
$$;

create function private.capacity_slots__ensure() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on job_queue_config and renderers: a raised cap gets its slot rows. Called by Postgres only.
begin
  perform private.ensure_capacity_slots();
  return null;
end $$;
create trigger _400_ensure_capacity_slots after insert or update on public.job_queue_config
  for each statement execute function private.capacity_slots__ensure();
create trigger _400_ensure_capacity_slots after insert or update on public.renderers
  for each statement execute function private.capacity_slots__ensure();

select private.ensure_capacity_slots();
-- Jobs running now hold slots from the start (rows added where more run than a cap allows today).
insert into private.capacity_slots (scope, slot, job_id)
select k.scope, k.slot, k.id
  from (select 'global' as scope, (row_number() over (order by j.started_at, j.id) - 1)::integer as slot, j.id
          from public.jobs j where j.status = 'processing'
        union all
        select 'renderer:' || j.renderer,
               (row_number() over (partition by j.renderer order by j.started_at, j.id) - 1)::integer, j.id
          from public.jobs j
          join private.renderer_caps() rc on rc.renderer = j.renderer and rc.max_concurrent is not null
         where j.status = 'processing') k
on conflict (scope, slot) do update set job_id = excluded.job_id;

-- take_capacity_slot: holds a free slot of p_scope below p_cap for p_job_id; false when none is free.
-- A slot at or above p_cap still held (the cap was lowered while jobs ran) first moves down into a free
-- one, where no other transaction holds either; while any stays above, the scope takes nothing new.
-- Internal; claim_jobs.
create function private.take_capacity_slot(p_scope text, p_cap integer, p_job_id uuid) returns boolean
language plpgsql security definer set search_path = '' as $$
declare
  v_above record;
  v_free integer;
  v_slot integer;
begin
  if exists (select 1 from private.capacity_slots s
              where s.scope = p_scope and s.slot >= p_cap and s.job_id is not null) then
    for v_above in
      select s.slot, s.job_id from private.capacity_slots s
       where s.scope = p_scope and s.slot >= p_cap and s.job_id is not null
       order by s.slot desc
       for update skip locked
    loop
      -- Its job's own release (under the job's row lock) must find the slot where it is.
      perform 1 from public.jobs j where j.id = v_above.job_id for update skip locked;
      continue when not found;
      select s.slot into v_free from private.capacity_slots s
       where s.scope = p_scope and s.slot < p_cap and s.job_id is null
       order by s.slot limit 1
       for update skip locked;
      exit when not found;
      update private.capacity_slots s set job_id = null where s.scope = p_scope and s.slot = v_above.slot;
      update private.capacity_slots s set job_id = v_above.job_id where s.scope = p_scope and s.slot = v_free;
    end loop;
    if exists (select 1 from private.capacity_slots s
                where s.scope = p_scope and s.slot >= p_cap and s.job_id is not null) then
      return false;
    end if;
  end if;
  -- A slot another claim holds uncommitted is skipped, never waited for: that claim owns it.
  update private.capacity_slots s set job_id = p_job_id
   where (s.scope, s.slot) = (select f.scope, f.slot from private.capacity_slots f
                               where f.scope = p_scope and f.slot < p_cap and f.job_id is null
                               order by f.slot limit 1
                               for update skip locked)
  returning s.slot into v_slot;
  return v_slot is not null;
end $$;

-- release_capacity_slots: frees the slots p_job_id holds. Internal (the jobs trigger; claim_jobs undoing).
create function private.release_capacity_slots(p_job_id uuid) returns void
language sql security definer set search_path = '' as $$
  update private.capacity_slots s set job_id = null where s.job_id = p_job_id
$$;

create function private.jobs__release_slots() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Row trigger on jobs that leave processing (any path) or are deleted while processing. Called by Postgres only.
begin
  perform private.release_capacity_slots(old.id);
  return null;
end $$;
create trigger _300_release_slots after update of status on public.jobs
  for each row when (old.status = 'processing' and new.status <> 'processing')
  execute function private.jobs__release_slots();
create trigger _300_release_slots_delete after delete on public.jobs
  for each row when (old.status = 'processing')
  execute function private.jobs__release_slots();

create function private.jobs__release_all_slots() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (truncate): no job runs any more, no slot is held. Called by Postgres only.
begin
  update private.capacity_slots s set job_id = null where s.job_id is not null;
  return null;
end $$;
create trigger _300_release_slots_truncate after truncate on public.jobs
  for each statement execute function private.jobs__release_all_slots();

-- user_claim_key: the transaction lock that serializes claims of one user's jobs (their cap count).
create function private.user_claim_key(p_user_id uuid) returns bigint
language sql immutable set search_path = '' as $$
  select pg_catalog.hashtextextended('video_queue.claim.user:' || p_user_id::text, 0)
$$;

comment on table public.job_attempts is
  'One row per claim of a job. token_hash = sha256(callback token) hex; the token itself is never stored. '
  'Capacity is held in private.capacity_slots; claims take pg_advisory_xact_lock_shared(private.claim_lock_key()).';

create or replace function queue.claim_jobs(p_worker_id text, p_limit integer default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' set jit = off set enable_seqscan = off as $$
-- Claims what capacity and pauses allow, in claim order, and starts an attempt for each. service_role only.
declare
  v_cfg public.job_queue_config;
  v_effective integer;
  v_processing bigint;
  v_room integer;
  v_claims jsonb := '[]'::jsonb;
  v_id uuid;
  v_job public.jobs;
  v_renderer_cap integer;
  v_full text[] := '{}';  -- renderers found at their cap in this call
  v_token text;
  v_endpoint_id uuid;
  v_endpoint_url text;
  v_wait_sum double precision := 0;
  v_wait_n integer := 0;
  -- Claim order: by created_at minus the priority's offset; strict priority when no offsets are set.
  v_offsets interval[] := private.claim_offsets();
  -- Candidates beyond the room: claims running side by side take (and lock) the first ones.
  c_spare constant integer := 16;
begin
  if p_worker_id is null or length(p_worker_id) = 0 then
    raise exception 'worker_id is required' using errcode = 'VQ400';
  end if;
  if p_limit is not null and p_limit < 0 then
    raise exception 'limit must not be negative' using errcode = 'VQ400';
  end if;
  -- The per-user count needs a fresh snapshot after its lock: only READ COMMITTED gives one.
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'claim_jobs must run in a READ COMMITTED transaction' using errcode = '25000';
  end if;

  -- Shared: claims never wait for each other here; a pause (exclusive) waits for the claims in flight.
  perform pg_catalog.pg_advisory_xact_lock_shared(private.claim_lock_key());

  select * into v_cfg from public.job_queue_config limit 1;
  perform private.expire_queued_jobs(p_now);
  if v_cfg.paused then return v_claims; end if;  -- a paused queue starts nothing; running jobs finish
  select q.effective into v_effective from private.queue_capacity(p_now) q;
  -- The room as committed now; the slots, not this count, decide (concurrent claims hold slots unseen here).
  select count(*) into v_processing from public.jobs j where j.status = 'processing';
  v_room := greatest(v_effective - v_processing, 0);
  if p_limit is not null then v_room := least(v_room, p_limit); end if;
  if v_room = 0 then return v_claims; end if;

  -- Per renderer with a usable endpoint and room under its cap, per priority: its first jobs in claim order
  -- (one partial-index scan each, skipping users at max_processing_per_user); merged, in claim order.
  for v_id, v_renderer_cap in
    with caps as (
      select rc.renderer, rc.max_concurrent,
             (select count(*) from public.jobs j where j.status = 'processing' and j.renderer = rc.renderer) as busy
        from private.renderer_caps() rc
        join public.renderers r on r.name = rc.renderer
       where not r.paused
         and exists (select 1 from public.render_endpoints e
                      where e.renderer = rc.renderer and not e.disabled
                        and (e.unhealthy_until is null or e.unhealthy_until <= p_now))
    ),
    room as (
      select caps.renderer, caps.max_concurrent,
             least(v_room, greatest(coalesce(caps.max_concurrent - caps.busy, v_room), 0))::integer + c_spare as n
        from caps
       where coalesce(caps.max_concurrent - caps.busy, 1) > 0
    )
    select c.id, c.max_concurrent from room
      cross join lateral (
        select x.*, room.max_concurrent from (values (0::smallint), (1::smallint), (2::smallint)) pr(rank)
          cross join lateral (
            select j.id, j.priority_rank, j.created_at, j.created_at - v_offsets[pr.rank + 1] as claim_key
              from public.jobs j
             -- `= any(array[...])`: with a plain `=` the planner takes the renderer as fixed, and then the
             -- jobs_created index looks as good as jobs_claim_order for this order; walking it past every
             -- other renderer's jobs cost up to a second per claim at 100,000 waiting. This way only
             -- jobs_claim_order gives the order, read presorted from the first matching entry.
             where j.status = 'queued' and j.renderer = any(array[room.renderer]) and j.priority_rank = pr.rank
               and j.next_attempt_at <= p_now and (j.expires_at is null or j.expires_at > p_now)
               and (v_cfg.max_processing_per_user is null or j.user_id is null
                    or (select count(*) from public.jobs u where u.user_id = j.user_id and u.status = 'processing')
                       < v_cfg.max_processing_per_user)
             order by j.renderer, j.priority_rank, j.created_at, j.id
             limit room.n) x
         order by x.claim_key, x.priority_rank, x.created_at, x.id
         limit room.n) c
     order by c.claim_key, c.priority_rank, c.created_at, c.id
     limit v_room + c_spare
  loop
    exit when jsonb_array_length(v_claims) >= v_room;
    -- A job another claim (or a cancel) holds is skipped: it is that transaction's.
    select * into v_job from public.jobs j where j.id = v_id and j.status = 'queued' for update skip locked;
    continue when not found or v_job.renderer = any(v_full);

    -- Its user's cap: counted under the user's lock (fresh after it); a user being claimed elsewhere waits.
    if v_cfg.max_processing_per_user is not null and v_job.user_id is not null then
      continue when not pg_catalog.pg_try_advisory_xact_lock(private.user_claim_key(v_job.user_id));
      continue when (select count(*) from public.jobs u where u.user_id = v_job.user_id and u.status = 'processing')
                    >= v_cfg.max_processing_per_user;
    end if;

    -- Its renderer's slot, then a global slot (none left: nothing more starts in this call).
    if v_renderer_cap is not null then
      if not private.take_capacity_slot('renderer:' || v_job.renderer, v_renderer_cap, v_job.id) then
        v_full := v_full || v_job.renderer;
        continue;
      end if;
    end if;
    if not private.take_capacity_slot('global', v_effective, v_job.id) then
      perform private.release_capacity_slots(v_job.id);
      exit;
    end if;

    -- Least-loaded usable endpoint of the renderer (load counts this claim's earlier picks too).
    select e.id, e.url into v_endpoint_id, v_endpoint_url
      from public.render_endpoints e
     where e.renderer = v_job.renderer and not e.disabled
       and (e.unhealthy_until is null or e.unhealthy_until <= p_now)
     order by (select count(*) from public.jobs p
                where p.status = 'processing' and p.renderer = e.renderer and p.endpoint_id = e.id),
              e.created_at, e.id
     limit 1;

    -- 64 hex chars from two v4 UUIDs (244 random bits); only its sha256 is stored.
    v_token := replace(gen_random_uuid()::text, '-', '') || replace(gen_random_uuid()::text, '-', '');

    update public.jobs j
       set status = 'processing', attempt = j.attempt + 1, started_at = p_now,
           lease_expires_at = private.attempt_lease(p_now, p_now),
           next_attempt_at = null, worker_id = p_worker_id, endpoint_id = v_endpoint_id,
           progress = 0, stage = null, updated_at = p_now
     where j.id = v_id
    returning * into v_job;

    insert into public.job_attempts (job_id, attempt, token_hash, worker_id, endpoint_id, endpoint_url,
                                     started_at, lease_expires_at)
    values (v_job.id, v_job.attempt, encode(sha256(convert_to(v_token, 'UTF8')), 'hex'), p_worker_id,
            v_endpoint_id, v_endpoint_url, p_now, v_job.lease_expires_at);

    if v_job.attempt = 1 then
      v_wait_sum := v_wait_sum + extract(epoch from (p_now - v_job.created_at));
      v_wait_n := v_wait_n + 1;
    end if;

    v_claims := v_claims || jsonb_build_object(
      'job_id', v_job.id, 'attempt', v_job.attempt, 'callback_token', v_token,
      'job_type', v_job.job_type, 'renderer', v_job.renderer, 'payload', v_job.payload,
      'deadline', v_job.lease_expires_at,
      'endpoint', jsonb_build_object('id', v_endpoint_id, 'url', v_endpoint_url));
  end loop;

  if jsonb_array_length(v_claims) > 0 then
    perform private.queue_counter_add('jobs_claimed_total', jsonb_array_length(v_claims));
    perform private.queue_counter_add('wait_seconds_count', v_wait_n);
    perform private.queue_counter_add('wait_seconds_sum', v_wait_sum);
  end if;
  return v_claims;
end $$;

-- Pausing waits for the claims in flight: once it returns, nothing new starts in the paused scope.
create or replace function queue.set_paused(p_paused boolean, p_renderer text default null, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
-- Pauses or resumes a scope: paused scopes claim nothing new; queued jobs keep their order. Admins only.
begin
  if not private.is_queue_admin() then
    raise exception 'only an admin may pause or resume the queue' using errcode = 'VQ403';
  end if;
  if p_paused is null then
    raise exception 'paused must be true or false' using errcode = 'VQ400';
  end if;
  perform pg_catalog.pg_advisory_xact_lock(private.claim_lock_key());
  if p_renderer is null then
    update public.job_queue_config c set paused = p_paused where c.id = (select c2.id from public.job_queue_config c2 limit 1);
  else
    update public.renderers r set paused = p_paused where r.name = p_renderer;
    if not found then
      raise exception 'unknown renderer "%"', p_renderer using errcode = 'VQ400',
        hint = format('Use one of: %s.', (select string_agg(r.name, ', ' order by r.name) from public.renderers r));
    end if;
  end if;
  return public.get_queue_stats(p_now);
end $$;

-- Counters: 16 shards per name, internal now (only get_queue_metrics reads them, as an admin's call).
create table private.queue_counter_shards (
  name text not null,
  shard smallint not null check (shard between 0 and 15),
  value double precision not null default 0,
  primary key (name, shard)
);
comment on table private.queue_counter_shards is
  'Monotonic counters, 16 shards per name so that concurrent claims and outcomes never queue on one row. '
  'Read them summed: private.queue_counters.';
alter table private.queue_counter_shards enable row level security;
insert into private.queue_counter_shards (name, shard, value)
select c.name, s, case when s = 0 then c.value else 0 end
  from public.queue_counters c, generate_series(0, 15) s;
drop table public.queue_counters;
create view private.queue_counters as
  select s.name, sum(s.value) as value from private.queue_counter_shards s group by s.name;
comment on view private.queue_counters is 'Monotonic totals (Prometheus counters), summed over their shards.';

create or replace function queue.get_queue_metrics(p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' set jit = off as $$
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

create or replace function private.queue_counter_add(p_name text, p_delta double precision default 1) returns void
language plpgsql security definer set search_path = '' as $$
-- Adds to a monotonic counter in a shard no other transaction holds (own backend's shard when all are). Internal.
declare
  v_shard smallint;
begin
  if p_delta = 0 then return; end if;
  select s.shard into v_shard from private.queue_counter_shards s
   where s.name = p_name
   order by (s.shard + pg_catalog.pg_backend_pid()) % 16
   limit 1 for update skip locked;
  update private.queue_counter_shards s set value = s.value + p_delta
   where s.name = p_name and s.shard = coalesce(v_shard, pg_catalog.pg_backend_pid() % 16);
end $$;

-- The worker's and callbacks' entry points keep index plans whatever the table looked like when a long-lived
-- connection cached its generic plans (a sequential scan, planned on an empty table, would read every
-- finished job later). Functions they call inherit both settings. claim_jobs sets them above.
alter function queue.complete_job(uuid, integer, text, jsonb, timestamptz) set enable_seqscan = off set jit = off;
alter function queue.fail_job(uuid, integer, text, text, boolean, timestamptz) set enable_seqscan = off set jit = off;
alter function queue.release_job(uuid, integer, timestamptz) set enable_seqscan = off set jit = off;
alter function queue.cancel_job(uuid, text, timestamptz) set enable_seqscan = off set jit = off;
alter function queue.recover_expired_attempts(timestamptz) set enable_seqscan = off set jit = off;
alter function queue.report_progress(uuid, integer, text, text, integer, timestamptz) set enable_seqscan = off set jit = off;
alter function queue.record_heartbeat(uuid, integer, text, timestamptz) set enable_seqscan = off set jit = off;
alter function queue.get_job(uuid, timestamptz) set enable_seqscan = off set jit = off;
