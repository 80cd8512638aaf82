-- Webhooks (the outbox, leases, attempts, backoff, giving up, admin-only access) and the daily current-affairs
-- video (once per local day, the configured local time, time-zone boundaries). Injected clock.
begin;
\ir _setup.psql
select plan(61);

-- Registering: the secret is answered once and kept in Vault; the table holds only its id.
select register_webhook('https://hooks.example/all', 'every event') as a \gset
select register_webhook('https://hooks.example/failed', 'failures only', array['job.failed']) as b \gset
select register_webhook('https://hooks.example/off', 'disabled') as c \gset
update webhook_endpoints set enabled = false where url = 'https://hooks.example/off';
select ok(:'a'::jsonb ->> 'secret' ~ '^whsec_[A-Za-z0-9+/]{43}=$' and length(decode(substr(:'a'::jsonb ->> 'secret', 7), 'base64')) = 32,
          'the secret is whsec_ + base64 of 32 random bytes');
select is((select s.decrypted_secret from webhook_endpoints e join vault.decrypted_secrets s on s.id = e.secret_id
            where e.id = (:'a'::jsonb ->> 'id')::uuid), :'a'::jsonb ->> 'secret', 'the secret lives in Vault');
select is((select count(*)::int from webhook_endpoints e where row_to_json(e)::text like '%whsec_%'), 0,
          'no endpoint row holds a secret');
select throws_ok($$select register_webhook('ftp://hooks.example/x')$$, 'VQ400', null, 'only http(s) URLs');
select throws_ok($$select register_webhook('https://hooks.example/all')$$, 'VQ409', null, 'one endpoint per URL');
select throws_ok($$select register_webhook('https://hooks.example/x', '', array['job.queued'])$$, '23514', null,
                 'only terminal events can be asked for');

-- The outbox: a delivery per interested, enabled endpoint when a job ends, and none otherwise.
create function pg_temp.deliveries(p_job uuid) returns text[] language sql as $$
  select coalesce(array_agg(e.url || ' ' || d.event_type order by e.url), '{}')
    from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id where d.job_id = p_job
$$;
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min', :'U1') as j \gset
select is(pg_temp.deliveries(:'j'), '{}', 'enqueued: no delivery');
select pg_temp.claim_job(:'j', :'T') ->> 'callback_token' as tok \gset
select report_progress(:'j', 1, :'tok', 'composing_video', 60, :'T');
select record_heartbeat(:'j', 1, :'tok', :'T');
select is(pg_temp.deliveries(:'j'), '{}', 'claimed, progress, heartbeat: no delivery');
select complete_job(:'j', 1, :'tok', '{"video_url": "https://cdn/j.mp4"}', :'T'::timestamptz + interval '1 min');
select is(pg_temp.deliveries(:'j'), array['https://hooks.example/all job.completed'],
          'completed: one delivery, to the endpoint that wants every event');
select ok((select d.payload = jsonb_build_object('type', 'job.completed', 'timestamp', j.completed_at,
                                                 'data', private.job_to_json(j, j.completed_at))
             from webhook_deliveries d join jobs j on j.id = d.job_id where d.job_id = :'j'),
          'the payload is {type, timestamp, data: the Job}');
select ok((select d.message_id ~ '^msg_[0-9a-f]{32}$' and d.next_attempt_at = :'T'::timestamptz + interval '1 min'
                  and d.attempts = 0 from webhook_deliveries d where d.job_id = :'j'),
          'a message id, due at once (the time the job ended)');
select complete_job(:'j', 1, :'tok', '{"video_url": "https://cdn/j.mp4"}', :'T'::timestamptz + interval '2 min');
select is((select count(*)::int from webhook_deliveries where job_id = :'j'), 1, 'a repeated completion adds none');

