-- Realtime (API.md "Realtime"): the job events the database sends for each kind of change, the bounded
-- per-pass publishing of waiting jobs' places, and who may receive them, checked the way Supabase Realtime
-- authorizes a join (as the joining user: role, JWT claims and realtime.topic set). Injected clock.
begin;
\ir _setup.psql
select plan(40);

-- What each step sent: the messages written since the previous step (moved out of realtime.messages).
create function pg_temp.reset_realtime() returns void language sql as $$
  delete from realtime.messages;
  truncate private.realtime_job_marks;
  update private.realtime_publisher
     set walk_after_rank = null, walk_after_created_at = null, walk_after_id = null, walked_at = null, stats = null;
$$;
select pg_temp.reset_realtime();
create temp table sent (topic text, event text, payload jsonb, private boolean);
create function pg_temp.step() returns void language sql as $$
  truncate sent;
  with d as (delete from realtime.messages m returning m.topic, m.event, m.payload, m.private) insert into sent select * from d;
$$;
create function pg_temp.sent_to(p_job uuid) returns setof jsonb language sql as $$
  select s.payload from sent s where s.topic = 'job:' || p_job and s.event = 'job'
$$;
\set N2 '2026-01-15 03:00:02+05:30'

-- Events on changes of a job -----------------------------------------------------------------------------------
update job_queue_config set max_concurrent_renders = 1;
select pg_temp.mk('doubt', :'N'::timestamptz - interval '5 min', :'U1') as j1 \gset
select pg_temp.mk('doubt', :'N'::timestamptz - interval '4 min', :'U2') as j2 \gset
select pg_temp.mk('doubt', :'N'::timestamptz - interval '3 min', :'U2') as j3 \gset
select pg_temp.step();
select is((select count(*)::int from sent), 0, 'an enqueue sends nothing: nobody can have joined a job''s topic before it exists');

select publish_queue_changes(:'N');
select pg_temp.step();
select is((select array_agg(s.topic order by s.topic) from sent s where s.event = 'job'),
          (select array_agg('job:' || id order by 'job:' || id) from jobs),
          'a worker pass sends every waiting job its place');
select is((select p from pg_temp.sent_to(:'j2') p), get_job(:'j2', :'N'), 'the payload is the Job, as GET /status shows it');
select is((select count(*)::int from sent where topic = 'queue:admin' and event = 'stats' and private), 1,
          'and the stats to queue:admin');
select is((select payload - 'generated_at' - 'id' from sent where topic = 'queue:admin'), get_queue_stats(:'N') - 'generated_at',
          'the stats object of GET /status (realtime.send adds a message id)');
select is((select bool_and(private) from sent), true, 'every message is for private channels');

select publish_queue_changes(:'N');
select pg_temp.step();
select is((select count(*)::int from sent), 0, 'nothing moved: the next pass sends nothing');

select pg_temp.claim_job(:'j1', :'N') ->> 'callback_token' as t1 \gset
select pg_temp.step();
select is((select array_agg(p ->> 'status') from pg_temp.sent_to(:'j1') p), array['processing'], 'the claim: status processing');
select is((select count(*)::int from sent where topic <> 'job:' || :'j1'), 0,
          'a claim writes one message, not one per waiting job');
select publish_queue_changes(:'N');
select pg_temp.step();
select is((select array_agg((p ->> 'queue_position') || ' ' || (p ->> 'wait_reason') order by p ->> 'queue_position') from sent s, lateral (select s.payload) x(p) where s.event = 'job'),
          array['1 capacity', '2 capacity'], 'the next pass: both waiting jobs moved up, and now wait for capacity');

select report_progress(:'j1', 1, :'t1', 'composing_video', 60, :'N'::timestamptz + interval '1 min');
select pg_temp.step();
select is((select array_agg((p ->> 'stage') || ' ' || (p ->> 'progress')) from pg_temp.sent_to(:'j1') p),
          array['composing_video 60'], 'progress: stage and percentage');
select record_heartbeat(:'j1', 1, :'t1', :'N'::timestamptz + interval '2 min');
select report_progress(:'j1', 1, :'t1', 'composing_video', 40, :'N'::timestamptz + interval '2 min');
select pg_temp.step();
select is((select count(*)::int from sent), 0, 'a heartbeat or a late, lower progress changes nothing a user sees: no message');

select complete_job(:'j1', 1, :'t1', '{"video_url": "https://cdn/j1.mp4"}', :'N'::timestamptz + interval '3 min');
select pg_temp.step();
select is((select array_agg((p ->> 'status') || ' ' || (p -> 'result' ->> 'video_url')) from pg_temp.sent_to(:'j1') p),
          array['completed https://cdn/j1.mp4'], 'the completion, with the result');

select pg_temp.claim_job(:'j2', :'N') ->> 'callback_token' as t2 \gset
select fail_job(:'j2', 1, :'t2', 'renderer crashed', true, :'N'::timestamptz + interval '4 min');
select pg_temp.step();
select is((select array_agg((p ->> 'status') || ' ' || coalesce(p ->> 'wait_reason', '-') order by p ->> 'status') from pg_temp.sent_to(:'j2') p),
          array['processing -', 'queued retry_backoff'], 'a retryable failure: back in the queue, waiting out the backoff');
