-- A render endpoint that has just completed a render is alive and has a free slot: end its cool-down
-- (set by the worker when it was busy (429), refused a connection or timed out), so the worker pass
-- that the completion kicks can use it at once instead of waiting the cool-down out.

create function public.job_attempts_endpoint_back() returns trigger
language plpgsql security definer set search_path = '' as $$
-- Trigger on job_attempts: a completed attempt clears its endpoint's cool-down. Called by Postgres only.
begin
  update public.render_endpoints e
     set unhealthy_until = null
   where e.id = new.endpoint_id and e.unhealthy_until is not null;
  return null;
end $$;

revoke execute on function public.job_attempts_endpoint_back() from public, anon, authenticated;

create trigger job_attempts_endpoint_back
  after update of outcome on public.job_attempts
  for each row when (new.outcome = 'completed' and old.outcome is null and new.endpoint_id is not null)
  execute function public.job_attempts_endpoint_back();
