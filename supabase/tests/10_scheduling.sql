-- Scheduling for long renders (API.md "Scheduling"): heartbeats and the max_render_minutes ceiling, the lease
-- as a fence, pause and resume, expiry, a reason for every wait and the estimate's basis. Injected clock.
begin;
\ir _setup.psql
select plan(32);

-- Heartbeats: a render that reports every minute for 25 minutes stays current and completes once.
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as h \gset
select pg_temp.claim_job(:'h', :'T') ->> 'callback_token' as htok \gset
select is((select count(*)::int from generate_series(1, 25) m
            where report_progress(:'h', 1, :'htok', 'composing_video', least(m * 4, 99), :'T'::timestamptz + make_interval(mins => m)) ->> 'status' = 'processing'),
          25, 'progress every minute for 25 minutes: the attempt stays current');
select is((select lease_expires_at from jobs where id = :'h'), :'T'::timestamptz + interval '35 min',
          'the lease runs job_timeout_minutes from the latest sign of life');
select is(jsonb_array_length(recover_expired_attempts(:'T'::timestamptz + interval '30 min')), 0,
          'nothing to recover while it is alive, 30 minutes after its start');
select is(record_heartbeat(:'h', 1, :'htok', :'T'::timestamptz + interval '26 min') ->> 'status', 'processing',
          'a heartbeat is a sign of life too');
select is((select lease_expires_at from jobs where id = :'h'), :'T'::timestamptz + interval '36 min', 'the heartbeat moved the lease');
select is((select lease_expires_at from job_attempts where job_id = :'h' and attempt = 1), :'T'::timestamptz + interval '36 min',
          'the attempt records the same lease');
select is(complete_job(:'h', 1, :'htok', '{"video_url": "https://cdn/h.mp4"}', :'T'::timestamptz + interval '27 min') ->> 'status',
          'completed', 'the long render completes');
select is((select count(*)::int from job_attempts where job_id = :'h'), 1, 'once, in a single attempt');

-- The ceiling: never past started_at + max_render_minutes, however alive.
update job_queue_config set max_render_minutes = 30;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as m \gset
select pg_temp.claim_job(:'m', :'T') ->> 'callback_token' as mtok \gset
select count(record_heartbeat(:'m', 1, :'mtok', :'T'::timestamptz + make_interval(mins => m))) from generate_series(1, 25) m;
select is((select lease_expires_at from jobs where id = :'m'), :'T'::timestamptz + interval '30 min',
          'signs of life up to 25 minutes extend the lease only to max_render_minutes');

-- The lease is a fence: past it, callbacks get 409 whether or not recovery has run.
select throws_ok(format('select complete_job(%L, 1, %L, %L, %L)', :'m', :'mtok', '{"video_url": "x"}',
                        :'T'::timestamptz + interval '30 min 5 s'),
                 'VQ409', null, 'a completion 5 s after the deadline is refused before any recovery');
select is((select status from jobs where id = :'m'), 'processing', 'and changes nothing');
select is(recover_expired_attempts(:'T'::timestamptz + interval '31 min') -> 0 ->> 'outcome', 'retry_scheduled',
          'recovery then retries it');
select is((select error_message from jobs where id = :'m'), 'timed out after 30 minutes (max_render_minutes)',
          'saying it hit the ceiling');

-- Pause and resume: a paused scope starts nothing; queued jobs keep their order and positions.
update jobs set status = 'cancelled' where status = 'queued';
select pg_temp.mk('doubt', :'T'::timestamptz - interval '3 min') as p1 \gset
select pg_temp.mk('topic_short', :'T'::timestamptz - interval '2 min') as p2 \gset
select pg_temp.as_user(:'U1');
select throws_ok('select set_paused(true)', 'VQ403', null, 'only an admin may pause');
select pg_temp.as_service();
select is(set_paused(true) ->> 'paused', 'true', 'the whole queue paused; the stats say so');
select is(claim_jobs('w', null, :'T'), '[]'::jsonb, 'a paused queue claims nothing');
select is(array[get_job(:'p1', :'T') ->> 'wait_reason', get_job(:'p1', :'T') ->> 'queue_position',
                get_job(:'p2', :'T') ->> 'queue_position'],
          array['paused', '1', '2'], 'queued jobs wait as paused, in their order');
