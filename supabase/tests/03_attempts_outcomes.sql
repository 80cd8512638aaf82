-- Outcomes fenced by attempt: progress, complete, fail (backoff, retries spent, permanent), lease expiry,
-- release, stale and forged callbacks.
begin;
\ir _setup.psql
select plan(44);

-- Progress and completion.
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as j \gset
select pg_temp.claim_job(:'j', :'T') as c \gset
select (:'c'::jsonb ->> 'callback_token') as tok, (:'c'::jsonb ->> 'attempt')::int as att \gset
select is(:att, 1, 'first claim is attempt 1');
select is((select token_hash from job_attempts where job_id = :'j'), encode(sha256(convert_to(:'tok', 'UTF8')), 'hex'),
          'only the sha256 of the callback token is stored');
select is((select count(*) from job_attempts where token_hash = :'tok' or worker_id = :'tok'), 0::bigint, 'the token itself is nowhere');
select is((:'c'::jsonb ->> 'deadline')::timestamptz, :'T'::timestamptz + interval '10 min', 'lease = claim + job_timeout_minutes');
select is(report_progress(:'j', 1, :'tok', 'composing_video', 60, :'T'::timestamptz + interval '1 min') ->> 'progress', '60', 'progress recorded');
select is(report_progress(:'j', 1, :'tok', 'generating_screenshot', 20, :'T'::timestamptz + interval '2 min') ->> 'stage', 'composing_video',
          'a late lower progress changes nothing');
select is((select lease_expires_at from jobs where id = :'j'), :'T'::timestamptz + interval '12 min',
          'progress is a sign of life: the lease runs job_timeout_minutes from the latest callback');
select throws_ok(format('select report_progress(%L, 1, %L, %L, 101)', :'j', :'tok', 's'), 'VQ400', null, 'progress over 100 refused');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'j', :'tok', '{"url": "x"}'), 'VQ400', null, 'result without video_url refused');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'j', 'forged-token', '{"video_url": "x"}'), 'VQ401', null, 'forged token: 401');
select throws_ok(format('select complete_job(%L, 2, %L, %L)', :'j', :'tok', '{"video_url": "x"}'), 'VQ401', null, 'token of another attempt number: 401');
select (select value from queue_counters where name = 'jobs_completed_total') as completed_before \gset
select is(complete_job(:'j', 1, :'tok', '{"video_url": "https://cdn/v.mp4", "file_size": 10}', :'T'::timestamptz + interval '3 min') ->> 'status',
          'completed', 'complete_job completes');
select ok((select status = 'completed' and completed_at = :'T'::timestamptz + interval '3 min' and progress = 100
                  and result ->> 'video_url' = 'https://cdn/v.mp4' and lease_expires_at is null from jobs where id = :'j'),
          'result, completed_at, progress stored; lease cleared');
select is(complete_job(:'j', 1, :'tok', '{"video_url": "https://cdn/v.mp4"}', :'T'::timestamptz + interval '4 min') ->> 'completed_at',
          (select to_jsonb(completed_at) ->> 0 from jobs where id = :'j'), 'the same completion again: harmless, job unchanged');
select is((select value from queue_counters where name = 'jobs_completed_total'), (:completed_before + 1)::double precision, 'counted once');
select throws_ok(format('select fail_job(%L, 1, %L, %L, true)', :'j', :'tok', 'late'), 'VQ409', null, 'fail after complete: 409');
select throws_ok(format('select report_progress(%L, 1, %L, %L, 90)', :'j', :'tok', 's'), 'VQ409', null, 'progress after complete: 409');
select throws_ok(format('select release_job(%L, 1)', :'j'), 'VQ409', null, 'release after complete: 409');

-- Retryable failures: backoff 5, 10, 20 minutes (+0..10% jitter); max_retries = 3 -> 4 attempts, then failed.
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min') as r \gset
select pg_temp.claim_job(:'r', :'T') ->> 'callback_token' as t1 \gset
select fail_job(:'r', 1, :'t1', 'renderer 503', true, :'T');
select ok((select status = 'queued' and retry_count = 1 and error_message = 'renderer 503'
                  and next_attempt_at between :'T'::timestamptz + interval '5 min' and :'T'::timestamptz + interval '5 min 30 s'
             from jobs where id = :'r'), 'retry 1 scheduled 5 min (+<=10%) later');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'r', :'t1', '{"video_url": "x"}'), 'VQ409', null, 'stale attempt cannot complete');
