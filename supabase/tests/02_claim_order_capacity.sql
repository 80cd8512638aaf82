-- Claim: order (priority, FIFO), delayed jobs, peak windows and capacity, renderer caps, endpoints.
begin;
\ir _setup.psql
select plan(29);

-- Ordering: high > medium > low, FIFO within a priority.
select pg_temp.mk('daily_ca', :'N'::timestamptz - interval '5 min') as l1 \gset
select pg_temp.mk('topic_short', :'N'::timestamptz - interval '4 min') as m1 \gset
select pg_temp.mk('doubt', :'N'::timestamptz - interval '3 min') as h1 \gset
select pg_temp.mk('daily_ca', :'N'::timestamptz - interval '2 min') as l2 \gset
select pg_temp.mk('doubt', :'N'::timestamptz - interval '1 min') as h2 \gset
select is(pg_temp.claim_ids(:'N', 2), array[:'h1', :'h2']::uuid[], 'highs first, FIFO');
select is(pg_temp.claim_ids(:'N'), array[:'m1', :'l1', :'l2']::uuid[], 'then medium, then lows FIFO');
select is((select count(*) from jobs where status = 'processing'), 5::bigint, 'five processing');
select is(pg_temp.claim_ids(:'N'), '{}'::uuid[], 'nothing left to claim');
-- same created_at: ties broken by id
truncate jobs cascade;
insert into jobs (job_type, status, payload, created_at)
  select 'daily_ca', 'queued', '{}', :'N'::timestamptz - interval '1 min' from generate_series(1, 3);
select is(pg_temp.claim_ids(:'N'), (select array_agg(id order by id) from jobs), 'equal created_at: ordered by id');

-- Delayed jobs wait for their time.
truncate jobs cascade;
select (enqueue_job('doubt', '{"question": "later"}', p_run_at => :'N'::timestamptz + interval '10 min', p_now => :'N')->'job'->>'id') as d1 \gset
select is((get_job(:'d1', :'N')->>'next_attempt_at')::timestamptz, :'N'::timestamptz + interval '10 min', 'next_attempt_at shown while ahead');
select is(pg_temp.claim_ids(:'N'), '{}'::uuid[], 'a job with run_at in the future is not claimed');
select is(pg_temp.claim_ids(:'N'::timestamptz + interval '9 min 59 s'), '{}'::uuid[], '... not a second early');
select is(pg_temp.claim_ids(:'N'::timestamptz + interval '10 min'), array[:'d1']::uuid[], '... and is claimed when due');

-- Peak windows change capacity (injected clock). Seed config: 10, x1.5 in 06:00-21:00 IST.
truncate jobs cascade;
insert into jobs (job_type, status, payload, created_at)
  select 'daily_ca', 'queued', '{}', :'N'::timestamptz - interval '1 hour' + g * interval '1 s' from generate_series(1, 30) g;
select is(cardinality(pg_temp.claim_ids(:'N')), 10, 'off-peak: max_concurrent_renders (10)');
select is(cardinality(pg_temp.claim_ids(:'T')), 5, 'in peak: floor(10 x 1.5) = 15 in all');
update job_queue_config set max_concurrent_renders = 15 where id = (select id from job_queue_config limit 1);
select is(cardinality(pg_temp.claim_ids(:'N')), 0, 'seed UPDATE to 15: off-peak 15 already running');
select is(cardinality(pg_temp.claim_ids(:'T')), 7, 'in peak: floor(15 x 1.5) = 22');
-- Seed peak UPDATE (07:00-22:00, x2.0)
UPDATE job_queue_config SET peak_hour_start = '07:00', peak_hour_end = '22:00', peak_worker_multiplier = 2.0
 WHERE id = (SELECT id FROM job_queue_config LIMIT 1);
select is((select effective from queue_capacity('2026-01-15 06:59:59+05:30')), 15, 'seed peak update: 06:59 off-peak');
select is((select effective from queue_capacity('2026-01-15 07:00:00+05:30')), 30, 'seed peak update: 07:00 peak x2');
select is((select effective from queue_capacity('2026-01-15 22:00:00+05:30')), 15, 'seed peak update: end is exclusive');
-- Windows crossing midnight, several windows, and the time zone.
update job_queue_config set peak_hour_start = '22:00', peak_hour_end = '02:00';
select is(array[queue_is_peak('2026-01-15 21:59+05:30'), queue_is_peak('2026-01-15 23:30+05:30'),
                queue_is_peak('2026-01-16 00:00+05:30'), queue_is_peak('2026-01-16 01:59+05:30'),
                queue_is_peak('2026-01-16 02:00+05:30')],
          array[false, true, true, true, false], 'a window crossing midnight (22:00-02:00)');