select pg_temp.mk('topic_short', :'T'::timestamptz - interval '1 min') as f \gset
select pg_temp.claim_job(:'f', :'T') ->> 'callback_token' as ftok \gset
select fail_job(:'f', 1, :'ftok', 'render crashed', true, :'T');
select is(pg_temp.deliveries(:'f'), '{}', 'a retryable failure with retries left is not an end: no delivery');
update jobs set next_attempt_at = :'T' where id = :'f';
select pg_temp.claim_job(:'f', :'T'::timestamptz + interval '1 min') ->> 'callback_token' as ftok2 \gset
select fail_job(:'f', 2, :'ftok2', 'bad input', false, :'T'::timestamptz + interval '2 min');
select is(pg_temp.deliveries(:'f'), array['https://hooks.example/all job.failed', 'https://hooks.example/failed job.failed'],
          'failed: to both interested endpoints, none to the disabled one');
select is((select count(distinct message_id)::int from webhook_deliveries where job_id = :'f'), 1,
          'one event, one message id on every endpoint');
select retry_job(:'f', :'T'::timestamptz + interval '3 min');
select is((select count(*)::int from webhook_deliveries where job_id = :'f'), 2, 'an admin''s retry (failed -> queued) adds none');

select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min', :'U2') as k \gset
select pg_temp.as_user(:'U2');
select cancel_job(:'k', 'changed my mind', :'T');
select pg_temp.as_postgres();
select is(pg_temp.deliveries(:'k'), array['https://hooks.example/all job.cancelled'], 'cancelled: delivered too');
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as h \gset
update jobs set status = 'cancelled' where id = :'h';
select is(pg_temp.deliveries(:'h'), array['https://hooks.example/all job.cancelled'],
          'an operator''s hand-written UPDATE to a terminal state is an event too');

-- Claims: leased, attempts counted and recorded, the secret and exact body handed over.
delete from webhook_deliveries where job_id <> :'j';
select claim_webhook_deliveries(10, 60, :'T'::timestamptz + interval '2 min') as cl \gset
select is(jsonb_array_length(:'cl'), 1, 'the due delivery is claimed');
select ok((select x ->> 'secret' = :'a'::jsonb ->> 'secret' and (x ->> 'attempt')::int = 1
                  and x ->> 'body' = d.payload::text and x ->> 'url' = 'https://hooks.example/all'
                  and x ->> 'message_id' = d.message_id and x ->> 'event_type' = 'job.completed'
             from jsonb_array_elements(:'cl') x join webhook_deliveries d on d.id = (x ->> 'id')::bigint),
          'with its url, secret, message id and the exact body to sign');
select (:'cl'::jsonb -> 0 ->> 'id')::bigint as d \gset
select is(claim_webhook_deliveries(10, 60, :'T'::timestamptz + interval '2 min'), '[]'::jsonb,
          'leased: no second worker gets it');
select is((select array[attempt::text, started_at::text, coalesce(finished_at::text, 'open')] from webhook_delivery_attempts where delivery_id = :d),
          array['1', (:'T'::timestamptz + interval '2 min')::text, 'open'], 'the attempt is recorded as started');
select is(jsonb_array_length(claim_webhook_deliveries(10, 60, :'T'::timestamptz + interval '3 min 1 s')), 1,
          'a worker that died: its delivery goes out again after the lease (at least once)');
select is(record_webhook_attempt(:d, 2, 500, 'receiver answered 500', 40, :'T'::timestamptz + interval '3 min 2 s') ->> 'next_attempt_at',
          to_jsonb(:'T'::timestamptz + interval '8 min 2 s') ->> 0, 'a 500 on attempt 2: retried after 5 minutes');
select is(record_webhook_attempt(:d, 1, 200, null, 9000, :'T'::timestamptz + interval '3 min 3 s') ->> 'delivered_at',
          to_jsonb(:'T'::timestamptz + interval '3 min 3 s') ->> 0, 'the lost attempt answering 2xx after all: delivered');
select throws_ok(format('select record_webhook_attempt(%s, 1, 200, null, 1)', :d), 'VQ409', null, 'an attempt is recorded once');
select is((select array_agg(coalesce(status::text, '-') || ' ' || coalesce(error, '-') || ' ' || duration_ms order by attempt)
             from webhook_delivery_attempts where delivery_id = :d),
          array['200 - 9000', '500 receiver answered 500 40'], 'both attempts recorded: status, error, duration');
select is(claim_webhook_deliveries(10, 60, :'T'::timestamptz + interval '1 day'), '[]'::jsonb, 'delivered: never claimed again');
select ok((select last_status = 200 and last_error is null and attempts = 2 from webhook_deliveries where id = :d),
          'the delivery keeps its last answer');

