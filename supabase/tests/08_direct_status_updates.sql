-- The seeds' hand-written UPDATEs keep working: the "reset stuck jobs" statement gives a valid queued
-- job that is claimed again, and the attempt it ended is fenced off.
begin;
\ir _setup.psql
select plan(7);

select pg_temp.mk('doubt', :'T'::timestamptz - interval '20 min') as j \gset
select pg_temp.claim_job(:'j', :'T'::timestamptz - interval '15 min') ->> 'callback_token' as tok \gset
update jobs set started_at = now() - interval '15 minutes' where id = :'j';

select lives_ok($$
  UPDATE jobs SET status = 'queued', retry_count = retry_count + 1
   WHERE status = 'processing' AND started_at < NOW() - INTERVAL '10 minutes'
$$, 'the seeds'' manual reset of stuck jobs runs');
select ok((select status = 'queued' and retry_count = 1 and lease_expires_at is null and worker_id is null
                  and next_attempt_at is not null from jobs where id = :'j'),
          'the job is validly queued: lease cleared, claimable');
select is((select outcome from job_attempts where job_id = :'j' and attempt = 1), 'released',
          'the attempt it ended is closed');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'j', :'tok', '{"video_url": "x"}'), 'VQ409', null,
                 'a late callback of that attempt is refused');
select is(pg_temp.claim_ids(now() + interval '1 min'), array[:'j'::uuid], 'it is claimed again');
select is((select attempt from jobs where id = :'j'), 2, 'as a new attempt');

select lives_ok($$ update jobs set status = 'failed' where status = 'processing' $$,
                'failing a job by hand gives a valid failed job');

select * from finish();
rollback;
