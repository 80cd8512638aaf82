-- The seeds' SQL as operators run it, the schema's invariants, and the cron jobs.
begin;
\ir _setup.psql
select plan(22);

-- Seed 001: direct INSERT (as the service role) makes a valid queued job.
select pg_temp.as_service();
INSERT INTO jobs (job_type, priority, status, payload)
VALUES ('doubt', 'high', 'queued', '{"question": "Phase 2 deployment test - create video explaining UPSC Polity basics"}');
select pg_temp.as_postgres();
select ok((select status = 'queued' and renderer = 'orchestrator' and next_attempt_at is not null and attempt = 0
                  and retry_count = 0 and max_retries = 3 and updated_at is not null
             from jobs where payload ->> 'question' like 'Phase 2%'), 'seed INSERT: queued, renderer and next_attempt_at filled');
insert into jobs (job_type, status, payload) values ('topic_short', 'queued', '{}');
select is((select priority || '/' || renderer from jobs where job_type = 'topic_short'), 'medium/manim', 'priority defaults from the job type');
select is(jsonb_array_length(claim_jobs('w')), 2, 'directly inserted jobs are claimable');

-- Seed 001: config UPDATEs.
select lives_ok($$UPDATE job_queue_config SET max_concurrent_renders = 15 WHERE id = (SELECT id FROM job_queue_config LIMIT 1)$$,
                'seed: UPDATE max_concurrent_renders');
select lives_ok($$UPDATE job_queue_config SET peak_hour_start = '07:00', peak_hour_end = '22:00', peak_worker_multiplier = 2.0
                   WHERE id = (SELECT id FROM job_queue_config LIMIT 1)$$, 'seed: peak-hour UPDATE');
select is((select effective from queue_capacity('2026-01-15 21:30:00+05:30')), 30, 'both take effect at the next claim');

-- Seed 002: monitoring queries.
select pg_temp.mk('daily_ca', :'T') as f \gset
select pg_temp.claim_job(:'f', :'T') ->> 'callback_token' as ftok \gset
select fail_job(:'f', 1, :'ftok', 'renderer rejected payload', false, :'T');
select results_eq($$SELECT status, COUNT(*) FROM jobs GROUP BY status ORDER BY status$$,
                  $$values ('failed'::text, 1::bigint), ('processing', 2)$$, 'seed: queue health query');
select lives_ok($$SELECT AVG(EXTRACT(EPOCH FROM (completed_at - started_at)) / 60) as avg_minutes FROM jobs WHERE status = 'completed'$$,
                'seed: average processing time query');
select results_eq($$SELECT job_type, error_message, COUNT(*) FROM jobs WHERE status = 'failed' GROUP BY job_type, error_message$$,
                  $$values ('daily_ca'::text, 'renderer rejected payload'::text, 1::bigint)$$, 'seed: failed jobs query');
select ok((select get_queue_stats()) ?& array['queued', 'processing', 'completed_today', 'failed_today', 'cancelled_today',
          'by_priority', 'by_renderer', 'capacity', 'avg_wait_seconds', 'avg_processing_seconds', 'throughput_last_hour',
          'oldest_queued_seconds', 'generated_at'], 'select get_queue_stats() works in a plain SQL session');

-- Invariants (CHECK constraints).
select throws_ok($$update jobs set status = 'completed' where status = 'processing'$$, '23514', null,
                 'completed needs completed_at (and a result)');
select throws_ok(format('update jobs set status = %L, completed_at = now() where id = %L', 'queued', :'f'), '23514', null,
                 'a queued job cannot have completed_at');
select throws_ok($$update jobs set lease_expires_at = null where status = 'processing'$$, '23514', null, 'processing needs a lease');
select throws_ok($$insert into jobs (job_type, status, payload) values ('doubt', 'processing', '{}')$$, '23514', null,
                 'a job cannot be inserted as processing without an attempt');
select throws_ok($$update jobs set progress = 101$$, '23514', null, 'progress 0..100');
select throws_ok($$insert into jobs (job_type, priority, status, payload) values ('essay', 'high', 'queued', '{}')$$, '23514', null,
                 'unknown job_type refused');
select throws_ok($$insert into render_endpoints (renderer, url) values ('blender', 'http://x')$$, '23503', null,
                 'endpoints only for known renderers');
select ok(col_description('public.jobs'::regclass, (select attnum from pg_attribute where attrelid = 'public.jobs'::regclass and attname = 'queue_position'))
          like '%NOT maintained%', 'queue_position documented as computed at read time');
select is((select count(*) from job_queue_config), 1::bigint, 'exactly one config row');

-- Cron: the named jobs exist with minute schedules.
select is((select string_agg(jobname || ' ' || schedule, ', ' order by jobname) from cron.job where jobname like 'video-queue-%'),
          'video-queue-daily-ca * * * * *, video-queue-prune 17 3 * * *, video-queue-recover * * * * *, video-queue-worker * * * * *',
          'pg_cron jobs: worker, recover and the daily video every minute, prune daily');
select ok((select command like '%video_queue_worker_url%' and command like '%video_queue_secret_key%' and command like '%net.http_post%'
             from cron.job where jobname = 'video-queue-worker'), 'the worker job posts to the Vault URL with the Vault key');
-- Pruning: finished jobs past retention go, the rest stays.
update jobs set completed_at = now() - interval '31 days' where id = :'f';
select is(prune_finished_jobs(), 1::bigint, 'prune deletes finished jobs older than finished_job_retention_days');

select * from finish();
rollback;
