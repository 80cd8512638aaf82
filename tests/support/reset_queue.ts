// A clean queue, the one every pgTAP file starts from (supabase/tests/_setup.psql, "A clean queue"): no
// jobs, no peak windows, no renderer caps, one endpoint per renderer, the seed's defaults in the config row.
// For tests and benchmarks on a throw-away database, as a superuser (or inside their own transaction).
import type postgres from "postgres";

/** The statements of _setup.psql's "A clean queue", word for word. */
const CLEAN_QUEUE = `
truncate public.jobs cascade;
delete from public.render_endpoints;
delete from public.peak_windows;
update public.renderers set max_concurrent = null;
update public.job_queue_config
   set max_concurrent_renders = 10, max_manim_renders = 4, job_timeout_minutes = 10, retry_interval_minutes = 5,
       peak_hour_start = '06:00', peak_hour_end = '21:00', peak_worker_multiplier = 1.5,
       peak_time_zone = 'Asia/Kolkata', max_queued_per_user = 20, max_enqueues_per_minute = 10,
       finished_job_retention_days = 30, default_processing_seconds = 120;
insert into public.render_endpoints (renderer, url) values
  ('manim', 'http://manim-1.test:5000'), ('revideo', 'http://revideo-1.test:5001'),
  ('orchestrator', 'http://orchestrator-1.test:8103');
`;

/** Resets the queue's tables to CLEAN_QUEUE, in one round trip (one implicit transaction, or the caller's). */
export async function resetQueue(sql: postgres.Sql | postgres.TransactionSql): Promise<void> {
  await sql.unsafe(CLEAN_QUEUE).simple();
}
