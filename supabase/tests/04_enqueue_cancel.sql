-- Enqueue (type -> priority/renderer, admin overrides, idempotency, per-user limits), cancel, admin retry.
begin;
\ir _setup.psql
select plan(34);

select pg_temp.as_user(:'U1');
select enqueue_job('doubt', '{"question": "What is Article 370?"}', 'key-1', p_now => :'T') as e1 \gset
select is(:'e1'::jsonb ->> 'created', 'true', 'enqueue creates a job');
select is(array[:'e1'::jsonb -> 'job' ->> 'priority', :'e1'::jsonb -> 'job' ->> 'renderer', :'e1'::jsonb -> 'job' ->> 'status'],
          array['high', 'orchestrator', 'queued'], 'doubt -> high, orchestrator, queued');
select is((select array_agg(k order by k) from jsonb_object_keys(:'e1'::jsonb -> 'job') k),
          array['completed_at', 'created_at', 'error_message', 'estimate_basis', 'estimated_wait_seconds', 'expires_at',
                'id', 'job_type', 'max_retries', 'next_attempt_at', 'payload', 'priority', 'progress', 'queue_position',
                'renderer', 'result', 'retry_count', 'stage', 'started_at', 'status', 'updated_at', 'wait_reason'],
          'the Job object has exactly the fields of API.md');
select is(enqueue_job('doubt', '{"question": "again"}', 'key-1', p_now => :'T') -> 'job' ->> 'id', :'e1'::jsonb -> 'job' ->> 'id',
          'same user + idempotency key: the first job');
select is(enqueue_job('doubt', '{"question": "again"}', 'key-1', p_now => :'T') ->> 'created', 'false', '... created = false');
select is(enqueue_job('topic_short', '{"topic": "Polity"}', p_now => :'T') -> 'job' ->> 'priority', 'medium', 'topic_short -> medium');
select is(enqueue_job('daily_ca', '{"date": "2026-01-15"}', p_now => :'T') -> 'job' ->> 'renderer', 'revideo', 'daily_ca -> low, revideo');
select throws_ok($$select enqueue_job('doubt', '{}', p_priority => 'low')$$, 'VQ403', null, 'a user may not set priority');
select throws_ok($$select enqueue_job('doubt', '{}', p_renderer => 'manim')$$, 'VQ403', null, 'a user may not choose the renderer');
select throws_ok($$select enqueue_job('essay', '{}')$$, 'VQ400', null, 'unknown job_type: 400');
select throws_ok($$select enqueue_job('doubt', '[1]')$$, 'VQ400', null, 'payload must be an object');
select throws_ok(format('select enqueue_job(%L, %L, %L)', 'doubt', '{}', repeat('k', 129)), 'VQ400', null, 'idempotency key over 128 chars');
select pg_temp.as_user(:'U2');
select isnt(enqueue_job('doubt', '{"question": "mine"}', 'key-1', p_now => :'T') -> 'job' ->> 'id', :'e1'::jsonb -> 'job' ->> 'id',
            'idempotency keys are per user');
select pg_temp.as_user(:'ADM', true);
select is(enqueue_job('doubt', '{"question": "x"}', p_priority => 'low', p_renderer => 'manim', p_now => :'T') -> 'job' ->> 'priority', 'low',
          'an admin may override priority and renderer');
select pg_temp.as_postgres();
select is((select count(*) from jobs where user_id = :'U1'), 3::bigint, 'no second row for the repeated key');

-- Per-user limits: enqueues per minute, unfinished jobs at once.
update job_queue_config set max_enqueues_per_minute = 3, max_queued_per_user = 5;
select pg_temp.as_user(:'U2');
select enqueue_job('doubt', '{"question": "a"}', p_now => :'T'::timestamptz + interval '10 s');
select enqueue_job('doubt', '{"question": "b"}', p_now => :'T'::timestamptz + interval '20 s');
select throws_ok(format('select enqueue_job(%L, %L, p_now => %L)', 'doubt', '{"question": "c"}', :'T'::timestamptz + interval '30 s'),
                 'VQ429', null, '4th enqueue within a minute: 429');
create function pg_temp.error_detail(p_sql text) returns text language plpgsql as $f$
declare v text;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v = pg_exception_detail;
  return v;
