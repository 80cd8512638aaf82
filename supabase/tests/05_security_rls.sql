-- RLS and grants per role: anon, owner, other user, admin JWT, service_role, postgres.
begin;
\ir _setup.psql
select plan(39);

-- is_queue_admin() as the queue's security definer functions see it (the caller's role and claims kept).
create function pg_temp.queue_admin() returns boolean language sql security definer as $$ select private.is_queue_admin() $$;
grant execute on function pg_temp.queue_admin() to public;

select pg_temp.mk('doubt', :'T'::timestamptz - interval '3 min', :'U1') as j1 \gset
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '2 min', :'U2') as j2 \gset
select pg_temp.mk('topic_short', :'T'::timestamptz - interval '1 min') as js \gset

-- Structure: RLS on every table of the schema; definer functions pin search_path; the API roles may
-- execute nothing in the exposed schema and only the client functions of the queue API.
select is((select array_agg(c.relname::text order by c.relname) from pg_class c
            where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and not c.relrowsecurity
              and not exists (select 1 from pg_depend d where d.objid = c.oid and d.deptype = 'e')),
          null, 'RLS enabled on every public table');
select is((select array_agg(p.proname::text) from pg_proc p
            where p.pronamespace in ('public'::regnamespace, 'queue'::regnamespace, 'private'::regnamespace) and p.prosecdef
              and not coalesce(p.proconfig @> array['search_path=""'], false)),
          null, 'every security definer function has search_path = ''''');
select is((select array_agg(p.proname::text) from pg_proc p
            where p.pronamespace in ('public'::regnamespace, 'queue'::regnamespace)
              and has_function_privilege('anon', p.oid, 'execute')
              and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')),
          null, 'anon may execute none of the queue functions');
select is((select array_agg(p.proname::text) from pg_proc p
            where p.pronamespace = 'public'::regnamespace and has_function_privilege('authenticated', p.oid, 'execute')
              and not exists (select 1 from pg_depend d where d.objid = p.oid and d.deptype = 'e')),
          null, 'authenticated may execute nothing in public (the Data API serves it)');
select is((select array_agg(r) from unnest(array['public', 'anon', 'authenticated', 'service_role']) r
            where r <> 'public' and has_schema_privilege(r, 'private', 'usage')),
          null, 'no API role may use the private schema');
select is((select array_agg(p.proname::text order by p.proname) from pg_proc p
            where p.pronamespace = 'queue'::regnamespace and has_function_privilege('authenticated', p.oid, 'execute')),
          array['can_receive_realtime_topic', 'cancel_job', 'enqueue_job', 'get_job', 'get_peak_schedule',
                'get_queue_alerts', 'get_queue_history', 'get_queue_metrics', 'get_queue_stats', 'list_jobs',
                'retry_job', 'set_paused'],
          'in the queue API, authenticated may execute only the client functions (and the Realtime policy''s check)');

-- anon: nothing.
select pg_temp.as_anon();
select throws_ok('select count(*) from jobs', '42501', null, 'anon cannot read jobs');
select throws_ok($$select queue.enqueue_job('doubt', '{}')$$, '42501', null, 'anon cannot enqueue');
select throws_ok('select get_queue_stats()', '42501', null, 'anon cannot read stats');
select throws_ok('select * from job_queue_config', '42501', null, 'anon cannot read config');

-- owner / other user.
select pg_temp.as_user(:'U1');
select throws_ok('select count(*) from jobs', '42501', null, 'a user reads no table directly: jobs only through the queue API');
select is(get_job(:'j1') ->> 'id', :'j1', 'get_job of an own job');
select throws_ok(format('select get_job(%L)', :'j2'), 'VQ404', null, 'get_job of another user''s job: 404');
select throws_ok(format('select get_job(%L)', :'js'), 'VQ404', null, 'get_job of a service job: 404');
select throws_ok($$insert into jobs (job_type, priority, status, payload) values ('doubt', 'high', 'queued', '{}')$$,
                 '42501', null, 'a user cannot insert jobs directly');
select throws_ok(format('update jobs set priority = %L where id = %L', 'high', :'j1'), '42501', null, 'a user cannot update jobs');
select throws_ok(format('delete from jobs where id = %L', :'j1'), '42501', null, 'a user cannot delete jobs');
select throws_ok('select * from job_attempts', '42501', null, 'a user cannot read attempts');
select throws_ok('select * from render_endpoints', '42501', null, 'a user cannot read render endpoints');
select throws_ok('select * from job_queue_config', '42501', null, 'a user cannot read the config');
select throws_ok('select queue.get_queue_stats()', 'VQ403', null, 'a user cannot read stats (403)');
select throws_ok('select public.get_queue_stats()', '42501', null, 'a user cannot call the operators'' stats function');
select throws_ok('select list_jobs()', 'VQ403', null, 'a user cannot list jobs (403)');
select throws_ok($$select claim_jobs('w')$$, '42501', null, 'a user cannot claim');
select throws_ok(format('select complete_job(%L, 1, %L, %L)', :'j1', 'x', '{"video_url": "x"}'), '42501', null, 'a user cannot complete');
select is(pg_temp.queue_admin(), false, 'a user is not an admin');

-- admin JWT.
select pg_temp.as_user(:'ADM', true);
select is(pg_temp.queue_admin(), true, 'app_metadata.queue_role = admin is an admin');
select is(jsonb_array_length(list_jobs(null, 10)), 3, 'an admin reads all jobs');
select is(get_job(:'j2') ->> 'id', :'j2', 'an admin gets any job');
select is(jsonb_array_length(list_jobs('queued', 10)), 3, 'an admin lists jobs');
select is(list_jobs(null, 2) -> 0 ->> 'id', :'js', 'newest first');
select throws_ok('select list_jobs(null, 201)', 'VQ400', null, 'limit at most 200');
select ok(queue.get_queue_stats() ? 'capacity', 'an admin reads stats');
select throws_ok($$select claim_jobs('w')$$, '42501', null, 'an admin JWT still cannot claim (service_role only)');

-- service_role.
select pg_temp.as_service();
select is(pg_temp.queue_admin(), true, 'service_role is an admin');
select lives_ok($$INSERT INTO jobs (job_type, priority, status, payload) VALUES ('doubt', 'high', 'queued', '{"question": "svc"}')$$,
                'service_role inserts directly (seed 001)');
select is(jsonb_array_length(claim_jobs('w', 1, :'T')), 1, 'service_role claims');

-- postgres (psql / SQL editor): an admin.
select pg_temp.as_postgres();
select is(is_queue_admin(), true, 'a direct postgres session is an admin');
select set_config('role', 'authenticated', true);
select set_config('request.jwt.claims', '', true);
select is(pg_temp.queue_admin(), false, 'role authenticated without claims is not an admin');
select pg_temp.as_postgres();

select * from finish();
rollback;
