-- Security: RLS on every table, explicit table grants, and EXECUTE only for the roles meant to call.
-- Supabase grants new tables and functions in `public` to anon/authenticated/service_role by default
-- (default privileges); everything below revokes that first, then grants what each role needs.

alter table public.peak_windows enable row level security;
alter table public.renderers enable row level security;
alter table public.job_types enable row level security;
alter table public.render_endpoints enable row level security;
alter table public.job_attempts enable row level security;
alter table public.queue_depth_slots enable row level security;
alter table public.queue_counters enable row level security;
-- (jobs and job_queue_config have RLS enabled since the first migration.)

revoke all on table public.jobs, public.job_queue_config, public.peak_windows, public.renderers,
  public.job_types, public.render_endpoints, public.job_attempts, public.queue_depth_slots,
  public.queue_counters from public, anon, authenticated;

-- service_role: the operators' and the worker's role (bypasses RLS on Supabase). The seed's direct
-- INSERT INTO jobs and the config UPDATEs run as it (or as postgres).
grant select, insert, update, delete on table public.jobs, public.job_queue_config, public.peak_windows,
  public.renderers, public.job_types, public.render_endpoints, public.job_attempts to service_role;
grant select on table public.queue_depth_slots, public.queue_counters to service_role;

-- authenticated: reads its own jobs (an admin JWT: all jobs) and the reference tables; writes nothing.
grant select on table public.jobs, public.job_types, public.renderers to authenticated;

create policy jobs_select_own_or_admin on public.jobs for select to authenticated
  using (user_id = (select auth.uid()) or (select public.is_queue_admin()));
create policy job_types_select on public.job_types for select to authenticated using (true);
create policy renderers_select on public.renderers for select to authenticated using (true);
-- anon: no grants, no policies. Every other table: service_role (and postgres) only.

-- Functions: nobody by default ...
do $$
declare
  f regprocedure;
begin
  for f in
    select p.oid::regprocedure from pg_catalog.pg_proc p
     where p.pronamespace = 'public'::regnamespace
       and p.proname = any (array[
         'job_queue_config_validate', 'renderer_caps', 'jobs_before_insert', 'jobs_touch_updated_at',
         'queue_depth_add', 'jobs_depth_after_insert', 'jobs_depth_after_update', 'jobs_depth_after_delete',
         'jobs_depth_after_truncate', 'queue_counter_add', 'is_queue_admin', 'queue_is_peak', 'queue_capacity',
         'job_queue_position', 'renderer_avg_processing_seconds', 'job_wait_estimate', 'job_to_json',
         'enqueue_job', 'cancel_job', 'get_job', 'list_jobs', 'retry_job', 'claim_jobs', 'lock_current_attempt',
         'fail_attempt', 'release_job', 'report_progress', 'complete_job', 'fail_job',
         'recover_expired_attempts', 'mark_endpoint_unhealthy', 'get_queue_stats', 'get_queue_metrics'])
  loop
    execute format('revoke all on function %s from public, anon, authenticated, service_role', f);
  end loop;
end $$;

-- ... then each to its callers (docs/ARCHITECTURE.md, "The SQL API").
grant execute on function public.is_queue_admin() to authenticated, service_role;
grant execute on function public.job_to_json(public.jobs, timestamptz) to authenticated, service_role;
grant execute on function public.enqueue_job(text, jsonb, text, text, timestamptz, text, timestamptz) to authenticated, service_role;
grant execute on function public.cancel_job(uuid, text, timestamptz) to authenticated, service_role;
grant execute on function public.get_job(uuid, timestamptz) to authenticated, service_role;
-- Admin-only functions check public.is_queue_admin() inside (an admin is an authenticated user too).
grant execute on function public.list_jobs(text, integer, timestamptz) to authenticated, service_role;
grant execute on function public.retry_job(uuid, timestamptz) to authenticated, service_role;
grant execute on function public.get_queue_stats(timestamptz) to authenticated, service_role;
grant execute on function public.get_queue_metrics(timestamptz) to authenticated, service_role;
-- The worker and the render callbacks (through the worker function): service_role only.
grant execute on function public.claim_jobs(text, integer, timestamptz) to service_role;
grant execute on function public.release_job(uuid, integer, timestamptz) to service_role;
grant execute on function public.report_progress(uuid, integer, text, text, integer, timestamptz) to service_role;
grant execute on function public.complete_job(uuid, integer, text, jsonb, timestamptz) to service_role;
grant execute on function public.fail_job(uuid, integer, text, text, boolean, timestamptz) to service_role;
grant execute on function public.recover_expired_attempts(timestamptz) to service_role;
grant execute on function public.mark_endpoint_unhealthy(uuid, integer, timestamptz) to service_role;
