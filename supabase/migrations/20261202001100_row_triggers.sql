-- Row triggers instead of transition tables on the hot paths (issue 12).
--
-- The queued depth, the outcome buckets and the worker wake-up were statement triggers reading transition
-- tables on every INSERT and UPDATE of jobs: Postgres then copies every updated row, old and new, into two
-- tuplestores, and calls three trigger functions per statement whatever the statement changed. Measured with
-- pgbench (claim + completion as bare UPDATEs, 10 clients): ~600 jobs/s with them, 744 with those three off.
-- As row triggers with WHEN conditions nothing is copied and a function runs only for a row that matters:
-- a claim moves the depth, a completion adds to a bucket and may wake a worker. The rules are the same (each
-- function below is its statement twin applied to one row); DELETE and TRUNCATE keep their statement triggers
-- (bulk retention deletes add up per bucket there).

create function private.jobs__count_queued() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Row trigger on jobs (insert; update WHEN a row enters, leaves or moves within queued): the queued depth per
-- priority. Called by Postgres only.
begin
  if tg_op = 'UPDATE' and old.status = 'queued' then
    perform private.queue_depth_add(old.priority_rank, -1);
  end if;
  if new.status = 'queued' then
    perform private.queue_depth_add(new.priority_rank, 1);
  end if;
  return null;
end $$;

create function private.jobs__count_outcome() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Row trigger on jobs (insert or update WHEN a finished row appears, changes or goes): moves it between outcome
-- buckets, one combined change per bucket and outcome as the statement trigger made. Called by Postgres only.
declare r record;
begin
  for r in
    select f.bucket, f.outcome, sum(k.d) as n, sum(k.d * f.timed) as timed_n, sum(k.d * f.wait_seconds) as wait_sum,
           sum(k.d * f.processing_seconds) as processing_sum, max(k.completed_at) filter (where k.d > 0) as max_at
      from (select -1, old.status, old.cancel_reason, old.created_at, old.started_at, old.completed_at
             where tg_op = 'UPDATE' and old.completed_at is not null
            union all
            select 1, new.status, new.cancel_reason, new.created_at, new.started_at, new.completed_at
             where new.completed_at is not null) k(d, status, cancel_reason, created_at, started_at, completed_at)
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

create function private.jobs__wake_worker() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Row trigger on jobs (WHEN a claimable job appears or a slot is freed): wakes a listening worker. NOTIFY
-- only while one listens (its lock at commit serializes notifying transactions). Called by Postgres only.
begin
  if private.wakeup_listened() then
    perform pg_catalog.pg_notify('video_queue_wakeup', case tg_op when 'INSERT' then 'job_claimable' else 'slot_freed' end);
  end if;
  return null;
end $$;

revoke all on function private.jobs__count_queued() from public, anon, authenticated;
revoke all on function private.jobs__count_outcome() from public, anon, authenticated;
revoke all on function private.jobs__wake_worker() from public, anon, authenticated;

drop trigger _500_count_queued_insert on public.jobs;
drop trigger _500_count_queued_update on public.jobs;
drop trigger _510_count_outcomes_insert on public.jobs;
drop trigger _510_count_outcomes_update on public.jobs;
drop trigger _600_wake_worker_insert on public.jobs;
drop trigger _600_wake_worker_update on public.jobs;
drop function private.jobs_depth_after_insert();
drop function private.jobs_depth_after_update();
drop function private.jobs_outcomes_after_insert();
drop function private.jobs_outcomes_after_update();
drop function private.jobs_wake_worker_after_insert();
drop function private.jobs_wake_worker_after_update();

create trigger _500_count_queued_insert after insert on public.jobs
  for each row when (new.status = 'queued')
  execute function private.jobs__count_queued();
create trigger _500_count_queued_update after update on public.jobs
  for each row when ((old.status = 'queued') <> (new.status = 'queued')
                     or (old.status = 'queued' and old.priority_rank <> new.priority_rank))
  execute function private.jobs__count_queued();

create trigger _510_count_outcomes_insert after insert on public.jobs
  for each row when (new.completed_at is not null)
  execute function private.jobs__count_outcome();
create trigger _510_count_outcomes_update after update on public.jobs
  for each row when ((old.completed_at is not null or new.completed_at is not null)
                     and (old.status, old.cancel_reason, old.created_at, old.started_at, old.completed_at)
                         is distinct from (new.status, new.cancel_reason, new.created_at, new.started_at, new.completed_at))
  execute function private.jobs__count_outcome();

create trigger _600_wake_worker_insert after insert on public.jobs
  for each row when (new.status = 'queued' and new.next_attempt_at <= now())
  execute function private.jobs__wake_worker();
create trigger _600_wake_worker_update after update on public.jobs
  for each row when ((old.status = 'processing' and new.status <> 'processing')
                     or (old.status <> 'queued' and new.status = 'queued' and new.next_attempt_at <= now()))
  execute function private.jobs__wake_worker();
