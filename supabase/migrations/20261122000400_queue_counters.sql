-- Counters. (1) queued-job depth per priority, kept by statement triggers, so that a position lookup
-- and get_queue_stats() never count the whole queue; (2) monotonic totals for Prometheus.

-- (1) Depth per priority, sharded into 16 slots per priority so concurrent writers rarely touch the same
-- row. A writer takes any slot it can lock without waiting (SKIP LOCKED), so two transactions never wait
-- on each other here (no deadlock). The depth of a priority is sum(n) over its slots; it is transactional,
-- hence exact in any snapshot.
create table public.queue_depth_slots (
  priority_rank smallint not null check (priority_rank between 0 and 2),
  slot smallint not null check (slot between 0 and 15),
  n bigint not null default 0,
  primary key (priority_rank, slot)
);
insert into public.queue_depth_slots (priority_rank, slot)
  select r, s from generate_series(0, 2) r, generate_series(0, 15) s;

create function public.queue_depth_add(p_rank smallint, p_delta bigint) returns void
language plpgsql security definer set search_path = '' as $$
-- Adds p_delta to the queued depth of one priority. Internal (called by the jobs depth triggers).
declare
  v_slot smallint;
begin
  if p_delta = 0 then return; end if;
  select d.slot into v_slot from public.queue_depth_slots d
   where d.priority_rank = p_rank
   order by (d.slot + pg_catalog.pg_backend_pid()) % 16
   limit 1 for update skip locked;
  if v_slot is null then  -- all 16 slots busy: wait for this backend's own slot
    v_slot := pg_catalog.pg_backend_pid() % 16;
  end if;
  update public.queue_depth_slots d set n = d.n + p_delta
   where d.priority_rank = p_rank and d.slot = v_slot;
end $$;

create function public.jobs_depth_after_insert() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (insert): counts new queued rows per priority. Called by Postgres only.
declare r record;
begin
  for r in select priority_rank, count(*) as n from new_rows where status = 'queued' group by 1 order by 1 loop
    perform public.queue_depth_add(r.priority_rank, r.n);
  end loop;
  return null;
end $$;

create function public.jobs_depth_after_update() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (update): applies queued-depth changes per priority. Called by Postgres only.
declare r record;
begin
  for r in
    select k.priority_rank, sum(k.d) as n from (
      select o.priority_rank, -1 as d from old_rows o where o.status = 'queued'
      union all
      select w.priority_rank, 1 from new_rows w where w.status = 'queued') k
     group by 1 having sum(k.d) <> 0 order by 1
  loop
    perform public.queue_depth_add(r.priority_rank, r.n);
  end loop;
  return null;
end $$;

create function public.jobs_depth_after_delete() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (delete): removes deleted queued rows from the depth. Called by Postgres only.
declare r record;
begin
  for r in select priority_rank, count(*) as n from old_rows where status = 'queued' group by 1 order by 1 loop
    perform public.queue_depth_add(r.priority_rank, -r.n);
  end loop;
  return null;
end $$;

create trigger jobs_depth_after_insert after insert on public.jobs
  referencing new table as new_rows for each statement execute function public.jobs_depth_after_insert();
create trigger jobs_depth_after_update after update on public.jobs
  referencing old table as old_rows new table as new_rows
  for each statement execute function public.jobs_depth_after_update();
create trigger jobs_depth_after_delete after delete on public.jobs
  referencing old table as old_rows for each statement execute function public.jobs_depth_after_delete();

-- A truncate would leave the depth wrong: reset it.
create function public.jobs_depth_after_truncate() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Statement trigger on jobs (truncate): zeroes the queued depth. Called by Postgres only.
begin
  update public.queue_depth_slots set n = 0 where n <> 0;
  return null;
end $$;
create trigger jobs_depth_after_truncate after truncate on public.jobs
  for each statement execute function public.jobs_depth_after_truncate();

-- (2) Monotonic totals (Prometheus counters). Only outcomes bump them (a few per render, not per enqueue).
create table public.queue_counters (
  name text primary key,
  value double precision not null default 0
);
insert into public.queue_counters (name) values
  ('jobs_claimed_total'), ('jobs_completed_total'), ('jobs_failed_total'), ('jobs_retried_total'),
  ('jobs_cancelled_total'), ('attempts_timed_out_total'), ('jobs_released_total'),
  ('wait_seconds_sum'), ('wait_seconds_count'), ('processing_seconds_sum'), ('processing_seconds_count');

create function public.queue_counter_add(p_name text, p_delta double precision default 1) returns void
language sql security definer set search_path = '' as $$
  -- Adds to a monotonic counter. Internal (called by the queue functions).
  update public.queue_counters set value = value + p_delta where name = p_name
$$;