select publish_queue_changes(:'N'::timestamptz + interval '4 min');
select pg_temp.step();
select is((select count(*)::int from pg_temp.sent_to(:'j2')), 0, 'the pass does not repeat what the failure''s event said');

select cancel_job(:'j3', 'changed my mind', :'N');
select pg_temp.step();
select is((select array_agg(p ->> 'status') from pg_temp.sent_to(:'j3') p), array['cancelled'], 'a cancel');
select is((select count(*)::int from private.realtime_job_marks where job_id in (:'j1', :'j3')), 0,
          'finished jobs keep no mark');

update jobs set status = 'failed', error_message = 'stuck' where id = :'j2';
select pg_temp.step();
select is((select array_agg(p ->> 'status') from pg_temp.sent_to(:'j2') p), array['failed'],
          'an operator''s hand-written status change is announced too');

-- Pause and resume: every waiting job hears why it waits.
select pg_temp.mk('topic_short', :'N'::timestamptz - interval '2 min', :'U1') as j4 \gset
select publish_queue_changes(:'N');
select pg_temp.step();
select pg_temp.as_user(:'ADM', true);
select set_paused(true);
select pg_temp.as_postgres();
select pg_temp.step();
select is((select array_agg((p ->> 'wait_reason') || ' ' || coalesce(p ->> 'estimated_wait_seconds', 'none')) from pg_temp.sent_to(:'j4') p),
          array['paused none'], 'pausing tells waiting jobs at once: paused, no estimate');
select is((select payload ->> 'paused' from sent where topic = 'queue:admin'), 'true', 'and the admins');
update job_queue_config set paused = false;
select pg_temp.step();
select is((select array_agg(p ->> 'wait_reason') from pg_temp.sent_to(:'j4') p), array['behind'],
          'resuming (here by an operator''s UPDATE) too');

-- Who may receive: Realtime's join check, as the joining user --------------------------------------------------
-- Realtime inserts a probe message for the topic, then as the user (role, claims, realtime.topic) selects it.
create function pg_temp.may_join(p_topic text, p_uid uuid, p_admin boolean default false) returns boolean
language plpgsql as $$
declare
  v_probe uuid := gen_random_uuid();
  v_seen boolean;
begin
  perform pg_temp.as_postgres();
  insert into realtime.messages (id, topic, extension) values (v_probe, p_topic, 'broadcast');
  if p_uid is null then perform pg_temp.as_anon(); else perform pg_temp.as_user(p_uid, p_admin); end if;
  perform set_config('realtime.topic', p_topic, true);
  v_seen := exists (select 1 from realtime.messages m where m.id = v_probe);
  perform pg_temp.as_postgres();
  delete from realtime.messages m where m.id = v_probe;
  return v_seen;
end $$;
select is(array[pg_temp.may_join('job:' || :'j4', :'U1'), pg_temp.may_join('job:' || :'j4', :'U2'),
                pg_temp.may_join('job:' || :'j4', :'ADM', true), pg_temp.may_join('job:' || :'j4', null)],
          array[true, false, true, false], 'job:<id>: its owner and admins may join; another user and anon may not');
select is(array[pg_temp.may_join('queue:admin', :'U1'), pg_temp.may_join('queue:admin', :'ADM', true)],
          array[false, true], 'queue:admin: admins only');
select is(array[pg_temp.may_join('job:' || gen_random_uuid(), :'U1'), pg_temp.may_join('job:not-a-uuid', :'U1'),
                pg_temp.may_join('room:1', :'U1')],
          array[false, false, false], 'an unknown job, a malformed topic, another topic: refused');

-- The messages themselves, read as each user would be authorized.
select publish_queue_changes(:'N'::timestamptz + interval '10 min');
select report_progress(:'j4', 1, pg_temp.claim_job(:'j4', :'N') ->> 'callback_token', 'saving_file', 80, :'N');
select pg_temp.as_user(:'U1');
select set_config('realtime.topic', 'job:' || :'j4', true);
select ok((select count(*) from realtime.messages where topic = 'job:' || :'j4') >= 2, 'the owner reads their job''s messages');
select is((select count(*)::int from realtime.messages where topic <> 'job:' || :'j4'), 0, 'and no other topic''s');
select pg_temp.as_user(:'U2');
select set_config('realtime.topic', 'job:' || :'j4', true);
select is((select count(*)::int from realtime.messages where topic = 'job:' || :'j4'), 0, 'another user reads none of them');
select pg_temp.as_anon();
select is((select count(*)::int from realtime.messages), 0, 'anon reads nothing');
select pg_temp.as_postgres();
select count(*) as all_messages from realtime.messages \gset
select pg_temp.as_user(:'ADM', true);
select is((select count(*)::int from realtime.messages), :all_messages, 'an admin reads all of them');
select pg_temp.as_user(:'U1');
select throws_ok(format($$insert into realtime.messages (topic, extension, event, payload) values ('job:%s', 'broadcast', 'job', '{}')$$, :'j4'),
                 '42501', null, 'nobody but the database sends on these topics (no insert policy)');
