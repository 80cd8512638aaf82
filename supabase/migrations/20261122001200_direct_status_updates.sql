-- Operators change jobs by hand too, e.g. the seeds' "manually reset stuck jobs":
--   UPDATE jobs SET status = 'queued', retry_count = retry_count + 1
--    WHERE status = 'processing' AND started_at < NOW() - INTERVAL '10 minutes';
-- Such an UPDATE names only the status; this trigger completes it into a valid state (the CHECK
-- constraints stay strict) and fences the attempt it ends, so that attempt's late callbacks get 409.
-- The queue's own functions already write complete states, which this leaves unchanged.

create function public.jobs_complete_direct_status_change() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Trigger on jobs (BEFORE UPDATE OF status): derives the columns a hand-written status change left
-- unchanged; what the statement set itself is kept, so contradictions still fail the CHECKs. Postgres only.
begin
  if new.status = old.status then
    return new;
  end if;
  if new.status <> 'processing' and new.lease_expires_at is not distinct from old.lease_expires_at then
    new.lease_expires_at := null;
    new.worker_id := null;
    new.endpoint_id := null;
  end if;
  if new.next_attempt_at is not distinct from old.next_attempt_at then
    new.next_attempt_at := case when new.status = 'queued' then now() end;
  end if;
  if new.completed_at is not distinct from old.completed_at then
    new.completed_at := case when new.status in ('completed', 'failed', 'cancelled') then now() end;
  end if;
  if new.status = 'queued' and new.progress is not distinct from old.progress then
    new.progress := 0;
    new.stage := null;
  end if;
  if new.status = 'failed' and new.error_message is null then
    new.error_message := 'failed by an operator';
  end if;
  if old.status = 'processing' then
    update public.job_attempts a
       set finished_at = now(), outcome = 'released', error = 'ended by a direct status change to ' || new.status
     where a.job_id = old.id and a.attempt = old.attempt and a.outcome is null;
  end if;
  return new;
end $$;

revoke execute on function public.jobs_complete_direct_status_change() from public, anon, authenticated;

create trigger jobs_complete_direct_status_change before update of status on public.jobs
  for each row execute function public.jobs_complete_direct_status_change();
