-- The dashboard's reads: filtered job lists, the 24-hour history, alerts with configurable thresholds.
begin;
\ir _setup.psql
select plan(39);

-- A finished job (completed or failed) that ended at p_end.
create function pg_temp.finished(p_type text, p_status text, p_end timestamptz, p_user uuid default null)
returns uuid language sql as $$
  insert into public.jobs (job_type, status, payload, created_at, started_at, completed_at, result, error_message, user_id)
  values (p_type, p_status, '{}', p_end - interval '3 min', p_end - interval '2 min', p_end,
          case when p_status = 'completed' then '{"video_url": "v"}'::jsonb end,
          case when p_status = 'failed' then 'render crashed' end, p_user) returning id
$$;
-- Ids of a list, in the order returned.
create function pg_temp.ids(p_list jsonb) returns uuid[] language sql as $$
  select coalesce(array_agg((j ->> 'id')::uuid order by o), '{}') from jsonb_array_elements(p_list) with ordinality x(j, o)
$$;
grant execute on all functions in schema pg_temp to public;

-- list_jobs: filters ------------------------------------------------------------------------------------------
select pg_temp.mk('doubt', :'T'::timestamptz - interval '50 min', :'U1') as d1 \gset
select pg_temp.mk('topic_short', :'T'::timestamptz - interval '40 min', :'U2') as t1 \gset
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '30 min', :'U1') as c1 \gset
select pg_temp.finished('doubt', 'failed', :'T'::timestamptz - interval '10 min', :'U2') as df \gset
select pg_temp.finished('topic_short', 'completed', :'T'::timestamptz - interval '5 min', :'U1') as tc \gset

select pg_temp.as_user(:'ADM', true);
select is(pg_temp.ids(list_jobs(p_now => :'T')), array[:'tc', :'df', :'c1', :'t1', :'d1']::uuid[],
          'no filter: every job, newest first');
select is(pg_temp.ids(list_jobs(p_job_type => 'doubt', p_now => :'T')), array[:'df', :'d1']::uuid[], 'by job type');
select is(pg_temp.ids(list_jobs(p_renderer => 'manim', p_now => :'T')), array[:'tc', :'t1']::uuid[],
          'by renderer (topic shorts render on manim)');
select is(pg_temp.ids(list_jobs(p_user_id => :'U1', p_now => :'T')), array[:'tc', :'c1', :'d1']::uuid[], 'by owner');
select is(pg_temp.ids(list_jobs(p_status => 'queued', p_user_id => :'U1', p_now => :'T')), array[:'c1', :'d1']::uuid[],
          'filters combine');
select is(pg_temp.ids(list_jobs(p_status => 'failed', p_renderer => 'manim', p_now => :'T')), '{}'::uuid[],
          'nothing matches: an empty list');
select is(pg_temp.ids(list_jobs(p_limit => 2, p_now => :'T')), array[:'tc', :'df']::uuid[], 'limit keeps the newest');
select is(list_jobs(p_status => 'queued', p_renderer => 'revideo', p_now => :'T') -> 0 ->> 'queue_position', '3',
          'listed jobs are whole Job objects (the low job queued third)');
select throws_ok($$select list_jobs(p_job_type => 'podcast')$$, 'VQ400', 'unknown job_type "podcast"',
                 'an unknown job type is a bad request');
select throws_ok($$select list_jobs(p_renderer => 'blender')$$, 'VQ400', 'unknown renderer "blender"',
                 'an unknown renderer is a bad request');
select throws_ok($$select list_jobs(p_status => 'done')$$, 'VQ400', null, 'an unknown status is a bad request');
select throws_ok($$select list_jobs(p_limit => 201)$$, 'VQ400', null, 'limit over 200 is a bad request');

-- Who may read ------------------------------------------------------------------------------------------------
select pg_temp.as_user(:'U1');
select throws_ok($$select list_jobs(p_user_id => '00000000-0000-0000-0000-0000000000a1')$$, 'VQ403', null,
                 'a user may not list jobs, not even their own');