end $f$;
select is(pg_temp.error_detail(format('select enqueue_job(%L, %L, p_now => %L)', 'doubt', '{"question": "c"}', :'T'::timestamptz + interval '30 s'))::jsonb,
          '{"retry_after_seconds": 30}'::jsonb, 'DETAIL carries retry_after_seconds (until the oldest leaves the minute)');
select lives_ok(format('select enqueue_job(%L, %L, p_now => %L)', 'doubt', '{"question": "c"}', :'T'::timestamptz + interval '61 s'),
                'a minute later it is accepted');
select enqueue_job('doubt', '{"question": "d"}', p_now => :'T'::timestamptz + interval '125 s');
select throws_ok(format('select enqueue_job(%L, %L, p_now => %L)', 'doubt', '{"question": "e"}', :'T'::timestamptz + interval '10 min'),
                 'VQ429', null, '6th unfinished job: 429');
select pg_temp.as_user(:'ADM', true);
select lives_ok($$select enqueue_job('doubt', '{"question": "admin"}')$$, 'admins are not limited');

-- Cancel.
select pg_temp.as_postgres();
truncate jobs cascade;
select pg_temp.as_user(:'U1');
select enqueue_job('doubt', '{"question": "x"}', p_now => :'T') -> 'job' ->> 'id' as q \gset
select pg_temp.as_user(:'U2');
select throws_ok(format('select cancel_job(%L)', :'q'), 'VQ404', null, 'another user cannot cancel (404, no existence leak)');
select pg_temp.as_user(:'U1');
select cancel_job(:'q', 'changed my mind', :'T') as cq \gset
select is(array[:'cq'::jsonb -> 'job' ->> 'status', :'cq'::jsonb ->> 'cancelled_attempt'], array['cancelled', null],
          'owner cancels a queued job; no attempt to tell');
select throws_ok(format('select cancel_job(%L)', :'q'), 'VQ409', null, 'cancelling a cancelled job: 409');
select pg_temp.as_postgres();
select is(pg_temp.claim_ids(:'T'), '{}'::uuid[], 'a cancelled job is never started');
select is((select cancel_reason from jobs where id = :'q'), 'changed my mind', 'reason kept');
-- Cancelling a processing job fences its attempt.
select pg_temp.as_user(:'U1');
select enqueue_job('topic_short', '{"topic": "x"}', p_now => :'T') -> 'job' ->> 'id' as pj \gset
select pg_temp.as_postgres();
select pg_temp.claim_job(:'pj', :'T') ->> 'callback_token' as ptok \gset
select pg_temp.as_user(:'ADM', true);
select cancel_job(:'pj', null, :'T'::timestamptz + interval '1 min') as cp \gset
select is(:'cp'::jsonb -> 'cancelled_attempt', '{"attempt": 1, "endpoint_url": "http://manim-1.test:5000"}'::jsonb,
          'admin cancels a processing job; the endpoint to tell is returned');
select pg_temp.as_postgres();
select is((select outcome from job_attempts where job_id = :'pj'), 'cancelled', 'attempt fenced');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'pj', :'ptok', '{"video_url": "x"}'), 'VQ409', null, 'late completion refused');
select throws_ok(format('select fail_job(%L, 1, %L, %L, true)', :'pj', :'ptok', 'x'), 'VQ409', null, 'late failure refused (no resurrection)');
select throws_ok(format('select report_progress(%L, 1, %L, %L, 50)', :'pj', :'ptok', 'x'), 'VQ409', null, 'late progress refused');
select is((select status from jobs where id = :'pj'), 'cancelled', 'still cancelled');

-- Admin retry of a failed job.
select pg_temp.mk('daily_ca', :'T') as f \gset
select pg_temp.claim_job(:'f', :'T') ->> 'callback_token' as ftok \gset
select fail_job(:'f', 1, :'ftok', 'bad', false, :'T');
select pg_temp.as_user(:'U1');
select throws_ok(format('select retry_job(%L)', :'f'), 'VQ403', null, 'a user cannot retry');
select pg_temp.as_service();
select is(retry_job(:'f', :'T'::timestamptz + interval '1 min') ->> 'status', 'queued', 'admin retry: failed -> queued');
select throws_ok(format('select retry_job(%L)', :'f'), 'VQ409', null, 'retrying a queued job: 409');

select * from finish();
rollback;