update job_queue_config set peak_hour_start = '06:00', peak_hour_end = '09:00';
insert into peak_windows (starts_at, ends_at, label) values ('20:00', '23:00', 'evening');
select is(array[queue_is_peak('2026-01-15 05:59+05:30'), queue_is_peak('2026-01-15 07:00+05:30'),
                queue_is_peak('2026-01-15 12:00+05:30'), queue_is_peak('2026-01-15 20:30+05:30'),
                queue_is_peak('2026-01-15 23:00+05:30')],
          array[false, true, false, true, false], 'AC10 windows: 6-9 AM and 8-11 PM');
update job_queue_config set peak_time_zone = 'UTC';
select is(array[queue_is_peak('2026-01-15 07:00+05:30'), queue_is_peak('2026-01-15 07:00+00')],
          array[false, true], 'windows are read in peak_time_zone');
select throws_ok($$update job_queue_config set peak_time_zone = 'Mars/Olympus'$$, '22023', null, 'unknown time zone refused');

-- Renderer caps: a full renderer does not block the others.
truncate jobs cascade;
update job_queue_config set max_concurrent_renders = 10, max_manim_renders = 2, peak_time_zone = 'Asia/Kolkata';
insert into jobs (job_type, status, payload, created_at)
  select 'topic_short', 'queued', '{}', :'N'::timestamptz - interval '1 hour' + g * interval '1 s' from generate_series(1, 5) g;
insert into jobs (job_type, status, payload, created_at)
  select 'daily_ca', 'queued', '{}', :'N'::timestamptz - interval '1 hour' + g * interval '1 s' from generate_series(1, 3) g;
select is(cardinality(pg_temp.claim_ids(:'N')), 5, 'manim cap 2 reached, 3 revideo jobs still claimed');
select is((select count(*) from jobs where status = 'processing' and renderer = 'manim'), 2::bigint,
          'manim cap read from job_queue_config.max_manim_renders');
update renderers set max_concurrent = 1 where name = 'revideo';
insert into jobs (job_type, status, payload, created_at) values ('daily_ca', 'queued', '{}', :'N');
select is(cardinality(pg_temp.claim_ids(:'N')), 0, 'revideo at its own cap (1 < 3 processing): nothing claimed');
select throws_ok($$update renderers set max_concurrent = 3 where name = 'manim'$$, '23514', null,
                 'the manim cap lives only in job_queue_config');

-- Endpoints: no usable endpoint -> that renderer's jobs wait, others go ahead; least-loaded endpoint.
truncate jobs cascade;
update renderers set max_concurrent = null;
update job_queue_config set max_manim_renders = 4;
insert into render_endpoints (renderer, url) values ('manim', 'http://manim-2.test:5000');
update render_endpoints set disabled = true where renderer = 'orchestrator';
select pg_temp.mk('doubt', :'N'::timestamptz - interval '2 min') as h1 \gset
select pg_temp.mk('topic_short', :'N'::timestamptz - interval '1 min') as m1 \gset
select pg_temp.mk('topic_short', :'N'::timestamptz - interval '1 min') as m2 \gset
select is(pg_temp.claim_ids(:'N') @> array[:'m1', :'m2']::uuid[] and not pg_temp.claim_ids(:'N') @> array[:'h1']::uuid[], true,
          'disabled orchestrator: doubt waits, manim jobs are claimed');
select is((select count(distinct endpoint_id) from jobs where renderer = 'manim' and status = 'processing'), 2::bigint,
          'two manim jobs spread over two manim endpoints');
update render_endpoints set disabled = false where renderer = 'orchestrator';
select mark_endpoint_unhealthy((select id from render_endpoints where renderer = 'orchestrator'), 30, :'N');
select is(pg_temp.claim_ids(:'N'::timestamptz + interval '29 s'), '{}'::uuid[], 'unhealthy endpoint skipped during its cool-down');
select is(pg_temp.claim_ids(:'N'::timestamptz + interval '30 s'), array[:'h1']::uuid[], '... and used again after it');
select is((select count(*) from job_attempts where job_id = :'h1'), 1::bigint, 'each claim records an attempt');

select * from finish();
rollback;