-- Backoff and giving up: at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h; after the 8th failure, given up.
select is(array(select webhook_backoff(n) from generate_series(1, 8) n),
          array['5 seconds', '5 minutes', '30 minutes', '2 hours', '5 hours', '10 hours', '10 hours', null]::interval[],
          'the backoff schedule');
update webhook_deliveries set delivered_at = null, next_attempt_at = :'T', attempts = 0, last_status = null where id = :d;
delete from webhook_delivery_attempts where delivery_id = :d;
create function pg_temp.fail_once(p_id bigint, p_at timestamptz) returns jsonb language plpgsql as $$
declare v_claim jsonb := claim_webhook_deliveries(10, 60, p_at) -> 0;
begin
  return record_webhook_attempt(p_id, (v_claim ->> 'attempt')::int, 503, 'receiver answered 503', 5, p_at);
end $$;
select is((select array_agg(pg_temp.fail_once(:d, :'T'::timestamptz + make_interval(days => n)) ->> 'attempts' order by n)
             from generate_series(1, 7) n), array['1', '2', '3', '4', '5', '6', '7'], 'seven failed attempts, one a day');
select ok((select next_attempt_at is not null and gave_up_at is null from webhook_deliveries where id = :d), 'still pending after 7');
select is(pg_temp.fail_once(:d, :'T'::timestamptz + interval '8 days') ->> 'gave_up_at',
          to_jsonb(:'T'::timestamptz + interval '8 days') ->> 0, 'the 8th failure gives up');
select is(claim_webhook_deliveries(10, 60, :'T'::timestamptz + interval '30 days'), '[]'::jsonb, 'given up: never claimed again');

-- A disabled endpoint's pending deliveries wait; deleting an endpoint takes its deliveries and its secret.
update webhook_deliveries set gave_up_at = null, next_attempt_at = :'T' where id = :d;
update webhook_endpoints set enabled = false where url = 'https://hooks.example/all';
select is(claim_webhook_deliveries(10, 60, :'T'::timestamptz + interval '1 hour'), '[]'::jsonb, 'a disabled endpoint gets nothing');
update webhook_endpoints set enabled = true where url = 'https://hooks.example/all';
select (select secret_id from webhook_endpoints where url = 'https://hooks.example/all') as sid \gset
delete from webhook_endpoints where url = 'https://hooks.example/all';
select is((select count(*)::int from webhook_deliveries where id = :d) + (select count(*)::int from vault.secrets where id = :'sid'), 0,
          'deleting an endpoint deletes its deliveries and its Vault secret');
select rotate_webhook_secret((:'b'::jsonb ->> 'id')::uuid) ->> 'secret' as rotated \gset
select ok(:'rotated' <> :'b'::jsonb ->> 'secret' and :'rotated' = (select s.decrypted_secret from vault.decrypted_secrets s
             join webhook_endpoints e on e.secret_id = s.id where e.id = (:'b'::jsonb ->> 'id')::uuid),
          'rotating answers a new secret once and keeps it in Vault');

-- Admin only: no API role reads the tables; only service_role (and postgres) may call the functions.
select pg_temp.as_anon();
select throws_ok('select * from webhook_endpoints', '42501', null, 'anon cannot read endpoints');
select pg_temp.as_user(:'ADM', true);
select throws_ok('select * from webhook_endpoints', '42501', null, 'not even an admin''s token reads endpoints');
select throws_ok('select * from webhook_deliveries', '42501', null, 'nor deliveries');
select throws_ok('select * from webhook_delivery_attempts', '42501', null, 'nor attempts');
select throws_ok($$select queue.register_webhook('https://evil.example/')$$, '42501', null, 'nor registers a webhook');
select throws_ok('select queue.claim_webhook_deliveries()', '42501', null, 'nor claims deliveries (secrets)');
select throws_ok('select queue.enqueue_daily_current_affairs()', '42501', null, 'nor runs the daily job');
select pg_temp.as_postgres();
select is((select array_agg(p.proname::text order by p.proname) from pg_proc p
            where p.pronamespace = 'queue'::regnamespace
              and p.proname in ('register_webhook', 'rotate_webhook_secret', 'claim_webhook_deliveries',
                                'record_webhook_attempt', 'enqueue_daily_current_affairs')
              and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute')
                   or not has_function_privilege('service_role', p.oid, 'execute'))),
          null, 'each is executable by service_role and by neither anon nor authenticated');
