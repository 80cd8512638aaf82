-- Webhooks for servers and the daily current-affairs video (issue 13, parts 3 and 4).
--
-- Webhooks: an operator registers receiver URLs (queue.register_webhook, admin only). A job entering a
-- terminal state (completed, failed, cancelled) puts one delivery per interested endpoint in an outbox
-- (webhook_deliveries, written in the same transaction as the state, so none is lost). The worker sends
-- them beside its passes (shared/webhooks.ts) with Standard Webhooks headers, one row per attempt in
-- webhook_delivery_attempts, retrying with backoff until a 2xx or the last attempt. Signing secrets
-- (whsec_<base64>) live in Vault; the tables keep only the secret's id.
--
-- Daily video: queue.enqueue_daily_current_affairs(), run each minute by pg_cron, enqueues the day's daily_ca
-- job once the configured local time has passed, exactly once per local day (idempotency key daily_ca:<date>).

-- Receivers ---------------------------------------------------------------------------------------------------

create table public.webhook_endpoints (
  id uuid primary key default gen_random_uuid(),
  url text not null unique check (url ~ '^https?://[^[:space:]]+$' and length(url) <= 2048),
  description text not null default '',
  -- null: every event; else a non-empty subset of the events (the terminal states)
  event_types text[] check (cardinality(event_types) > 0
                            and event_types <@ array['job.completed', 'job.failed', 'job.cancelled']),
  enabled boolean not null default true,
  secret_id uuid not null,
  created_at timestamptz not null default now()
);
alter table public.webhook_endpoints enable row level security;
comment on table public.webhook_endpoints is
  'Webhook receivers (admin only: register with queue.register_webhook, disable with enabled = false).';
comment on column public.webhook_endpoints.secret_id is
  'Id in vault.secrets of the endpoint''s Standard Webhooks signing secret (whsec_<base64>); never stored here.';
comment on column public.webhook_endpoints.enabled is
  'A disabled endpoint gets no new deliveries and its pending ones wait (they go out if it is enabled again).';

create table public.webhook_deliveries (
  id bigint generated always as identity primary key,
  endpoint_id uuid not null references public.webhook_endpoints (id) on delete cascade,
  job_id uuid not null references public.jobs (id) on delete cascade,  -- pruned with its job
  event_type text not null,
  message_id text not null,
  payload jsonb not null,
  attempts integer not null default 0 check (attempts >= 0),
  next_attempt_at timestamptz,
  delivered_at timestamptz,
  gave_up_at timestamptz,
  last_status integer,
  last_error text,
  created_at timestamptz not null,
  unique (endpoint_id, message_id),
  -- pending (due at next_attempt_at), delivered or given up: exactly one
  constraint webhook_deliveries_one_state check (num_nonnulls(next_attempt_at, delivered_at, gave_up_at) = 1)
);
alter table public.webhook_deliveries enable row level security;
create index webhook_deliveries_due on public.webhook_deliveries (next_attempt_at) where next_attempt_at is not null;
create index webhook_deliveries_job on public.webhook_deliveries (job_id);
comment on table public.webhook_deliveries is
  'The webhook outbox: one row per terminal job event and endpoint, written with the job''s state. Admin only.';
comment on column public.webhook_deliveries.message_id is
  'webhook-id: one per event, the same on every attempt and every endpoint (receivers deduplicate on it).';
comment on column public.webhook_deliveries.payload is
  'The body, byte for byte on every attempt: {"type", "timestamp", "data": Job as private.job_to_json makes it}.';
comment on column public.webhook_deliveries.next_attempt_at is
  'When the next attempt may start (a claimed one is leased until then); null once delivered or given up.';

create table public.webhook_delivery_attempts (
  delivery_id bigint not null references public.webhook_deliveries (id) on delete cascade,
  attempt integer not null check (attempt >= 1),
  started_at timestamptz not null,
  finished_at timestamptz,
  status integer,
  error text,
  duration_ms integer,
  primary key (delivery_id, attempt)
);
alter table public.webhook_delivery_attempts enable row level security;
comment on table public.webhook_delivery_attempts is
  'Every attempt at a webhook delivery: the receiver''s status (null: no answer), the error, how long it took. '
  'An attempt never finished was lost with its worker; its delivery went out again after the lease.';

