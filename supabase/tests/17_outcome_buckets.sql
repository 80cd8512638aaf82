-- Outcome buckets: every way a job becomes terminal, leaves that state or goes away moves the counts the
-- stats read, and the stats, history and alerts equal a direct count of jobs at any p_now (bucket bounds cut
-- or not, jobs completed after p_now in the same bucket or not).
begin;
\ir _setup.psql
select plan(35);

-- The buckets summed over shards equal a count of the jobs through the rule (job_outcome_of), and no job
-- completed later than its bucket's max_completed_at says.
create function pg_temp.buckets_match() returns boolean language sql as $$
  with b as (select bucket, outcome, sum(n) as n, sum(timed_n) as t, sum(wait_sum) as w, sum(processing_sum) as p
               from private.job_outcome_buckets group by 1, 2
             having sum(n) <> 0 or sum(timed_n) <> 0 or sum(wait_sum) <> 0 or sum(processing_sum) <> 0),
       j as (select f.bucket, f.outcome, count(*)::numeric as n, sum(f.timed)::numeric as t, sum(f.wait_seconds) as w,
                    sum(f.processing_seconds) as p
               from public.jobs j
              cross join lateral private.job_outcome_of(j.status, j.cancel_reason, j.created_at, j.started_at, j.completed_at) f
              where j.completed_at is not null group by 1, 2)
  select not exists ((select * from b except select * from j) union all (select * from j except select * from b))
     and not exists (select 1 from public.jobs j
                      where j.completed_at > coalesce((select max(x.max_completed_at) from private.job_outcome_buckets x
                                                        where x.bucket = (private.job_outcome_of(j.status, j.cancel_reason,
                                                          j.created_at, j.started_at, j.completed_at)).bucket), '-infinity'))
$$;
-- What get_queue_stats reports of finished jobs, counted directly as it did before the buckets.
create function pg_temp.direct_stats(p_now timestamptz) returns jsonb language sql as $$
  select (select jsonb_build_object('completed_today', count(*) filter (where j.status = 'completed'),
                                    'failed_today', count(*) filter (where j.status = 'failed'),
                                    'cancelled_today', count(*) filter (where j.status = 'cancelled'),
                                    'expired_today', count(*) filter (where j.status = 'cancelled' and j.cancel_reason = 'expired'))
            from public.jobs j, public.job_queue_config c
           where j.completed_at >= date_trunc('day', p_now at time zone c.peak_time_zone) at time zone c.peak_time_zone
             and j.completed_at <= p_now)
      || (select jsonb_build_object('throughput_last_hour', count(*),
                                    'avg_wait_seconds', round(avg(extract(epoch from j.started_at - j.created_at)), 1),
                                    'avg_processing_seconds', round(avg(extract(epoch from j.completed_at - j.started_at)), 1))
            from public.jobs j
           where j.status = 'completed' and j.completed_at > p_now - interval '1 hour' and j.completed_at <= p_now)
$$;
create function pg_temp.stats_finished(p_now timestamptz) returns jsonb language sql as $$
  select jsonb_build_object('completed_today', s -> 'completed_today', 'failed_today', s -> 'failed_today',
                            'cancelled_today', s -> 'cancelled_today', 'expired_today', s -> 'expired_today',
                            'throughput_last_hour', s -> 'throughput_last_hour', 'avg_wait_seconds', s -> 'avg_wait_seconds',
                            'avg_processing_seconds', s -> 'avg_processing_seconds')
    from public.get_queue_stats(p_now) s
$$;
-- The history as it was counted before: completed and failed per local hour, the 24 up to p_now.
create function pg_temp.direct_history(p_now timestamptz) returns jsonb language sql as $$
  select jsonb_agg(jsonb_build_object('hour', f.h + i * interval '1 hour',
           'completed', (select count(*) from public.jobs j where j.status = 'completed'
                          and j.completed_at >= f.h + i * interval '1 hour' and j.completed_at < f.h + (i + 1) * interval '1 hour'
                          and j.completed_at <= p_now),
           'failed', (select count(*) from public.jobs j where j.status = 'failed'
                          and j.completed_at >= f.h + i * interval '1 hour' and j.completed_at < f.h + (i + 1) * interval '1 hour'
                          and j.completed_at <= p_now)) order by i)
    from (select date_trunc('hour', p_now, c.peak_time_zone) - interval '23 hours' as h from public.job_queue_config c) f,
         generate_series(0, 23) i
$$;
-- Stats, history and the alerts' failure rate agree with the direct counts at p_now.
create function pg_temp.agree(p_now timestamptz) returns boolean language sql as $$
  select pg_temp.stats_finished(p_now) = pg_temp.direct_stats(p_now)
     and queue.get_queue_history(p_now) = pg_temp.direct_history(p_now)