select pg_temp.as_service();
select lives_ok('select queue.claim_webhook_deliveries(1)', 'service_role claims deliveries');
select pg_temp.as_postgres();

-- The daily video: once the configured local time has passed, once per local day.
select is(enqueue_daily_current_affairs('2026-12-01 09:00+05:30'), null, 'disabled (the default): nothing');
update job_queue_config set daily_ca_enabled = true;  -- 06:00 Asia/Kolkata by default
select is(enqueue_daily_current_affairs('2026-12-01 05:59:59+05:30'), null, 'a second before 06:00 local: nothing');
select enqueue_daily_current_affairs('2026-12-01 06:00+05:30') as d1 \gset
select ok((:'d1'::jsonb ->> 'created')::boolean and :'d1'::jsonb -> 'job' ->> 'job_type' = 'daily_ca'
          and :'d1'::jsonb -> 'job' ->> 'priority' = 'low' and :'d1'::jsonb -> 'job' -> 'payload' = '{"date": "2026-12-01"}',
          'at 06:00 local: the day''s daily_ca job, low priority, for that date');
select ok((select user_id is null and idempotency_key = 'daily_ca:2026-12-01' and created_at = '2026-12-01 06:00+05:30'
             from jobs where id = (:'d1'::jsonb -> 'job' ->> 'id')::uuid), 'a system job keyed by its date');
select enqueue_daily_current_affairs('2026-12-01 06:01+05:30') as d2 \gset
select is(array[:'d2'::jsonb ->> 'created', :'d2'::jsonb -> 'job' ->> 'id'], array['false', :'d1'::jsonb -> 'job' ->> 'id'],
          'run again the same day: the same job, none created');
select cancel_job((:'d1'::jsonb -> 'job' ->> 'id')::uuid, 'operator', '2026-12-01 07:00+05:30');
select is(enqueue_daily_current_affairs('2026-12-01 23:59:59+05:30') ->> 'created', 'false',
          'even after it was cancelled: still once that day');
select is((select count(*)::int from jobs where payload ->> 'date' = '2026-12-01'), 1, 'one daily job in all that day');
select is(enqueue_daily_current_affairs('2026-12-02 05:00+05:30'), null, 'next day before 06:00: nothing yet');
select is(enqueue_daily_current_affairs('2026-12-02 06:30+05:30') -> 'job' -> 'payload' ->> 'date', '2026-12-02',
          'next day after 06:00: the next day''s job');

-- The local date decides, not UTC's: 01:00 in Kolkata is 19:30 UTC of the day before.
update job_queue_config set daily_ca_local_time = '01:00';
select is(enqueue_daily_current_affairs('2026-12-02 19:29:59Z'), null, '00:59:59 local on Dec 3 (19:29:59 UTC Dec 2): nothing');
select is(enqueue_daily_current_affairs('2026-12-02 19:30Z') -> 'job' -> 'payload' ->> 'date', '2026-12-03',
          '01:00 local on Dec 3 is 19:30 UTC on Dec 2: the job is for Dec 3');
update job_queue_config set daily_ca_time_zone = 'America/New_York';
select is(enqueue_daily_current_affairs('2026-12-04 05:59Z'), null, 'in New York 00:59 on Dec 4: nothing');
select is(enqueue_daily_current_affairs('2026-12-04 06:00Z') -> 'job' -> 'payload' ->> 'date', '2026-12-04',
          'in New York 01:00 on Dec 4 (06:00 UTC): the job for Dec 4');
select throws_ok($$update job_queue_config set daily_ca_time_zone = 'Mars/Olympus'$$, '22023', null, 'an unknown zone is refused');
select is((select schedule || ' ' || command from cron.job where jobname = 'video-queue-daily-ca'),
          '* * * * * select queue.enqueue_daily_current_affairs()', 'pg_cron runs it every minute');

select * from finish();
rollback;
