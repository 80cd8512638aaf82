-- Wake-ups for the long-running worker (`deno task worker`): NOTIFY video_queue_wakeup when a worker pass
-- would be useful, so a LISTENing worker passes at once instead of at its next interval. Edge Functions do
-- not listen (Supabase's transaction pooler does not pass NOTIFY); for them nothing changes.
--
-- NOTIFY costs: every notifying transaction takes one global lock at commit, so notifying transactions
-- commit one at a time. Hence only where a pass can start something, and once per statement (statement
-- triggers over the transition tables), never per row: a claim (queued → processing) or a progress report
-- does not notify; an insert of a claimable job, a job leaving `processing` (a slot freed), a job becoming
-- claimable again (release, admin retry) and an operator's change of the config or a renderer do.

-- Who listens: a LISTENing worker holds a row here, renewed while it listens (queue.hold_wakeup_listener). With
-- no holder (the Edge Function deployment), nothing notifies, so enqueues and outcomes never queue on the
-- notification lock for nobody.
create table private.wakeup_listeners (
  backend_pid integer primary key,
  listening_until timestamptz not null
);
alter table private.wakeup_listeners enable row level security;

create function private.wakeup_listened() returns boolean
language sql stable security definer set search_path = '' as $$
  select exists (select 1 from private.wakeup_listeners l where l.listening_until > now())
$$;

-- hold_wakeup_listener: the calling session listens for p_seconds more (p_seconds 0: no longer). Called on
-- the worker's LISTEN connection; service_role only.
create function queue.hold_wakeup_listener(p_seconds integer) returns void
language plpgsql security definer set search_path = '' as $$
begin
  if p_seconds > 0 then
    insert into private.wakeup_listeners (backend_pid, listening_until)
    values (pg_catalog.pg_backend_pid(), now() + make_interval(secs => p_seconds))
    on conflict (backend_pid) do update set listening_until = excluded.listening_until;
  else
    delete from private.wakeup_listeners l where l.backend_pid = pg_catalog.pg_backend_pid();
  end if;
  -- Rows of sessions that stopped renewing.
  delete from private.wakeup_listeners l where l.listening_until < now() - interval '1 minute';
end $$;
revoke all on function queue.hold_wakeup_listener(integer) from public, anon, authenticated;
grant execute on function queue.hold_wakeup_listener(integer) to service_role;

-- jobs_wake_worker_after_insert: new jobs claimable now (not scheduled for later). Called by Postgres only.
create function private.jobs_wake_worker_after_insert() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if private.wakeup_listened()
     and exists (select 1 from new_rows n where n.status = 'queued' and n.next_attempt_at <= now()) then
    perform pg_catalog.pg_notify('video_queue_wakeup', 'job_claimable');
  end if;
  return null;
end $$;

-- jobs_wake_worker_after_update: a slot freed (a job left processing) or a job claimable again. Called by
-- Postgres only.
create function private.jobs_wake_worker_after_update() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if private.wakeup_listened()
     and exists (select 1 from old_rows o join new_rows n on n.id = o.id
              where (o.status = 'processing' and n.status <> 'processing')
                 or (o.status <> 'queued' and n.status = 'queued' and n.next_attempt_at <= now())) then
    perform pg_catalog.pg_notify('video_queue_wakeup', 'slot_freed');
  end if;
  return null;
end $$;

-- config_wake_worker: an operator changed caps, pauses or peak hours (job_queue_config, renderers). Called by
-- Postgres only.
create function private.config_wake_worker() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform pg_catalog.pg_notify('video_queue_wakeup', 'config_changed');
  return null;
end $$;

create trigger _600_wake_worker_insert after insert on public.jobs
  referencing new table as new_rows for each statement execute function private.jobs_wake_worker_after_insert();
create trigger _600_wake_worker_update after update on public.jobs
  referencing old table as old_rows new table as new_rows
  for each statement execute function private.jobs_wake_worker_after_update();
create trigger wake_worker after update on public.job_queue_config
  for each statement execute function private.config_wake_worker();
create trigger wake_worker after update on public.renderers
  for each statement execute function private.config_wake_worker();