select throws_ok($$select get_queue_history()$$, 'VQ403', null, 'a user may not read the history');
select throws_ok($$select get_queue_alerts()$$, 'VQ403', null, 'a user may not read the alerts');
select throws_ok($$select get_peak_schedule()$$, 'VQ403', null, 'a user may not read the peak schedule');
select pg_temp.as_anon();
select throws_ok($$select queue.get_queue_history()$$, '42501', null, 'anon may not call the history at all');
select pg_temp.as_service();
select is(jsonb_array_length(get_queue_history(:'T')), 24, 'the secret key reads the history');
select pg_temp.as_postgres();
select ok(not has_function_privilege('anon', 'queue.get_queue_alerts(timestamptz)', 'execute')
          and has_function_privilege('authenticated', 'queue.get_queue_alerts(timestamptz)', 'execute'),
          'alerts: granted as list_jobs is (authenticated, checked inside), never anon');

-- History: hours of peak_time_zone (Asia/Kolkata, +05:30), 24 of them, oldest first ------------------------------
\set H '2026-01-15 12:30:00+05:30'
truncate jobs cascade;
select pg_temp.finished('doubt', 'completed', :'H'::timestamptz - interval '1 min');                 -- this hour
select pg_temp.finished('doubt', 'completed', :'H'::timestamptz - interval '29 min');
select pg_temp.finished('doubt', 'failed', :'H'::timestamptz - interval '1 min');
select pg_temp.finished('daily_ca', 'failed', :'H'::timestamptz - interval '3 hours 10 min');        -- 09:00-10:00 IST
select pg_temp.finished('daily_ca', 'completed', :'H'::timestamptz - interval '23 hours 29 min');     -- the first hour
select pg_temp.finished('daily_ca', 'completed', :'H'::timestamptz - interval '23 hours 31 min');     -- before it
select pg_temp.finished('daily_ca', 'completed', :'H'::timestamptz + interval '1 min');               -- after p_now
insert into jobs (job_type, status, payload, completed_at, cancel_reason)
  values ('doubt', 'cancelled', '{}', :'H'::timestamptz - interval '2 min', 'not needed');          -- not counted
select get_queue_history(:'H') as h \gset
select is(jsonb_array_length(:'h'), 24, '24 hours');
select is((:'h'::jsonb -> 23 ->> 'hour')::timestamptz, '2026-01-15 12:00+05:30'::timestamptz,
          'the last entry is the current hour, from its local start');
select is((:'h'::jsonb -> 0 ->> 'hour')::timestamptz, '2026-01-14 13:00+05:30'::timestamptz, 'the first is 23 hours before');
select is(:'h'::jsonb -> 23, jsonb_build_object('hour', :'h'::jsonb -> 23 -> 'hour', 'completed', 2, 'failed', 1),
          'this hour: 2 completed, 1 failed; cancelled and later jobs not counted');
select is(:'h'::jsonb -> 20 -> 'failed', '1'::jsonb, 'a failure lands in its hour');
select is(:'h'::jsonb -> 0 -> 'completed', '1'::jsonb, 'the first hour counts what ended in it, not before');
select is((select sum((e ->> 'completed')::int + (e ->> 'failed')::int) from jsonb_array_elements(:'h'::jsonb) e), 5::bigint,
          'nothing else is counted');
select ok((select bool_and((e ->> 'hour')::timestamptz + interval '1 hour' = (l ->> 'hour')::timestamptz)
             from jsonb_array_elements(:'h'::jsonb) with ordinality a(e, i)
             join jsonb_array_elements(:'h'::jsonb) with ordinality b(l, k) on k = i + 1), 'oldest first, an hour apart');

-- Alerts -------------------------------------------------------------------------------------------------------
truncate jobs cascade;
select is(get_queue_alerts(:'T') -> 'thresholds',
          '{"queue_depth": 100, "oldest_queued_seconds": 900, "failure_rate": 0.2}'::jsonb, 'default thresholds');
