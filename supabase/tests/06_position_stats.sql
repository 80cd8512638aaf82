-- Positions (exact, claim order), wait estimates, the depth counters, stats and metrics.
begin;
\ir _setup.psql
select plan(21);

update job_queue_config set max_concurrent_renders = 2;  -- off-peak (:'N') capacity 2
select pg_temp.mk('daily_ca', :'N'::timestamptz - interval '6 min') as l1 \gset
select pg_temp.mk('doubt', :'N'::timestamptz - interval '5 min') as h1 \gset
select pg_temp.mk('topic_short', :'N'::timestamptz - interval '4 min') as m1 \gset
select pg_temp.mk('daily_ca', :'N'::timestamptz - interval '3 min') as l2 \gset
select pg_temp.mk('doubt', :'N'::timestamptz - interval '2 min') as h2 \gset
select is(array[(get_job(:'h1', :'N') ->> 'queue_position')::int, (get_job(:'h2', :'N') ->> 'queue_position')::int,
                (get_job(:'m1', :'N') ->> 'queue_position')::int, (get_job(:'l1', :'N') ->> 'queue_position')::int,
                (get_job(:'l2', :'N') ->> 'queue_position')::int], array[1, 2, 3, 4, 5], 'positions follow claim order');
-- Estimates: slots 2, nothing processing, default 120 s per render: before = max(0, pos-1+0-2+1).
select is(array[(get_job(:'h1', :'N') ->> 'estimated_wait_seconds')::int, (get_job(:'h2', :'N') ->> 'estimated_wait_seconds')::int,
                (get_job(:'m1', :'N') ->> 'estimated_wait_seconds')::int, (get_job(:'l2', :'N') ->> 'estimated_wait_seconds')::int],
          array[0, 0, 60, 180], 'estimate = ceil(renders to finish first x avg / slots)');
select pg_temp.mk('doubt', :'N'::timestamptz - interval '1 min') as h3 \gset
select is((get_job(:'l2', :'N') ->> 'queue_position')::int, 6, 'a new high job moves lows back');
select is(pg_temp.claim_ids(:'N'), array[:'h1', :'h2']::uuid[], 'claim takes positions 1 and 2');
select is(array[(get_job(:'h3', :'N') ->> 'queue_position')::int, (get_job(:'l2', :'N') ->> 'queue_position')::int],
          array[1, 4], 'positions shift after the claim');
select is(get_job(:'h3', :'N') ->> 'estimated_wait_seconds', '60', 'both slots busy: the next job waits for one of 2 renders (120 s / 2)');
select is(get_job(:'h1', :'N') ->> 'queue_position', null, 'no position when not queued');
select is(get_job(:'h1', :'N') ->> 'estimated_wait_seconds', null, 'no estimate when not queued');
-- Learned processing time per renderer: the orchestrator jobs took 60 s.
update job_queue_config set max_concurrent_renders = 3;
select pg_temp.claim_job(:'h3', :'N') ->> 'callback_token' as t3 \gset
select complete_job(:'h3', 1, :'t3', '{"video_url": "v"}', :'N'::timestamptz + interval '60 s');
select is(renderer_avg_processing_seconds('orchestrator', :'N'::timestamptz + interval '61 s'), 60::numeric, 'avg from recent completions');
select is(renderer_avg_processing_seconds('revideo', :'N'), 120::numeric, 'default when a renderer has no history');
-- A delayed job's estimate is at least the time until it may run.
select (enqueue_job('daily_ca', '{"date": "2026-01-15"}', p_run_at => :'N'::timestamptz + interval '1 hour', p_now => :'N') -> 'job') as dj \gset
select ok((:'dj'::jsonb ->> 'estimated_wait_seconds')::int >= 3600, 'delayed job: estimate >= time to run_at');

-- Position with more than 1,000 jobs behind (counted from the front) and the depth counters.
insert into jobs (job_type, status, payload, created_at)
  select 'daily_ca', 'queued', '{}', :'N'::timestamptz + g * interval '1 ms' from generate_series(1, 2500) g;
select id as k from jobs where status = 'queued' and priority_rank = 2 order by created_at, id offset 9 limit 1 \gset
select is((get_job(:'k', :'N') ->> 'queue_position')::int,
          (select count(*)::int from jobs where status = 'queued' and (priority_rank, created_at, id) <= (2, (select created_at from jobs where id = :'k'), :'k'::uuid)),
          'exact position deep in a long queue');