$$;
-- Claims one given job at p_at and completes it at p_end.
create function pg_temp.complete(p_id uuid, p_at timestamptz, p_end timestamptz) returns void language plpgsql as $$
declare v jsonb := pg_temp.claim_job(p_id, p_at);
begin
  perform queue.complete_job(p_id, (v ->> 'attempt')::int, v ->> 'callback_token', '{"video_url": "v"}', p_end);
end $$;
create function pg_temp.fail(p_id uuid, p_at timestamptz, p_end timestamptz, p_retryable boolean) returns void language plpgsql as $$
declare v jsonb := pg_temp.claim_job(p_id, p_at);
begin
  perform queue.fail_job(p_id, (v ->> 'attempt')::int, v ->> 'callback_token', 'render crashed', p_retryable, p_end);
end $$;
-- A job inserted finished (completed or failed) at p_end.
create function pg_temp.finished(p_type text, p_status text, p_end timestamptz) returns uuid language sql as $$
  insert into public.jobs (job_type, status, payload, created_at, started_at, completed_at, result, error_message)
  values (p_type, p_status, '{}', p_end - interval '3 min', p_end - interval '2 min', p_end,
          case when p_status = 'completed' then '{"video_url": "v"}'::jsonb end,
          case when p_status = 'failed' then 'render crashed' end) returning id
$$;
create function pg_temp.total(p_outcome text) returns numeric language sql as $$
  select coalesce(sum(n), 0) from private.job_outcome_buckets where outcome = p_outcome
$$;
grant execute on all functions in schema pg_temp to public;

-- The lifecycle functions ---------------------------------------------------------------------------------------
select pg_temp.mk('doubt', :'T'::timestamptz - interval '50 min') as a \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '49 min') as b \gset
select pg_temp.mk('topic_short', :'T'::timestamptz - interval '48 min') as c \gset
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '47 min') as d \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '46 min') as e \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '45 min') as q \gset
select is((select count(*) from private.job_outcome_buckets), 0::bigint, 'queued jobs count nowhere');

select pg_temp.complete(:'a', :'T'::timestamptz - interval '25 min', :'T'::timestamptz - interval '20 min');
select is(pg_temp.total('completed'), 1::numeric, 'complete_job counts a completion');
select is((select sum(timed_n)::int || '/' || sum(wait_sum) || '/' || sum(processing_sum)
             from private.job_outcome_buckets where outcome = 'completed'),
          '1/1500.000000/300.000000', 'with its wait (created -> started) and render seconds (started -> completed)');
select is((select bucket from private.job_outcome_buckets where outcome = 'completed'),
          '2026-01-15 11:30+05:30'::timestamptz, 'in the 15-minute bucket of its completed_at');
select pg_temp.complete(:'b', :'T'::timestamptz - interval '24 min', :'T'::timestamptz - interval '19 min');
select is((select count(*) from private.job_outcome_buckets), 1::bigint,
          'one session adds to the shard row it has (a new shard only when all are held elsewhere)');

select pg_temp.fail(:'c', :'T'::timestamptz - interval '15 min', :'T'::timestamptz - interval '10 min', true);
select is(pg_temp.total('failed'), 0::numeric, 'a retryable failure goes back to the queue: no outcome');
select pg_temp.fail(:'d', :'T'::timestamptz - interval '14 min', :'T'::timestamptz - interval '9 min', false);
select is(pg_temp.total('failed'), 1::numeric, 'fail_job (no retry) counts a failure');
select ok(pg_temp.buckets_match(), 'the buckets match the jobs');

select pg_temp.as_service();
select queue.cancel_job(:'e', 'not needed', :'T'::timestamptz - interval '8 min');
select pg_temp.as_postgres();
select is(pg_temp.total('cancelled'), 1::numeric, 'cancel_job counts a cancellation');
select pg_temp.claim_job(:'q', :'T'::timestamptz - interval '7 min');
select pg_temp.as_service();
select queue.cancel_job(:'q', null, :'T'::timestamptz - interval '6 min');
select pg_temp.as_postgres();
select is(pg_temp.total('cancelled'), 2::numeric, 'cancelling a running job counts too');

insert into jobs (job_type, status, payload, created_at, expires_at)
  values ('doubt', 'queued', '{}', :'T'::timestamptz - interval '30 min', :'T'::timestamptz - interval '5 min');
select private.expire_queued_jobs(:'T'::timestamptz - interval '4 min');
select is(pg_temp.total('expired'), 1::numeric, 'an expired job counts as expired (and as cancelled in the stats)');

select pg_temp.as_service();
select queue.retry_job(:'d', :'T'::timestamptz - interval '3 min');
select pg_temp.as_postgres();
select is(pg_temp.total('failed'), 0::numeric, 'retry_job takes a failed job back to the queue: un-counted');
select ok(pg_temp.buckets_match(), 'the buckets match the jobs');
select ok(pg_temp.agree(:'T'), 'stats and history equal a direct count');