select is(get_queue_alerts(:'T') -> 'active', '[]'::jsonb, 'a quiet queue: no alert');
update job_queue_config set alert_queue_depth = 3, alert_oldest_queued_seconds = 600, alert_failure_rate = 0.5;
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '11 min');
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min');
select is(array(select a ->> 'kind' from jsonb_array_elements(get_queue_alerts(:'T') -> 'active') a), array['oldest_queued'],
          'a job queued for 11 min, alert at 10: oldest_queued only (2 queued < 3)');
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min');
select is((get_queue_alerts(:'T') -> 'active' -> 0) - 'message',
          '{"kind": "queue_depth", "value": 3, "threshold": 3}'::jsonb, 'three queued: queue_depth, with its figures');
-- Failure rate: 2 of 4 finished is not enough to judge; 3 of 5 at a threshold of 0.5 is.
select pg_temp.finished('doubt', 'failed', :'T'::timestamptz - interval '10 min') from generate_series(1, 2);
select pg_temp.finished('doubt', 'completed', :'T'::timestamptz - interval '10 min') from generate_series(1, 2);
select pg_temp.finished('doubt', 'failed', :'T'::timestamptz - interval '2 hours') from generate_series(1, 5);
select ok(not (get_queue_alerts(:'T') -> 'active') @> '[{"kind": "failure_rate"}]', 'four finished in the hour: no rate yet');
select pg_temp.finished('doubt', 'failed', :'T'::timestamptz - interval '10 min');
select is((select a - 'message' from jsonb_array_elements(get_queue_alerts(:'T') -> 'active') a where a ->> 'kind' = 'failure_rate'),
          '{"kind": "failure_rate", "value": 0.6, "threshold": 0.5}'::jsonb, '3 of 5 failed in the last hour');
-- Endpoints: revideo's only endpoint cooling down while jobs wait; orchestrator has none registered and no jobs.
delete from render_endpoints where renderer = 'orchestrator';
update render_endpoints set unhealthy_until = :'T'::timestamptz + interval '1 min' where renderer = 'revideo';
select is(array(select a ->> 'renderer' from jsonb_array_elements(get_queue_alerts(:'T') -> 'active') a
                 where a ->> 'kind' = 'no_healthy_endpoint'), array['revideo'],
          'a renderer in use with no healthy endpoint; an unused one without endpoints is no alert');
select ok(not (get_queue_alerts(:'T'::timestamptz + interval '2 min') -> 'active') @> '[{"kind": "no_healthy_endpoint"}]',
          'the cool-down over: no endpoint alert');

-- Peak schedule: the config's window and the rows of peak_windows, local times ----------------------------------
insert into peak_windows (starts_at, ends_at, label) values ('22:00', '01:00', 'late revision');
select is(get_peak_schedule(:'T') - 'next_boundary_at',
          '{"time_zone": "Asia/Kolkata", "multiplier": 1.5, "peak": true,
            "windows": [{"start": "06:00", "end": "21:00", "label": null},
                        {"start": "22:00", "end": "01:00", "label": "late revision"}]}'::jsonb,
          'windows in local time, the multiplier, in peak at 12:00');
select is((get_peak_schedule(:'T') ->> 'next_boundary_at')::timestamptz, '2026-01-15 21:00+05:30'::timestamptz,
          'at 12:00 the next change is the end of the day window');
select is((get_peak_schedule('2026-01-15 21:30+05:30') ->> 'next_boundary_at')::timestamptz,
          '2026-01-15 22:00+05:30'::timestamptz, 'off-peak at 21:30, until the late window starts');
update job_queue_config set peak_hour_start = '00:00', peak_hour_end = '00:00';
delete from peak_windows;
select is(get_peak_schedule(:'T') -> 'windows', '[]'::jsonb, 'start = end: no window at all');

select * from finish();
rollback;
