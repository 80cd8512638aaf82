-- Bounded priority overtake (priority offsets) and per-user fairness (max_processing_per_user): claim order,
-- exact positions and wait reasons under both rules. Injected clock.
begin;
\ir _setup.psql
select plan(12);

select throws_ok($$update job_queue_config set high_priority_offset_minutes = 60$$, '23514', null,
                 'offsets are set for all three priorities or none');

-- Offsets high 60 / medium 30 / low 0: a daily video waits behind newer doubts for at most an hour.
update job_queue_config set high_priority_offset_minutes = 60, medium_priority_offset_minutes = 30,
                            low_priority_offset_minutes = 0;
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '70 min') as l \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '15 min') as h1 \gset
select pg_temp.mk('doubt', :'T'::timestamptz) as h2 \gset
select is(array[(get_job(:'h1', :'T') ->> 'queue_position')::int, (get_job(:'l', :'T') ->> 'queue_position')::int,
                (get_job(:'h2', :'T') ->> 'queue_position')::int],
          array[1, 2, 3], 'a doubt 55 minutes newer goes first; one 70 minutes newer waits behind the daily video');
update job_queue_config set max_concurrent_renders = 1, peak_worker_multiplier = 1;
select is(pg_temp.claim_ids(:'T'), array[:'h1'::uuid], 'the claim takes the same first job');
update job_queue_config set max_concurrent_renders = 10;
select is(pg_temp.claim_ids(:'T'), array[:'l'::uuid, :'h2'::uuid], 'then the rest in that order');

-- Without offsets, strict priority again: the newest doubt before the oldest daily video.
update jobs set status = 'cancelled' where status <> 'cancelled';
update job_queue_config set high_priority_offset_minutes = null, medium_priority_offset_minutes = null,
                            low_priority_offset_minutes = null;
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '3 hours') as l2 \gset
select pg_temp.mk('doubt', :'T'::timestamptz) as h3 \gset
select is(array[(get_job(:'h3', :'T') ->> 'queue_position')::int, (get_job(:'l2', :'T') ->> 'queue_position')::int],
          array[1, 2], 'unset offsets keep strict high before low');
update jobs set status = 'cancelled' where status <> 'cancelled';

-- Fairness: one user asks for three doubts, another for one; each may run one at a time.
update job_queue_config set max_processing_per_user = 1;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '4 min', :'U1') as a1 \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '3 min', :'U1') as a2 \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '2 min', :'U1') as a3 \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min', :'U2') as b1 \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '30 s') as s1 \gset
select is(pg_temp.claim_ids(:'T'), array[:'a1'::uuid, :'b1'::uuid, :'s1'::uuid],
          'one job of each user runs, and a service job is not limited; the cap holds within one pass');
select is((select count(*)::int from jobs where status = 'processing' and user_id = :'U1'), 1, 'never two of U1''s at once');
select is(array[get_job(:'a2', :'T') ->> 'wait_reason', get_job(:'a2', :'T') ->> 'queue_position',
                get_job(:'a3', :'T') ->> 'queue_position'],
          array['user_limit', '1', '2'], 'the rest wait as user_limit, with exact positions');
select is((get_job(:'a2', :'T') ->> 'estimated_wait_seconds')::int, 120,
          'and an estimate that waits for their running job to end (default 120 s render, just started)');
select is(pg_temp.claim_ids(:'T'), '{}'::uuid[], 'a later pass claims none of them while U1 is at its cap');
update jobs set status = 'completed', result = '{"video_url": "https://cdn/a1.mp4"}' where id = :'a1';
select is(pg_temp.claim_ids(:'T'), array[:'a2'::uuid], 'when one finishes, the next of U1''s starts');
select is(get_job(:'a3', :'T') ->> 'wait_reason', 'user_limit', 'and the last waits again');

select * from finish();
rollback;