select set_paused(false);
select is(set_paused(true, 'orchestrator') -> 'by_renderer' -> 'orchestrator' ->> 'paused', 'true', 'one renderer paused');
select throws_ok($$select set_paused(true, 'blender')$$, 'VQ400', null, 'an unknown renderer is a 400');
select is(pg_temp.claim_ids(:'T'), array[:'p2'::uuid], 'its jobs wait while other renderers'' go ahead');
select set_paused(false, 'orchestrator');
select is(pg_temp.claim_ids(:'T'), array[:'p1'::uuid], 'resumed: its job is claimed');

-- Expiry: a job not started by its expires_at ends cancelled, reason expired, counted in the stats.
select throws_ok(format('select enqueue_job(%L, %L, p_expires_at => %L, p_now => %L)', 'doubt', '{"question": "late"}',
                        :'T'::timestamptz - interval '1 s', :'T'),
                 'VQ400', null, 'expires_at must lie ahead');
select enqueue_job('doubt', '{"question": "expiring"}', p_expires_at => :'T'::timestamptz + interval '5 min',
                   p_run_at => :'T'::timestamptz + interval '4 min', p_now => :'T') -> 'job' ->> 'id' as x \gset
select is(claim_jobs('w', null, :'T'::timestamptz + interval '6 min'), '[]'::jsonb, 'an expired job is not claimed');
select is((select row(status, cancel_reason, error_message like 'expired:%')::text from jobs where id = :'x'),
          row('cancelled', 'expired', true)::text, 'it ended cancelled, reason expired, saying so');
select is((get_queue_stats(:'T'::timestamptz + interval '7 min') ->> 'expired_today')::int, 1, 'counted in the stats');

-- A reason for every wait, and the estimate's basis.
select pg_temp.mk('doubt', :'T'::timestamptz) as w \gset
update jobs set next_attempt_at = :'T'::timestamptz + interval '1 hour' where id = :'w';
select is(get_job(:'w', :'T') ->> 'wait_reason', 'scheduled', 'a run_at ahead: scheduled');
update jobs set retry_count = 1 where id = :'w';
select is(get_job(:'w', :'T') ->> 'wait_reason', 'retry_backoff', 'a retry''s backoff: retry_backoff');
update jobs set next_attempt_at = :'T', retry_count = 0 where id = :'w';
update render_endpoints set disabled = true where renderer = 'orchestrator';
select is(get_job(:'w', :'T') ->> 'wait_reason', 'no_endpoint', 'no usable endpoint: no_endpoint');
update render_endpoints set disabled = false;
update job_queue_config set max_concurrent_renders = 1, peak_worker_multiplier = 1;
select is(get_job(:'w', :'T') ->> 'wait_reason', 'capacity', 'the global cap in use: capacity');
update job_queue_config set max_concurrent_renders = 10, max_manim_renders = 1;
select pg_temp.mk('topic_short', :'T'::timestamptz) as ts \gset
select is(get_job(:'ts', :'T') ->> 'wait_reason', 'renderer_busy', 'its renderer at its cap: renderer_busy');
select is(get_job(:'w', :'T') ->> 'wait_reason', 'behind', 'nothing else holds it: behind the jobs ahead');
select is(array[get_job(:'w', :'T') ->> 'estimate_basis', get_job(:'w', :'T'::timestamptz + interval '30 min') ->> 'estimate_basis'],
          array['default', 'history'], 'the estimate says whether it rests on the renderer''s history');

select * from finish();
rollback;
