-- Realtime progress (API.md "Realtime"): the database broadcasts every change a user cares about on the
-- private topic `job:<job id>` with Supabase Realtime's realtime.send (Broadcast from the database), and the
-- queue's stats on `queue:admin`. RLS policies on realtime.messages decide who may join a topic: Realtime
-- checks them as the joining user (role and JWT claims set, realtime.topic() = the topic) before it lets a
-- private channel join. This file only creates policies on realtime.messages and calls realtime.send, which
-- a hosted project allows; the realtime schema itself is Supabase's (locally: scripts/stack/bootstrap.sql).
--
-- Two sources of events (docs/ARCHITECTURE.md, "Realtime"):
--   - a row trigger on jobs: each change of status, stage or progress, O(1) and cheap (the Job of a job that
--     is not queued has no position to compute);
--   - private.publish_queue_changes, once per worker pass and on pause/resume: the places (position,
--     estimate, wait reason) of waiting jobs, which every claim changes for the whole queue. It looks at a
--     bounded number of jobs per call (the head of the queue, and a slice of the rest taken in turn) and
--     sends only where the place moved meaningfully since the job's last event (private.realtime_job_marks).

-- Who may receive a topic ------------------------------------------------------------------------------------

-- can_receive_realtime_topic: may the caller receive p_topic? `job:<id>`: the job's owner or an admin;
-- `queue:admin`: admins (private.is_queue_admin). Asked by the RLS policy on realtime.messages.
create function queue.can_receive_realtime_topic(p_topic text) returns boolean
language plpgsql stable security definer set search_path = '' as $$
begin
  if p_topic = 'queue:admin' then
    return private.is_queue_admin();
  end if;
  if p_topic !~* '^job:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' then
    return false;
  end if;
  return private.is_queue_admin()
      or exists (select 1 from public.jobs j
                  where j.id = substr(p_topic, 5)::uuid and j.user_id is not null and j.user_id = auth.uid());
end $$;
revoke all on function queue.can_receive_realtime_topic(text) from public;
grant execute on function queue.can_receive_realtime_topic(text) to authenticated, service_role;

-- Receiving (and joining: Realtime probes with a SELECT) is allowed on the topics above; sending is not
-- (no insert policy): only the database broadcasts on them.
create policy "queue topics: owners and admins receive"
  on realtime.messages for select to authenticated
  using (realtime.messages.extension = 'broadcast' and queue.can_receive_realtime_topic(realtime.messages.topic));

-- The Job JSON with a given position ---------------------------------------------------------------------------

