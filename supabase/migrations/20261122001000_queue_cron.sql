-- Scheduled jobs (pg_cron, named, so re-running this file updates them instead of adding copies).
-- Minute schedules only: Debian's pg_cron 1.4 (local) refuses second schedules.
--
-- The worker job reads its URL and key from Vault. An operator creates the two secrets once:
--   select vault.create_secret('https://<project>.supabase.co/functions/v1/video-queue-worker', 'video_queue_worker_url');
--   select vault.create_secret('<secret key>', 'video_queue_secret_key');
-- Until both exist the job does nothing (recovery still runs from its own job).

do $$
begin
  if exists (select 1 from pg_available_extensions where name = 'pg_net') then
    create extension if not exists pg_net with schema extensions;
  end if;
end $$;

create function public.prune_finished_jobs(p_now timestamptz default now()) returns bigint
language plpgsql security definer set search_path = '' as $$
-- Deletes finished jobs older than job_queue_config.finished_job_retention_days. postgres (daily cron job).
declare
  v_deleted bigint;
begin
  delete from public.jobs j
   where j.completed_at < p_now - make_interval(days => (select c.finished_job_retention_days from public.job_queue_config c limit 1))
     and j.status in ('completed', 'failed', 'cancelled');
  get diagnostics v_deleted = row_count;
  return v_deleted;
end $$;
revoke all on function public.prune_finished_jobs(timestamptz) from public, anon, authenticated, service_role;

-- One worker pass a minute (the backstop; enqueue and finished attempts kick passes themselves).
select cron.schedule('video-queue-worker', '* * * * *', $cmd$
  select net.http_post(
    url := (select decrypted_secret from vault.decrypted_secrets where name = 'video_queue_worker_url'),
    headers := jsonb_build_object(
      'Content-Type', 'application/json',
      'apikey', (select decrypted_secret from vault.decrypted_secrets where name = 'video_queue_secret_key')),
    body := '{}'::jsonb,
    timeout_milliseconds := 5000)
  where exists (select 1 from vault.decrypted_secrets where name = 'video_queue_worker_url')
    and exists (select 1 from vault.decrypted_secrets where name = 'video_queue_secret_key')
$cmd$);

-- Recovery of expired leases in SQL, so stuck jobs recover even when the worker endpoint is down.
select cron.schedule('video-queue-recover', '* * * * *', $cmd$select public.recover_expired_attempts()$cmd$);

-- Daily at 03:17 UTC: finished jobs past retention, and pg_cron's own run log older than 7 days.
select cron.schedule('video-queue-prune', '17 3 * * *', $cmd$
  select public.prune_finished_jobs();
  delete from cron.job_run_details where end_time < now() - interval '7 days';
$cmd$);
