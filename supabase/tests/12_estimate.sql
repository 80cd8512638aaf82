-- The estimate (API.md "Scheduling"): render times per job type where there is history, capacity that changes
-- at a peak-window boundary before the job would start, and no estimate while paused. Injected clock.
begin;
\ir _setup.psql
select plan(6);

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

-- One slot, busy: the next job waits one render, at the renderer's recent mean (the renders ahead are of any
-- type); a user at max_processing_per_user waits for their running job, by its own type's render time.
update job_queue_config set max_concurrent_renders = 1, peak_worker_multiplier = 1;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '10 min', :'U1') as busy \gset
select pg_temp.claim_job(:'busy', :'T');
select pg_temp.mk('doubt', :'T'::timestamptz - interval '5 min') as d \gset
select is((get_job(:'d', :'T') ->> 'estimated_wait_seconds')::int, 240, 'one render ahead at the renderer''s mean');
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
select is((get_job(:'late', :'N') ->> 'estimated_wait_seconds')::int, 1800 + 300,
          '20 renders of 120 s: 30 minutes at one slot, then the rest at two once the peak window opens');
select is((get_job(:'late', :'N'::timestamptz + interval '4 hours') ->> 'estimated_wait_seconds')::int, 2400,
          'with no boundary before it would start, the plain rate');

select set_paused(true, 'revideo');
select is(get_job(:'late', :'N') -> 'estimated_wait_seconds', 'null'::jsonb,
          'no estimate while its renderer is paused (wait_reason says why)');

select * from finish();
rollback;