-- Timeouts: recover_expired_attempts fails a job with no retries left ----------------------------------------
update jobs set max_retries = 0 where id = :'c';
select pg_temp.claim_job(:'c', :'T'::timestamptz - interval '2 min');
select queue.recover_expired_attempts(:'T'::timestamptz + interval '2 hours');
select is((select status from jobs where id = :'c'), 'failed', 'the timed-out job failed');
select ok(pg_temp.buckets_match(), 'a failure by timeout is counted');

-- Hand-written statements --------------------------------------------------------------------------------------
update jobs set status = 'completed', result = '{"video_url": "v"}' where id = :'d';
select is(pg_temp.total('completed'), 3::numeric, 'UPDATE jobs SET status = completed counts it');
update jobs set completed_at = :'T'::timestamptz - interval '2 days' where id = :'a';
select ok(pg_temp.buckets_match(), 'a completed_at changed by hand moves the job to its new bucket');
update jobs set started_at = started_at - interval '1 min' where id = :'b';
select ok(pg_temp.buckets_match(), 'a started_at changed by hand changes the sums');
update jobs set cancel_reason = 'expired' where id = :'e';
select is(pg_temp.total('expired'), 2::numeric, 'a cancel_reason changed to expired moves the job to expired');
update jobs set status = 'queued' where id = :'b';
select ok(pg_temp.buckets_match(), 'a finished job put back to queued by hand is un-counted');
update jobs set progress = progress where completed_at is not null;
select ok(pg_temp.buckets_match(), 'an update that moves nothing changes nothing');

-- Inserted finished, deleted (pruning) ----------------------------------------------------------------------------
select pg_temp.finished('doubt', 'completed', :'T'::timestamptz - interval '1 min');
select pg_temp.finished('doubt', 'completed', :'T'::timestamptz + interval '1 min');    -- after p_now, same bucket
select pg_temp.finished('daily_ca', 'failed', :'T'::timestamptz - interval '61 min');
select pg_temp.finished('daily_ca', 'failed', :'T'::timestamptz - interval '59 min');
select pg_temp.finished('topic_short', 'completed', '2026-01-14 23:59:59.999999+05:30');  -- yesterday (IST)
select pg_temp.finished('topic_short', 'completed', '2026-01-15 00:00+05:30');            -- today's first instant
select ok(pg_temp.buckets_match(), 'rows inserted finished are counted');
select ok(pg_temp.agree(:'T'), 'stats and history at a bucket boundary equal a direct count');
select ok(pg_temp.agree(:'T'::timestamptz + interval '7 min 30 s'), '... mid-bucket, with a job completed after p_now in it');
select ok(pg_temp.agree(:'T'::timestamptz - interval '1 min'), '... at the instant of a completion');
select ok(pg_temp.agree(:'T'::timestamptz - interval '1 min' - interval '1 microsecond'), '... a microsecond before it');
select ok(pg_temp.agree(:'T'::timestamptz + interval '1 hour 1 min'), '... with the last hour cutting a bucket');
select ok(pg_temp.agree('2026-01-15 00:00+05:30'), '... at local midnight');
update job_queue_config set peak_time_zone = 'Asia/Kathmandu';  -- +05:45
select ok(pg_temp.agree(:'T'::timestamptz + interval '3 min'), '... in a +05:45 zone');
update job_queue_config set peak_time_zone = 'Asia/Kolkata';

-- The day-old bucket in three shards, as concurrent writers leave one (two more rows netting to nothing).
select bucket as old_bucket from private.job_outcome_buckets where bucket < :'T'::timestamptz - interval '1 day' \gset
insert into private.job_outcome_buckets (bucket, outcome, shard, n)
select :'old_bucket', 'completed', f.shard, f.d
  from (select s.shard, case when row_number() over (order by s.shard) = 1 then 1 else -1 end as d
          from generate_series(0, 15) s(shard)
         where s.shard not in (select shard from private.job_outcome_buckets where bucket = :'old_bucket')
         order by s.shard limit 2) f;
select is((select count(*) from private.job_outcome_buckets where bucket = :'old_bucket'), 3::bigint, 'three shard rows');
delete from jobs where completed_at < :'T'::timestamptz - interval '1 day';
select ok(pg_temp.buckets_match(), 'deleted finished jobs (pruning) are un-counted');
select is((select count(*) from private.job_outcome_buckets where bucket = :'old_bucket'), 0::bigint,
          'and the shard rows of a bucket left empty are folded away');

truncate jobs cascade;
select is((select count(*) from private.job_outcome_buckets), 0::bigint, 'a truncate empties the buckets');
select is(pg_temp.stats_finished(:'T') - 'avg_wait_seconds' - 'avg_processing_seconds',
          '{"completed_today": 0, "failed_today": 0, "cancelled_today": 0, "expired_today": 0, "throughput_last_hour": 0}'::jsonb,
          'and the stats count nothing');

select * from finish();
rollback;