-- The outbox -------------------------------------------------------------------------------------------------

-- jobs__webhook_outbox: a job entered a terminal state: one delivery per enabled endpoint that wants the event.
create function private.jobs__webhook_outbox() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_event text := 'job.' || new.status;
begin
  -- Without receivers (the common case) this is one probe of a tiny table.
  if not exists (select 1 from public.webhook_endpoints e where e.enabled) then
    return null;
  end if;
  insert into public.webhook_deliveries (endpoint_id, job_id, event_type, message_id, payload, next_attempt_at,
                                         created_at)
  select e.id, new.id, v_event, m.id, m.payload, new.completed_at, new.completed_at
    from (select 'msg_' || replace(pg_catalog.gen_random_uuid()::text, '-', '') as id,
                 jsonb_build_object('type', v_event, 'timestamp', new.completed_at,
                                    'data', private.job_to_json(new, new.completed_at)) as payload) m
    cross join public.webhook_endpoints e
   where e.enabled and (e.event_types is null or v_event = any (e.event_types));
  return null;
end $$;

-- Fires only on the move into a terminal state (the WHEN is evaluated without calling the function, so
-- claims, progress and heartbeats pay nothing). Every writer is covered: set_job_state and hand-written UPDATEs.
create trigger _700_webhook_outbox after update of status on public.jobs
  for each row
  when (new.status in ('completed', 'failed', 'cancelled') and old.status is distinct from new.status)
  execute function private.jobs__webhook_outbox();