select pg_temp.as_postgres();

-- A deep queue: a pass looks at a bounded number of jobs ---------------------------------------------------------
truncate jobs cascade;
select pg_temp.reset_realtime();
update job_queue_config set max_concurrent_renders = 1000;
insert into jobs (job_type, status, payload, created_at)
  select (array['doubt', 'topic_short', 'daily_ca'])[1 + g % 3], 'queued', '{}', :'N'::timestamptz - interval '1 hour' + g * interval '1 s'
    from generate_series(1, 3000) g;
select publish_queue_changes(:'N');
select pg_temp.step();
select is((select array_agg((payload ->> 'queue_position')::int order by (payload ->> 'queue_position')::int) from sent where event = 'job'),
          (select array_agg(p) from generate_series(1, 60) p),
          '3,000 waiting jobs: a pass sends 60 events (the first 10, and the first 50 of the rest)');
select is((select count(*)::int from sent s join jobs j on s.topic = 'job:' || j.id
            where (s.payload ->> 'queue_position')::int <> private.job_queue_position(j)), 0, 'at their exact positions');
select publish_queue_changes(:'N');
select pg_temp.step();
select is((select count(*)::int from sent where event = 'job'), 0, 'the walk through the rest goes on at most once a second');
select publish_queue_changes(:'N2');
select pg_temp.step();
select is((select array_agg((payload ->> 'queue_position')::int order by (payload ->> 'queue_position')::int) from sent where event = 'job'),
          (select array_agg(p) from generate_series(61, 110) p), 'a second later: the next 50 positions');
select is(jsonb_array_length(claim_jobs('w', 100, :'N2')), 100, '100 claims');
select pg_temp.step();
select is((select count(*)::int from sent), 100, 'write one message each, whatever the depth of the queue');
select publish_queue_changes(:'N2');
select pg_temp.step();
select is((select array_agg((payload ->> 'queue_position')::int order by (payload ->> 'queue_position')::int) from sent where event = 'job'),
          (select array_agg(p) from generate_series(1, 10) p), 'the next pass: the first 10 hear their new position');

-- With priority offsets the walk follows claim order across priorities, positions still exact.
truncate jobs cascade;
select pg_temp.reset_realtime();
update job_queue_config set high_priority_offset_minutes = 0, medium_priority_offset_minutes = 2, low_priority_offset_minutes = 4;
insert into jobs (job_type, status, payload, created_at)
  select (array['doubt', 'topic_short', 'daily_ca'])[1 + g % 3], 'queued', '{}', :'N'::timestamptz - interval '1 hour' + g * interval '7 s'
    from generate_series(1, 200) g;
select publish_queue_changes(:'N'::timestamptz + make_interval(secs => 2 * s)) from generate_series(0, 3) s;
select is((select count(*)::int from private.realtime_job_marks m join jobs j on j.id = m.job_id), 200,
          'four passes a couple of seconds apart reach all 200 waiting jobs');
select is((select count(*)::int from private.realtime_job_marks m join jobs j on j.id = m.job_id
            where m.queue_position <> private.job_queue_position(j)), 0,
          'each announced at its exact position in claim order (priority offsets set)');

-- The rule for "moved meaningfully".
select is(array[
  private.realtime_place_moved(row(gen_random_uuid(), 8, 0, 'capacity', now())::private.realtime_job_marks, '{"queue_position": 7, "estimated_wait_seconds": 0, "wait_reason": "capacity"}', 10),
  private.realtime_place_moved(row(gen_random_uuid(), 500, 900, 'capacity', now())::private.realtime_job_marks, '{"queue_position": 420, "estimated_wait_seconds": 800, "wait_reason": "capacity"}', 10),
  private.realtime_place_moved(row(gen_random_uuid(), 500, 900, 'capacity', now())::private.realtime_job_marks, '{"queue_position": 400, "estimated_wait_seconds": 800, "wait_reason": "capacity"}', 10),
  private.realtime_place_moved(row(gen_random_uuid(), 500, 900, 'capacity', now())::private.realtime_job_marks, '{"queue_position": 480, "estimated_wait_seconds": 700, "wait_reason": "capacity"}', 10),
  private.realtime_place_moved(row(gen_random_uuid(), 500, 900, 'capacity', now())::private.realtime_job_marks, '{"queue_position": 480, "estimated_wait_seconds": 880, "wait_reason": "paused"}', 10),
  private.realtime_place_moved(row(gen_random_uuid(), 500, 900, 'paused', now())::private.realtime_job_marks, '{"queue_position": 480, "estimated_wait_seconds": null, "wait_reason": "paused"}', 10)],
  array[true, false, true, true, true, true],
  'moved: any step among the first 10; further back a fifth of the position or of the estimate; a new wait reason; an estimate vanishing');

select * from finish();
rollback;