-- job_to_json_at: the Job JSON of job_to_json with its queue position given (publish_queue_changes counts the
-- positions of a whole run of jobs at once). Internal.
create function private.job_to_json_at(p_job public.jobs, p_position integer, p_now timestamptz) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
begin
  return jsonb_build_object(
    'id', p_job.id,
    'job_type', p_job.job_type,
    'priority', p_job.priority,
    'status', p_job.status,
    'renderer', p_job.renderer,
    'payload', p_job.payload,
    -- only a queued job has a place: the others skip the helpers (their events are on the claim/complete path)
    'queue_position', p_position,
    'estimated_wait_seconds', case when p_job.status = 'queued' then private.job_wait_estimate(p_job, p_position, p_now) end,
    'wait_reason', case when p_job.status = 'queued' then private.job_wait_reason(p_job, p_now) end,
    'estimate_basis', case when p_job.status = 'queued' then
                        case when private.renderer_has_history(p_job.renderer, p_now) then 'history' else 'default' end end,
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

create or replace function private.job_to_json(p_job public.jobs, p_now timestamptz default now()) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
-- Job JSON with fresh queue_position and estimated_wait_seconds. Service role (and the queue functions).
begin
  return private.job_to_json_at(p_job, case when p_job.status = 'queued' then private.job_queue_position(p_job) end,
                                p_now);
end $$;

-- What the last event of each waiting job said --------------------------------------------------------------

-- No foreign key to jobs on purpose: its KEY SHARE lock, taken while a mark is written, would make claim_jobs
-- (FOR UPDATE SKIP LOCKED) skip that job. Unlogged: a mark lost in a crash only costs one more event.
create unlogged table private.realtime_job_marks (
  job_id uuid primary key,
  queue_position integer,
  estimated_wait_seconds integer,
  wait_reason text,
  sent_at timestamptz not null
);
alter table private.realtime_job_marks enable row level security;
comment on table private.realtime_job_marks is
  'The place (position, estimate, wait reason) the last job event of each queued job announced; publish_queue_changes sends another only when it moved meaningfully. Written by the publisher and the jobs__broadcast trigger; a finished job''s mark is deleted.';

-- The publisher's own state: where its walk through the queue stands, and the stats it last sent.
create table private.realtime_publisher (
  singleton boolean primary key default true check (singleton),
  walk_after_rank smallint,
  walk_after_created_at timestamptz,
  walk_after_id uuid,
  walked_at timestamptz,
  stats jsonb
);
alter table private.realtime_publisher enable row level security;
insert into private.realtime_publisher default values;
comment on table private.realtime_publisher is
  'publish_queue_changes''s state (one row): the last job its walk through the rest of the queue looked at (claim order), when, and the stats last sent on queue:admin.';

-- realtime_exact_positions: how many jobs at the front of the queue hear of every move of their position.
create function private.realtime_exact_positions() returns integer
language sql immutable set search_path = '' as $$ select 10 $$;

-- realtime_place_moved: has a waiting job's place moved enough since its last event (p_mark) to send another?
-- Its position: any move within the first realtime_exact_positions(), further back a move of a fifth. Its
-- estimate: appearing or vanishing, or a move of a fifth (at least 30 s). Its wait reason: any change.
create function private.realtime_place_moved(p_mark private.realtime_job_marks, p_job jsonb, p_exact integer)
returns boolean
language plpgsql immutable set search_path = '' as $$
declare
  v_position integer := (p_job ->> 'queue_position')::integer;
  v_estimate integer := (p_job ->> 'estimated_wait_seconds')::integer;
begin
  return p_mark.job_id is null
      or p_mark.wait_reason is distinct from p_job ->> 'wait_reason'
      or coalesce(p_mark.queue_position <> v_position
                  and (least(p_mark.queue_position, v_position) <= p_exact
                       or abs(p_mark.queue_position - v_position) * 5 >= p_mark.queue_position), false)
      or (p_mark.estimated_wait_seconds is null) <> (v_estimate is null)
      or coalesce(abs(p_mark.estimated_wait_seconds - v_estimate) >= greatest(30, p_mark.estimated_wait_seconds / 5),
                  false);
end $$;

-- publish_job: sends the job event (the Job JSON) on the job's topic. Internal.
create function private.publish_job(p_job jsonb) returns void
language plpgsql security definer set search_path = '' as $$
begin
  perform realtime.send(p_job, 'job', 'job:' || (p_job ->> 'id'), true);
end $$;

-- mark_job_place: records the place a waiting job's event announced (publisher and trigger). Internal.
create function private.mark_job_place(p_job jsonb, p_now timestamptz) returns void
language plpgsql security definer set search_path = '' as $$
begin
  insert into private.realtime_job_marks as m (job_id, queue_position, estimated_wait_seconds, wait_reason, sent_at)
  values ((p_job ->> 'id')::uuid, (p_job ->> 'queue_position')::integer,
          (p_job ->> 'estimated_wait_seconds')::integer, p_job ->> 'wait_reason', p_now)
  on conflict (job_id) do update
    set queue_position = excluded.queue_position, estimated_wait_seconds = excluded.estimated_wait_seconds,
        wait_reason = excluded.wait_reason, sent_at = excluded.sent_at;
end $$;

-- Events on each change of a job ------------------------------------------------------------------------------

-- jobs__broadcast: trigger on jobs (status, stage or progress changed): sends the job event; a job back in the
-- queue gets its mark, a finished one loses it. Called by Postgres only.
create function private.jobs__broadcast() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  -- the time of the change: the state writers set updated_at to their p_now, other updates to now()
  v_job jsonb := private.job_to_json(new, new.updated_at);
begin
  perform private.publish_job(v_job);
  if new.status = 'queued' then
    perform private.mark_job_place(v_job, new.updated_at);
  elsif new.status in ('completed', 'failed', 'cancelled') and old.status is distinct from new.status then
    -- SKIP LOCKED: a publisher writing this mark right now is never waited for (nor deadlocked with)
    delete from private.realtime_job_marks m
     where m.job_id = (select k.job_id from private.realtime_job_marks k where k.job_id = new.id
                          for update skip locked);
  end if;
  return null;
end $$;

create trigger _600_broadcast_change after update on public.jobs
  for each row
  when (old.status is distinct from new.status or old.stage is distinct from new.stage
        or old.progress is distinct from new.progress)
  execute function private.jobs__broadcast();

-- Events on the places of waiting jobs --------------------------------------------------------------------------

-- queued_in_claim_order: up to p_limit queued jobs in claim order (queue_position order), starting after the
-- job (p_after_rank, p_after_created_at, p_after_id), or at the front. One index range scan per priority on
-- jobs_queued_order, from the cursor's place in that priority: with priority offsets at its claim key moved
-- to that priority's terms; with strict priority all of a higher priority lies before it, all of a lower
-- after. Internal.
create function private.queued_in_claim_order(
  p_limit integer, p_after_rank smallint default null, p_after_created_at timestamptz default null,
  p_after_id uuid default null
) returns setof public.jobs
language plpgsql stable security definer set search_path = '' as $$
begin
  return query
  with o as materialized (select private.priority_offsets() as off, private.claim_offsets() as claim_off)
  select x.* from o
   cross join (values (0::smallint), (1::smallint), (2::smallint)) pr(rank)
   cross join lateral (
     select j.* from public.jobs j
      where j.status = 'queued' and j.priority_rank = pr.rank
        -- one row comparison whatever the cursor, so that it is always the index scan's start
        and (j.created_at, j.id) >
            (case when p_after_rank is null then '-infinity'::timestamptz
                  when o.off is not null then p_after_created_at - o.off[p_after_rank + 1] + o.off[pr.rank + 1]
                  when pr.rank < p_after_rank then 'infinity'::timestamptz
                  when pr.rank = p_after_rank then p_after_created_at
                  else '-infinity'::timestamptz end,
             -- a tie on the claim key goes to the higher priority
             case when pr.rank < p_after_rank then 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid
                  when pr.rank = p_after_rank then p_after_id
                  else '00000000-0000-0000-0000-000000000000'::uuid end)
      order by j.created_at, j.id
      limit p_limit) x
   order by x.created_at - o.claim_off[x.priority_rank + 1], x.priority_rank, x.created_at, x.id
   limit p_limit;
end $$;

-- realtime_publish_lock_key: the key publish_queue_changes serializes on (a second caller skips).
create function private.realtime_publish_lock_key() returns bigint
language sql immutable set search_path = '' as $$
  select pg_catalog.hashtextextended('video_queue.realtime_publish', 0)
$$;

-- publish_queue_changes: sends a job event to each waiting job whose place moved meaningfully, looking at the
-- first realtime_exact_positions() jobs on every call and at the next 50 of the rest (in turn, from front
-- to back, at most once a second), and the stats on queue:admin when they changed. Returns the stats.
-- At most one caller publishes at a time; the others only read the stats. Worker passes, pause and resume.
create function private.publish_queue_changes(p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' set jit = 'off' as $$
declare
  v_stats jsonb := public.get_queue_stats(p_now);
  v_state private.realtime_publisher;
  v_head integer := private.realtime_exact_positions();
  v_walk constant integer := 50;
  v_job public.jobs;
  v_last public.jobs;
  v_position integer := 0;
  v_seen integer := 0;
begin
  if not pg_catalog.pg_try_advisory_xact_lock(private.realtime_publish_lock_key()) then
    return v_stats;
  end if;
  select * into v_state from private.realtime_publisher;

  -- The head: exact positions, every call (claims move them all).
  for v_job in select * from private.queued_in_claim_order(v_head) loop
    v_position := v_position + 1;
    perform private.publish_place(v_job, v_position, p_now);
    v_last := v_job;
  end loop;

  -- The rest: the next slice of the walk, which starts behind the head, goes to the back of the queue, then
  -- starts again. A slice is a run of consecutive positions: one count places it.
  if v_position = v_head and (v_state.walked_at is null or v_state.walked_at <= p_now - interval '1 second') then
    if v_state.walk_after_id is not null then
      v_last.priority_rank := v_state.walk_after_rank;
      v_last.created_at := v_state.walk_after_created_at;
      v_last.id := v_state.walk_after_id;
    end if;
    for v_job in
      select * from private.queued_in_claim_order(v_walk, v_last.priority_rank, v_last.created_at, v_last.id)
    loop
      v_position := case when v_seen = 0 then private.job_queue_position(v_job) else v_position + 1 end;
      v_seen := v_seen + 1;
      if v_position > v_head then
        perform private.publish_place(v_job, v_position, p_now);
      end if;
      v_last := v_job;
    end loop;
    update private.realtime_publisher
       set walk_after_rank = case when v_seen = v_walk then v_last.priority_rank end,
           walk_after_created_at = case when v_seen = v_walk then v_last.created_at end,
           walk_after_id = case when v_seen = v_walk then v_last.id end,
           walked_at = p_now;
  end if;

  -- The stats, when anything but the clock moved them.
  if v_state.stats is distinct from v_stats - 'generated_at' - 'oldest_queued_seconds' then
    perform realtime.send(v_stats, 'stats', 'queue:admin', true);
    update private.realtime_publisher set stats = v_stats - 'generated_at' - 'oldest_queued_seconds';
  end if;
  return v_stats;
end $$;

-- publish_place: sends a waiting job's event when its place moved meaningfully, and marks what it announced.
-- Internal (publish_queue_changes).
create function private.publish_place(p_job public.jobs, p_position integer, p_now timestamptz) returns void
language plpgsql security definer set search_path = '' as $$
declare
  v_job jsonb := private.job_to_json_at(p_job, p_position, p_now);
  v_mark private.realtime_job_marks;
begin
  select * into v_mark from private.realtime_job_marks m where m.job_id = p_job.id;
  if private.realtime_place_moved(v_mark, v_job, private.realtime_exact_positions()) then
    perform private.publish_job(v_job);
    perform private.mark_job_place(v_job, p_now);
  end if;
end $$;

-- publish_queue_changes for the worker (a pass calls it once, after its claims): returns the stats.
create function queue.publish_queue_changes(p_now timestamptz default now()) returns jsonb
language sql security definer set search_path = '' as $$
  select private.publish_queue_changes(p_now)
$$;
revoke all on function queue.publish_queue_changes(timestamptz) from public;
grant execute on function queue.publish_queue_changes(timestamptz) to service_role;

-- paused__publish: trigger on job_queue_config and renderers (paused changed): pausing or resuming changes the
-- wait reason and estimate of every waiting job, so the queue's changes are published at once, in the same
-- transaction, whoever pauses (set_paused, or an operator's UPDATE). Called by Postgres only.
create function private.paused__publish() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform private.publish_queue_changes(now());
  return null;
end $$;

create trigger _600_publish_pause after update of paused on public.job_queue_config
  for each row when (old.paused is distinct from new.paused) execute function private.paused__publish();
create trigger _600_publish_pause after update of paused on public.renderers
  for each row when (old.paused is distinct from new.paused) execute function private.paused__publish();
