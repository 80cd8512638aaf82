-- The estimate (API.md "Scheduling"): render times per job type where there is history, capacity that changes
-- at a peak-window boundary before the job would start, and no estimate while paused; jobs ahead counted on
-- the renderer they will run on, running renders by what they have left, taken together. Injected clock.
begin;
\ir _setup.psql
select plan(13);

-- History on the orchestrator: three doubts of 60 s, three topic shorts of 300 s, one daily video of 600 s.
insert into jobs (job_type, renderer, status, payload, created_at, started_at, completed_at, result, attempt, worker_id)
select t, 'orchestrator', 'completed', '{}', :'T'::timestamptz - interval '2 hours', s, s + d, '{"video_url": "x"}', 1, 'w'
  from (values ('doubt', interval '60 s'), ('doubt', interval '60 s'), ('doubt', interval '60 s'),
               ('topic_short', interval '300 s'), ('topic_short', interval '300 s'), ('topic_short', interval '300 s'),
               ('daily_ca', interval '600 s')) v(t, d),
       lateral (select :'T'::timestamptz - interval '1 hour' as s) x;
select is(array[private.render_seconds('orchestrator', 'doubt', :'T'), private.render_seconds('orchestrator', 'topic_short', :'T'),
                round(private.render_seconds('orchestrator', 'daily_ca', :'T'))],
          array[60, 300, 240]::numeric[], 'per type with 3 or more completions; the renderer''s mean otherwise');

-- One slot, busy with a doubt that just started: the next job waits for it to end, by its own type's render
-- time (60 s; the renderer's mean over every type is 240 s); a user at max_processing_per_user waits for their
-- running job, by its own type's render time.
update job_queue_config set max_concurrent_renders = 1, peak_worker_multiplier = 1;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '10 min', :'U1') as busy \gset
select pg_temp.claim_job(:'busy', :'T');
select pg_temp.mk('doubt', :'T'::timestamptz - interval '5 min') as d \gset
select is((get_job(:'d', :'T') ->> 'estimated_wait_seconds')::int, 60, 'one render ahead: the running doubt''s type''s render time');
update job_queue_config set max_concurrent_renders = 10, max_processing_per_user = 1;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '4 min', :'U1') as mine \gset
select is((get_job(:'mine', :'T'::timestamptz + interval '20 s') ->> 'estimated_wait_seconds')::int, 40,
          'the user''s running doubt ends in 60 - 20 s: its type''s render time');
update job_queue_config set max_processing_per_user = null;

-- Capacity that changes before the job would start: 1 slot off-peak, 2 from 03:30 (a window 03:30-04:00).
update jobs set status = 'cancelled' where status in ('queued', 'processing');
update job_queue_config set max_concurrent_renders = 1, peak_worker_multiplier = 2,
                            peak_hour_start = '03:30', peak_hour_end = '04:00';
select pg_temp.mk('daily_ca', :'N'::timestamptz - interval '1 hour' + g * interval '1 s') from generate_series(1, 20) g;
select pg_temp.mk('daily_ca', :'N'::timestamptz - interval '30 min') as late \gset
select is((get_job(:'late', :'N') ->> 'estimated_wait_seconds')::int, 1800 + 240,
          '20 renders of 120 s ahead: 16 start by 03:30 at one slot, the 17th as the second slot opens, then two per 120 s');
select is((get_job(:'late', :'N'::timestamptz + interval '4 hours') ->> 'estimated_wait_seconds')::int, 2400,
          'with no boundary before it would start, the plain rate');

select set_paused(true, 'revideo');
select is(get_job(:'late', :'N') -> 'estimated_wait_seconds', 'null'::jsonb,
          'no estimate while its renderer is paused (wait_reason says why)');

select set_paused(false, 'revideo');

