-- One lifecycle: job status is written by set_job_state (and the claim) only, attempts are closed by
-- close_attempt only, and the operators' escape hatch (a hand-written status change) gives the same row as
-- the writer.
begin;
\ir _setup.psql
select plan(7);

-- The one writer, checked in the catalog: any other function writing jobs.status or closing attempts fails this.
select is((select array_agg(p.proname::text order by p.proname) from pg_proc p
            where p.pronamespace in ('public'::regnamespace, 'queue'::regnamespace, 'private'::regnamespace)
              and p.prosrc ~* 'update\s+public\.jobs\s[^;]*set\s[^;]*\mstatus\s*='),
          array['claim_jobs', 'set_job_state'], 'only the claim and set_job_state write a job''s status');
select is((select array_agg(p.proname::text order by p.proname) from pg_proc p
            where p.pronamespace in ('public'::regnamespace, 'queue'::regnamespace, 'private'::regnamespace)
              and p.prosrc ~* 'update\s+public\.job_attempts\s[^;]*set\s[^;]*\moutcome\s*='),
          array['close_attempt'], 'only close_attempt closes an attempt');

select throws_ok($$select private.job_state(null::public.jobs, 'processing', now())$$, '22023', null,
                 'no state writer starts an attempt: only claim_jobs does');

-- Two processing jobs, one cancelled through the API, one by hand: the same columns, by the same rules.
select pg_temp.mk('doubt', :'T'::timestamptz - interval '2 min') as a \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as b \gset
select pg_temp.claim_job(:'a', :'T');
select pg_temp.claim_job(:'b', :'T');
select (cancel_job(:'a', 'no longer needed', now()) -> 'job' ->> 'status') as s \gset
update jobs set status = 'cancelled', cancel_reason = 'no longer needed' where id = :'b';
select is(
  (select row(status, lease_expires_at is null, next_attempt_at, completed_at is not null, worker_id is not null,
              endpoint_id is not null, progress, stage, error_message, cancel_reason)::text from jobs where id = :'b'),
  (select row(status, lease_expires_at is null, next_attempt_at, completed_at is not null, worker_id is not null,
              endpoint_id is not null, progress, stage, error_message, cancel_reason)::text from jobs where id = :'a'),
  'a hand-written cancel gives the row cancel_job gives');
select is((select array_agg(outcome order by job_id = :'a' desc) from job_attempts where job_id in (:'a', :'b')),
          array['cancelled', 'released'], 'each closed its attempt: the API as cancelled, the hand as released');

-- The seeds' reset of a stuck job and release_job both give a fresh, claimable queued job.
select pg_temp.mk('doubt', :'T'::timestamptz - interval '30 s') as c \gset
select pg_temp.claim_job(:'c', :'T') ->> 'attempt' as att \gset
select release_job(:'c', :'att'::int, now());
select pg_temp.claim_job(:'c', :'T');
update jobs set status = 'queued' where id = :'c';
select is((select row(lease_expires_at, worker_id, endpoint_id, progress, stage, completed_at)::text from jobs where id = :'c'),
          row(null::timestamptz, null::text, null::uuid, 0, null::text, null::timestamptz)::text,
          'a hand-written reset leaves a job as fresh as release_job does');
select is((select count(*)::int from job_attempts where job_id = :'c' and outcome is null), 0,
          'and leaves no attempt open');

select * from finish();
rollback;