select is((select sum(n) from queue_depth_slots), (select count(*) from jobs where status = 'queued')::numeric, 'depth counters = queued rows');
select is((select array_agg(s.n order by s.r) from (select priority_rank r, sum(n) n from queue_depth_slots group by 1) s),
          (select array_agg(c.n order by c.r) from (select p.r, (select count(*) from jobs j where j.status = 'queued' and j.priority_rank = p.r)::numeric n
                                                     from generate_series(0, 2) p(r)) c), 'depth per priority');
delete from jobs where id in (select id from jobs where status = 'queued' order by random() limit 700);
update jobs set status = 'cancelled', completed_at = now(), next_attempt_at = null
 where id in (select id from jobs where status = 'queued' order by random() limit 300);
select is((select sum(n) from queue_depth_slots), (select count(*) from jobs where status = 'queued')::numeric, 'depth counters survive deletes and updates');
-- Counted from the nearer end: the end is guessed from created_at, so arrivals that bunch up (1,000 more an
-- hour later) make the guess wrong for jobs in the middle of their priority; every position is still exact.
insert into jobs (job_type, status, payload, created_at)
  select 'daily_ca', 'queued', '{}', :'N'::timestamptz + interval '1 hour' + g * interval '1 ms' from generate_series(1, 1000) g;
select is((select count(*)::int from (select j, row_number() over (order by j.priority_rank, j.created_at, j.id) as rn
                                        from jobs j where j.status = 'queued') q
            where private.job_queue_position(q.j) <> q.rn), 0,
          'every queued job at its exact position, whichever end it is counted from');

-- Stats.
truncate jobs cascade;
update job_queue_config set max_concurrent_renders = 10;
select is((select sum(n) from queue_depth_slots), 0::numeric, 'truncate resets the depth');
insert into jobs (job_type, status, payload, created_at, started_at, completed_at, result, attempt)
  select 'topic_short', 'completed', '{}', :'T'::timestamptz - interval '30 min', :'T'::timestamptz - interval '20 min',
         :'T'::timestamptz - interval '20 min' + g * interval '1 min', '{"video_url": "v"}', 1 from generate_series(1, 4) g;
insert into jobs (job_type, status, payload, created_at, completed_at, error_message)
  values ('daily_ca', 'failed', '{}', :'T'::timestamptz - interval '2 hours', :'T'::timestamptz - interval '90 min', 'x'),
         ('daily_ca', 'failed', '{}', '2026-01-14 12:00+05:30', '2026-01-14 12:00+05:30', 'yesterday');
select pg_temp.mk('doubt', :'T'::timestamptz - interval '5 min') as q1 \gset
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min') as q2 \gset
select pg_temp.claim_job(:'q2', :'T');
select get_queue_stats(:'T') as s \gset
select is(:'s'::jsonb - 'generated_at' - 'by_renderer', jsonb_build_object(
  'queued', 1, 'processing', 1, 'completed_today', 4, 'failed_today', 1, 'cancelled_today', 0, 'expired_today', 0,
  'paused', false,
  'by_priority', '{"high": {"queued": 1, "processing": 0}, "medium": {"queued": 0, "processing": 0}, "low": {"queued": 0, "processing": 1}}'::jsonb,
  'capacity', '{"max_concurrent": 10, "effective": 15, "peak": true, "multiplier": 1.5}'::jsonb,
  'avg_wait_seconds', 600.0, 'avg_processing_seconds', 150.0, 'throughput_last_hour', 4, 'oldest_queued_seconds', 300),
  'stats object');
select is(:'s'::jsonb -> 'by_renderer', '{"manim": {"processing": 0, "limit": 4, "paused": false}, "revideo": {"processing": 1, "limit": 15, "paused": false}, "orchestrator": {"processing": 0, "limit": 15, "paused": false}}'::jsonb,
          'by_renderer: processing, limit and pause state');
select ok(get_queue_metrics(:'T') -> 'counters' ?& array['jobs_completed_total', 'jobs_failed_total', 'jobs_retried_total'],
          'metrics carry the monotonic counters');
select is(get_queue_metrics(:'T') -> 'processing_seconds_quantiles' ->> '0.5', '150', 'metrics: processing time median (last hour)');

select * from finish();
rollback;