-- Running renders by what they have left, taken together: three doubts (60 s each) that have run 0, 30 and
-- 50 s have 60, 30 and 15 s to go (at least a quarter of 60): the first of them is expected to end after
-- 1 / (1/60 + 1/30 + 1/15) s, sooner than any one of them.
update jobs set status = 'cancelled' where status in ('queued', 'processing');
update job_queue_config set max_concurrent_renders = 3, peak_worker_multiplier = 1;
select pg_temp.claim_job(pg_temp.mk('doubt', :'T'::timestamptz - interval '3 min'), :'T'::timestamptz - interval '50 s');
select pg_temp.claim_job(pg_temp.mk('doubt', :'T'::timestamptz - interval '3 min'), :'T'::timestamptz - interval '30 s');
select pg_temp.claim_job(pg_temp.mk('doubt', :'T'::timestamptz - interval '3 min'), :'T');
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as next \gset
select is((get_job(:'next', :'T') ->> 'estimated_wait_seconds')::int, 9, 'the first of three running renders ends sooner than each');

-- Jobs ahead count on the renderer they will run on: topic shorts queued for a full Manim hold Manim's slots,
-- not Revideo's.
update jobs set status = 'cancelled' where status in ('queued', 'processing');
update job_queue_config set max_concurrent_renders = 4, max_manim_renders = 2;
select pg_temp.claim_job(pg_temp.mk('topic_short', :'T'::timestamptz - interval '20 min'), :'T');
select pg_temp.claim_job(pg_temp.mk('topic_short', :'T'::timestamptz - interval '20 min'), :'T');
select pg_temp.mk('topic_short', :'T'::timestamptz - interval '10 min' + g * interval '1 s') from generate_series(1, 10) g;
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min') as ca \gset
select is((get_job(:'ca', :'T') ->> 'queue_position')::int, 11, 'ten topic shorts ahead of it in claim order');
select is((get_job(:'ca', :'T') ->> 'estimated_wait_seconds')::int, 0,
          'a free slot on its renderer and globally: none of the topic shorts ahead can take it');
update renderers set max_concurrent = 1 where name = 'revideo';
select pg_temp.claim_job(pg_temp.mk('daily_ca', :'T'::timestamptz - interval '2 min'), :'T');
select is((get_job(:'ca', :'T') ->> 'estimated_wait_seconds')::int, 120,
          'Revideo full: it waits for the Revideo render ahead (120 s, no history), not for the topic shorts');

-- A job ahead that is held back (retry backoff) does not take the free slot.
update jobs set status = 'cancelled' where status in ('queued', 'processing');
update job_queue_config set max_concurrent_renders = 1;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '10 min') as backoff \gset
update jobs set next_attempt_at = :'T'::timestamptz + interval '5 min', retry_count = 1 where id = :'backoff';
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as after \gset
select is(array[(get_job(:'after', :'T') ->> 'queue_position')::int, (get_job(:'after', :'T') ->> 'estimated_wait_seconds')::int],
          array[2, 0], 'second in line, but the job ahead is in backoff: it starts at the next pass');

-- No usable endpoint for its renderer: no claim starts it until one is back, so no estimate (null, as while
-- paused; wait_reason says no_endpoint), also while its only endpoint cools down after a failure.
update render_endpoints set disabled = true where renderer = 'orchestrator';
select is(array[get_job(:'after', :'T') ->> 'wait_reason', get_job(:'after', :'T') ->> 'estimated_wait_seconds'],
          array['no_endpoint', null], 'no usable endpoint: no estimate');
update render_endpoints set disabled = false, unhealthy_until = :'T'::timestamptz + interval '30 s' where renderer = 'orchestrator';
select is(array[get_job(:'after', :'T') ->> 'wait_reason', get_job(:'after', :'T') ->> 'estimated_wait_seconds',
                get_job(:'after', :'T'::timestamptz + interval '31 s') ->> 'estimated_wait_seconds'],
          array['no_endpoint', null, '0'], 'none while its endpoint cools down; an estimate again once it may take jobs');

select * from finish();
rollback;