select throws_ok(format('select fail_job(%L, 1, %L, %L, false)', :'r', :'t1', 'x'), 'VQ409', null, 'stale attempt cannot fail');
select throws_ok(format('select report_progress(%L, 1, %L, %L, 10)', :'r', :'t1', 'x'), 'VQ409', null, 'stale attempt cannot report progress');
select throws_ok(format('select release_job(%L, 1)', :'r'), 'VQ409', null, 'stale attempt cannot be released');
select is(pg_temp.claim_ids(:'T'::timestamptz + interval '4 min 59 s'), '{}'::uuid[], 'not claimed during backoff');
select pg_temp.claim_job(:'r', :'T'::timestamptz + interval '6 min') ->> 'callback_token' as t2 \gset
select is((select attempt from jobs where id = :'r'), 2, 'attempt 2 after the backoff');
select fail_job(:'r', 2, :'t2', 'renderer 503', true, :'T'::timestamptz + interval '6 min');
select ok((select retry_count = 2 and next_attempt_at between :'T'::timestamptz + interval '16 min' and :'T'::timestamptz + interval '17 min'
             from jobs where id = :'r'), 'retry 2 scheduled 10 min (+<=10%) later');
select pg_temp.claim_job(:'r', :'T'::timestamptz + interval '17 min') ->> 'callback_token' as t3 \gset
select fail_job(:'r', 3, :'t3', 'renderer 503', true, :'T'::timestamptz + interval '17 min');
select ok((select retry_count = 3 and next_attempt_at between :'T'::timestamptz + interval '37 min' and :'T'::timestamptz + interval '39 min'
             from jobs where id = :'r'), 'retry 3 scheduled 20 min (+<=10%) later');
select pg_temp.claim_job(:'r', :'T'::timestamptz + interval '40 min') ->> 'callback_token' as t4 \gset
select is((fail_job(:'r', 4, :'t4', 'renderer 503', true, :'T'::timestamptz + interval '40 min')) ->> 'status', 'failed',
          'the 4th attempt failing (3 retries spent) fails the job');
select ok((select retry_count = 3 and completed_at is not null and next_attempt_at is null from jobs where id = :'r'), 'failed: retry_count 3, finished');
select is((select array_agg(outcome order by attempt) from job_attempts where job_id = :'r'),
          array['failed', 'failed', 'failed', 'failed'], 'every attempt recorded with its outcome');
select throws_ok(format('select fail_job(%L, 4, %L, %L, true)', :'r', :'t4', 'again'), 'VQ409', null, 'failing a failed job again: 409');

-- Permanent failure: failed at once.
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min') as p \gset
select pg_temp.claim_job(:'p', :'T') ->> 'callback_token' as tp \gset
select is(fail_job(:'p', 1, :'tp', 'payload rejected (400)', false, :'T') ->> 'status', 'failed', 'non-retryable failure fails at once');
select is((select retry_count from jobs where id = :'p'), 0, '... without spending a retry');

-- Lease expiry -> retryable failure ("timed out after 10 minutes"), then failed when retries are spent.
select pg_temp.mk('topic_short', :'T'::timestamptz - interval '1 min') as e \gset
select pg_temp.claim_job(:'e', :'T') ->> 'callback_token' as te \gset
select is(recover_expired_attempts(:'T'::timestamptz + interval '9 min 59 s'), '[]'::jsonb, 'lease not yet expired');
select is(recover_expired_attempts(:'T'::timestamptz + interval '10 min'),
          jsonb_build_array(jsonb_build_object('job_id', :'e', 'attempt', 1, 'outcome', 'retry_scheduled')), 'expired lease: retry scheduled');
select ok((select status = 'queued' and retry_count = 1 and error_message = 'timed out after 10 minutes' from jobs where id = :'e'),
          'error says it timed out after 10 minutes');
select is((select outcome from job_attempts where job_id = :'e' and attempt = 1), 'timed_out', 'attempt marked timed_out');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'e', :'te', '{"video_url": "x"}'), 'VQ409', null,
                 'a zombie render cannot complete a timed-out attempt');
update jobs set retry_count = 3 where id = :'e';
select pg_temp.claim_job(:'e', :'T'::timestamptz + interval '20 min') ->> 'callback_token' as te2 \gset
select is(recover_expired_attempts(:'T'::timestamptz + interval '31 min') -> 0 ->> 'outcome', 'failed', 'retries spent: expired lease fails the job');
select is((select status from jobs where id = :'e'), 'failed', 'job failed');

-- Release: back to the queue without counting a retry.
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as l \gset
select pg_temp.claim_job(:'l', :'T') ->> 'callback_token' as tl \gset
select ok((release_job(:'l', 1, :'T') ->> 'status') = 'queued' and (select retry_count = 0 from jobs where id = :'l'), 'released: queued, no retry spent');
select throws_ok(format('select release_job(%L, 1)', :'l'), 'VQ409', null, 'release twice: 409');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'l', :'tl', '{"video_url": "x"}'), 'VQ409', null, 'released attempt cannot complete');
select is((pg_temp.claim_job(:'l', :'T') ->> 'attempt')::int, 2, 'a released job is claimed again as attempt 2');

select * from finish();
rollback;