-- webhook_backoff: the wait after failed attempt p_attempt, null after the last (8 attempts over ~28 h:
-- at once, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h, the schedule of Svix, Standard Webhooks' origin).
create function private.webhook_backoff(p_attempt integer) returns interval
language sql immutable set search_path = '' as $$
  select (array['5 seconds', '5 minutes', '30 minutes', '2 hours', '5 hours', '10 hours', '10 hours']::interval[])[p_attempt]
$$;

-- new_webhook_secret: a Standard Webhooks signing secret, whsec_ + base64 of 32 random bytes.
create function private.new_webhook_secret() returns text
language sql volatile set search_path = '' as $$
  select 'whsec_' || pg_catalog.encode(extensions.gen_random_bytes(32), 'base64')
$$;

-- Operators ----------------------------------------------------------------------------------------------------

-- register_webhook: registers a receiver; answers {"id", "url", "secret"}, the only time the secret is shown.
-- Operators: postgres (SQL editor) and service_role.
create function queue.register_webhook(p_url text, p_description text default '', p_event_types text[] default null)
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_id uuid := pg_catalog.gen_random_uuid();
  v_secret text := private.new_webhook_secret();
begin
  if p_url is null or p_url !~ '^https?://[^[:space:]]+$' or length(p_url) > 2048 then
    raise exception 'webhook url must be an http(s) URL of at most 2048 characters' using errcode = 'VQ400',
      hint = 'For example https://example.com/hooks/video-queue.';
  end if;
  if exists (select 1 from public.webhook_endpoints e where e.url = p_url) then
    raise exception 'a webhook endpoint for % is already registered', p_url using errcode = 'VQ409',
      hint = 'Use queue.rotate_webhook_secret for a new secret, or delete the endpoint first.';
  end if;
  insert into public.webhook_endpoints (id, url, description, event_types, secret_id)
  values (v_id, p_url, coalesce(p_description, ''), p_event_types,
          vault.create_secret(v_secret, 'video_queue_webhook:' || v_id, 'Standard Webhooks secret of ' || p_url));
  return jsonb_build_object('id', v_id, 'url', p_url, 'secret', v_secret);
end $$;

-- rotate_webhook_secret: gives an endpoint a new signing secret (answered once, as at registration); the
-- next attempt is signed with it. Operators: postgres and service_role.
create function queue.rotate_webhook_secret(p_endpoint_id uuid) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_endpoint public.webhook_endpoints;
  v_secret text := private.new_webhook_secret();
begin
  select * into v_endpoint from public.webhook_endpoints e where e.id = p_endpoint_id;
  if not found then
    raise exception 'webhook endpoint % not found', p_endpoint_id using errcode = 'VQ404';
  end if;
  perform vault.update_secret(v_endpoint.secret_id, v_secret);
  return jsonb_build_object('id', v_endpoint.id, 'url', v_endpoint.url, 'secret', v_secret);
end $$;

-- webhook_endpoints__forget_secret: a deleted endpoint's signing secret leaves Vault with it. Called by Postgres only.
create function private.webhook_endpoints__forget_secret() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  delete from vault.secrets s where s.id = old.secret_id;
  return null;
end $$;
create trigger _900_forget_secret after delete on public.webhook_endpoints
  for each row execute function private.webhook_endpoints__forget_secret();

-- The worker's side -------------------------------------------------------------------------------------------

-- claim_webhook_deliveries: up to p_limit due deliveries of enabled endpoints, each leased for p_lease_seconds
-- (its attempt started and counted), with what sending needs: url, signing secret, message id, body. A
-- delivery whose worker died goes out again when its lease ends (at least once). service_role.
create function queue.claim_webhook_deliveries(p_limit integer default 20, p_lease_seconds integer default 60,
                                               p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_claims jsonb;
begin
  with due as (
    select d.id from public.webhook_deliveries d
      join public.webhook_endpoints e on e.id = d.endpoint_id and e.enabled
     where d.next_attempt_at <= p_now
     order by d.next_attempt_at
     limit greatest(p_limit, 0)
       for update of d skip locked),
  claimed as (
    update public.webhook_deliveries d
       set attempts = d.attempts + 1, next_attempt_at = p_now + make_interval(secs => greatest(p_lease_seconds, 1))
      from due where d.id = due.id
    returning d.*),
  started as (
    insert into public.webhook_delivery_attempts (delivery_id, attempt, started_at)
    select c.id, c.attempts, p_now from claimed c)
  select coalesce(jsonb_agg(jsonb_build_object(
           'id', c.id, 'attempt', c.attempts, 'job_id', c.job_id, 'event_type', c.event_type,
           'message_id', c.message_id, 'url', e.url, 'secret', s.decrypted_secret, 'body', c.payload::text)
           order by c.next_attempt_at, c.id), '[]'::jsonb)
    into v_claims
    from claimed c
    join public.webhook_endpoints e on e.id = c.endpoint_id
    left join vault.decrypted_secrets s on s.id = e.secret_id;
  return v_claims;
end $$;

-- record_webhook_attempt: the answer to one attempt: a 2xx delivers; otherwise the current attempt is
-- retried after webhook_backoff, or given up after the last. Answers the delivery's state. service_role.
create function queue.record_webhook_attempt(p_delivery_id bigint, p_attempt integer, p_status integer,
                                             p_error text, p_duration_ms integer, p_now timestamptz default now())
returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v public.webhook_deliveries;
  v_delivered boolean := p_status between 200 and 299;
  v_wait interval;
begin
  update public.webhook_delivery_attempts a
     set finished_at = p_now, status = p_status, error = case when not v_delivered then p_error end,
         duration_ms = p_duration_ms
   where a.delivery_id = p_delivery_id and a.attempt = p_attempt and a.finished_at is null;
  if not found then
    raise exception 'attempt % of webhook delivery % is not open', p_attempt, p_delivery_id using errcode = 'VQ409',
      hint = 'Record each claimed attempt once.';
  end if;
  select * into v from public.webhook_deliveries d where d.id = p_delivery_id for update;
  if v.next_attempt_at is null then
    null;  -- already delivered (a late attempt that lost its lease) or given up: settled
  elsif v_delivered then
    update public.webhook_deliveries d
       set delivered_at = p_now, next_attempt_at = null, last_status = p_status, last_error = null
     where d.id = v.id returning * into v;
  elsif v.attempts = p_attempt then  -- a newer attempt in flight decides for itself
    v_wait := private.webhook_backoff(p_attempt);
    update public.webhook_deliveries d
       set next_attempt_at = p_now + v_wait, gave_up_at = case when v_wait is null then p_now end,
           last_status = p_status, last_error = p_error
     where d.id = v.id returning * into v;
  end if;
  return jsonb_build_object('id', v.id, 'attempts', v.attempts, 'delivered_at', v.delivered_at,
                            'gave_up_at', v.gave_up_at, 'next_attempt_at', v.next_attempt_at);
end $$;

-- The daily current-affairs video -----------------------------------------------------------------------------

alter table public.job_queue_config
  add column daily_ca_enabled boolean not null default false,
  add column daily_ca_local_time time not null default '06:00',
  add column daily_ca_time_zone text not null default 'Asia/Kolkata';
comment on column public.job_queue_config.daily_ca_enabled is
  'The pg_cron job video-queue-daily-ca enqueues the day''s current-affairs video while true.';
comment on column public.job_queue_config.daily_ca_local_time is
  'Local time (in daily_ca_time_zone) from which the day''s daily_ca job is enqueued, once per local day.';
comment on column public.job_queue_config.daily_ca_time_zone is
  'IANA zone of daily_ca_local_time and of the date the daily video is for.';

create or replace function private.job_queue_config_validate() returns trigger
language plpgsql set search_path = '' as $$
-- Trigger on job_queue_config: rejects an unknown peak_time_zone or daily_ca_time_zone and keeps updated_at. Called by Postgres only.
begin
  if not exists (select 1 from pg_catalog.pg_timezone_names where name = new.peak_time_zone) then
    raise exception 'unknown peak_time_zone "%"', new.peak_time_zone
      using errcode = '22023', hint = 'Use an IANA zone name such as Asia/Kolkata or UTC (see pg_timezone_names).';
  end if;
  if not exists (select 1 from pg_catalog.pg_timezone_names where name = new.daily_ca_time_zone) then
    raise exception 'unknown daily_ca_time_zone "%"', new.daily_ca_time_zone
      using errcode = '22023', hint = 'Use an IANA zone name such as Asia/Kolkata or UTC (see pg_timezone_names).';
  end if;
  new.updated_at := now();
  return new;
end $$;

-- enqueue_daily_current_affairs: once the configured local time has passed, enqueues the local day's daily_ca
-- job ({"date": "YYYY-MM-DD"}, low priority, no user) unless it exists: {"job", "created"}, or null when
-- disabled or too early. Exactly once per local day however often it runs, concurrently too (enqueue_job's
-- idempotency key daily_ca:<date>). The pg_cron job video-queue-daily-ca; operators (postgres, service_role).
create function queue.enqueue_daily_current_affairs(p_now timestamptz default now()) returns jsonb
language plpgsql security definer set search_path = '' as $$
declare
  v_cfg public.job_queue_config;
  v_local timestamp;
begin
  select * into v_cfg from public.job_queue_config c limit 1;
  if not v_cfg.daily_ca_enabled then
    return null;
  end if;
  v_local := p_now at time zone v_cfg.daily_ca_time_zone;
  if v_local::time < v_cfg.daily_ca_local_time then
    return null;
  end if;
  return queue.enqueue_job(p_job_type => 'daily_ca',
                           p_payload => jsonb_build_object('date', to_char(v_local, 'YYYY-MM-DD')),
                           p_idempotency_key => 'daily_ca:' || to_char(v_local, 'YYYY-MM-DD'),
                           p_now => p_now);
end $$;

-- Each minute (pg_cron 1.4 has no per-job time zone: the function compares local times itself); a run before
-- the configured time, or after today's job exists, costs one config read and one index probe.
select cron.schedule('video-queue-daily-ca', '* * * * *', $cmd$select queue.enqueue_daily_current_affairs()$cmd$);

-- Privileges ---------------------------------------------------------------------------------------------------

-- The tables: operators only (postgres; service_role through Supabase's defaults). No API role, no policy.
revoke all on public.webhook_endpoints, public.webhook_deliveries, public.webhook_delivery_attempts
  from anon, authenticated;
revoke all on function queue.register_webhook(text, text, text[]),
                       queue.rotate_webhook_secret(uuid),
                       queue.claim_webhook_deliveries(integer, integer, timestamptz),
                       queue.record_webhook_attempt(bigint, integer, integer, text, integer, timestamptz),
                       queue.enqueue_daily_current_affairs(timestamptz)
  from public, anon, authenticated;
grant execute on function queue.register_webhook(text, text, text[]),
                          queue.rotate_webhook_secret(uuid),
                          queue.claim_webhook_deliveries(integer, integer, timestamptz),
                          queue.record_webhook_attempt(bigint, integer, integer, text, integer, timestamptz),
                          queue.enqueue_daily_current_affairs(timestamptz)
  to service_role;
