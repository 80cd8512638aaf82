-- ============================================================================
-- LOCAL-ONLY PLATFORM BOOTSTRAP. Never applied to a Supabase project.
--
-- A hosted (or Docker-based) Supabase database already has everything below.
-- Plain Debian Postgres does not, so the local stack applies this file once,
-- before `supabase db push` applies supabase/migrations. It keeps the
-- platform's names and signatures so the migrations run unchanged on both;
-- the migrations must not depend on anything here that Supabase lacks.
--
--   roles      anon, authenticated, service_role, and authenticator (the Data API's
--              login role, which may switch to the three), with the default privileges
--              a hosted project grants in `public` and its exposed-schema setting
--   auth       auth.users (a minimal stand-in), auth.uid(), auth.jwt(), auth.role()
--   vault      vault.secrets, vault.create_secret(), vault.update_secret(),
--              vault.decrypted_secrets  -- NOT encrypted locally
--   net        net.http_post() with pg_net's signature: it only queues the
--              request; the stack's sender process (scripts/stack/net_sender.ts)
--              sends it after the transaction commits, as pg_net's worker does
--   extensions the `extensions` schema with pgcrypto, as on Supabase
-- ============================================================================

-- Roles -----------------------------------------------------------------------
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_roles where rolname = 'service_role') then
    create role service_role nologin noinherit bypassrls;
  end if;
end $$;
grant anon, authenticated, service_role to postgres;
grant usage on schema public to anon, authenticated, service_role;

-- PostgREST (the Data API) logs in as `authenticator` and switches, per request, to the role the
-- caller's JWT names. Any role it can switch to is reachable over /rest/v1 with a user's token.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'authenticator') then
    create role authenticator login noinherit;
  end if;
end $$;
grant anon, authenticated, service_role to authenticator;

-- What a hosted project grants by default: every new table, sequence and function in `public` is
-- usable by the API roles unless a migration revokes it. The migrations must be safe on top of this.
alter default privileges for role postgres in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on sequences to anon, authenticated, service_role;
alter default privileges for role postgres in schema public grant all on functions to anon, authenticated, service_role;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';

-- The schemas PostgREST serves (Supabase's default `api.schemas`). PostgREST reads it from the
-- authenticator role; Supabase's lints (`supabase db advisors`) read it from the session.
create schema if not exists graphql_public;
grant usage on schema graphql_public to anon, authenticated, service_role;
alter role authenticator set pgrst.db_schemas = 'public, graphql_public';
alter database postgres set pgrst.db_schemas = 'public, graphql_public';

create schema if not exists extensions;
grant usage on schema extensions to anon, authenticated, service_role;
create extension if not exists pgcrypto with schema extensions;

-- Auth ------------------------------------------------------------------------
create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

-- Minimal stand-in for GoTrue's table: only the columns this project reads.
create table if not exists auth.users (
  id uuid primary key default gen_random_uuid(),
  email text,
  raw_app_meta_data jsonb not null default '{}'::jsonb,
  raw_user_meta_data jsonb not null default '{}'::jsonb,
  created_at timestamptz not null default now()
);

-- Same bodies as Supabase's: claims come from the request.jwt.claims setting.
create or replace function auth.uid() returns uuid language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

create or replace function auth.role() returns text language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.role', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
  )::text
$$;

create or replace function auth.jwt() returns jsonb language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim', true), ''),
    nullif(current_setting('request.jwt.claims', true), '')
  )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

-- Vault (plain text locally; Supabase encrypts with pgsodium) ------------------
create schema if not exists vault;

create table if not exists vault.secrets (
  id uuid primary key default gen_random_uuid(),
  name text unique,
  description text not null default '',
  secret text not null,
  key_id uuid,
  nonce bytea,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create or replace function vault.create_secret(
  new_secret text, new_name text default null, new_description text default '', new_key_id uuid default null
) returns uuid language sql as $$
  insert into vault.secrets (secret, name, description, key_id)
  values (new_secret, new_name, coalesce(new_description, ''), new_key_id)
  returning id
$$;

create or replace function vault.update_secret(
  secret_id uuid, new_secret text default null, new_name text default null,
  new_description text default null, new_key_id uuid default null
) returns void language sql as $$
  update vault.secrets
     set secret = coalesce(new_secret, secret), name = coalesce(new_name, name),
         description = coalesce(new_description, description), key_id = coalesce(new_key_id, key_id),
         updated_at = now()
   where id = secret_id
$$;

create or replace view vault.decrypted_secrets as
  select id, name, description, secret, secret as decrypted_secret, key_id, nonce, created_at, updated_at
    from vault.secrets;

revoke all on schema vault from public, anon, authenticated;

-- pg_net -----------------------------------------------------------------------
create schema if not exists net;

create table if not exists net.http_request_queue (
  id bigserial primary key,
  method text not null,
  url text not null,
  headers jsonb not null,
  body bytea,
  timeout_milliseconds int not null
);

create unlogged table if not exists net._http_response (
  id bigint,
  status_code int,
  content_type text,
  headers jsonb,
  content text,
  timed_out boolean,
  error_msg text,
  created timestamptz not null default now()
);

-- pg_net's signature. Queues only; NOTIFY is delivered at commit, so the
-- sender never sees (or sends) a request whose transaction rolled back.
create or replace function net.http_post(
  url text,
  body jsonb default '{}'::jsonb,
  params jsonb default '{}'::jsonb,
  headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
  timeout_milliseconds int default 5000
) returns bigint language plpgsql security definer set search_path = '' as $$
declare
  request_id bigint;
  full_url text := url;
begin
  if params is not null and params <> '{}'::jsonb then
    full_url := full_url || case when position('?' in url) > 0 then '&' else '?' end ||
      (select string_agg(key || '=' || value, '&') from jsonb_each_text(params));
  end if;
  insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
  values ('POST', full_url, headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
  returning id into request_id;
  perform pg_notify('pg_net_request', request_id::text);
  return request_id;
end $$;

grant usage on schema net to postgres, anon, authenticated, service_role;
grant execute on function net.http_post(text, jsonb, jsonb, jsonb, int) to postgres, service_role;

-- Realtime ---------------------------------------------------------------------------------------
-- Supabase Realtime's tenant schema (supabase/realtime, lib/realtime/tenants/repo/migrations): the
-- messages table that Broadcast from the database writes to and that authorization probes, realtime.send()
-- and realtime.topic() with their signatures and bodies, RLS enabled with no policy, the same grants.
-- Differences, all LOCAL-ONLY: the table is not partitioned by day (Supabase's janitor drops old
-- partitions after 3 days; here nothing is dropped) and has no binary_payload column, and a trigger
-- NOTIFYs `realtime_local` with each new message's id: the stack's Realtime stand-in
-- (scripts/stack/realtime.ts) reads the row and delivers it, as Realtime does from the WAL. NOTIFY is
-- delivered at commit, so a rolled-back message (or authorization probe) is never delivered.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'supabase_realtime_admin') then
    create role supabase_realtime_admin nologin noinherit;
  end if;
end $$;
create schema if not exists realtime;
grant usage on schema realtime to postgres, anon, authenticated, service_role;
grant all on schema realtime to supabase_realtime_admin;

create table if not exists realtime.messages (
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  id uuid not null default gen_random_uuid(),
  primary key (id, inserted_at)
);
create index if not exists messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
  where extension = 'broadcast' and private is true;
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to postgres, anon, authenticated, service_role;
alter table realtime.messages owner to supabase_realtime_admin;

-- Supabase's body (migration 20260605120000): the payload gets an `id` unless it has one; a failure is a
-- WARNING, never an error of the caller's transaction.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void as $$
declare
  generated_id uuid;
  final_payload jsonb;
begin
  begin
    generated_id := gen_random_uuid();
    if payload ? 'id' then
      final_payload := payload;
    else
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    end if;
    execute format('SET LOCAL realtime.topic TO %L', topic);
    insert into realtime.messages (id, payload, event, topic, private, extension)
    values (generated_id, final_payload, event, topic, private, 'broadcast');
  exception
    when others then
      raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
  end;
end;
$$ language plpgsql;

-- The topic being joined, as Realtime sets it while it checks a join against the policies.
create or replace function realtime.topic() returns text as $$
  select nullif(current_setting('realtime.topic', true), '')::text;
$$ language sql stable;

alter function realtime.send(jsonb, text, text, boolean) owner to supabase_realtime_admin;
alter function realtime.topic() owner to supabase_realtime_admin;
grant execute on function realtime.send(jsonb, text, text, boolean), realtime.topic()
  to postgres, anon, authenticated, service_role;

-- LOCAL-ONLY: tells the stand-in server (LISTEN realtime_local) which message to deliver.
create or replace function realtime.local_notify_message() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  perform pg_notify('realtime_local', new.id::text);
  return null;
end $$;
revoke all on function realtime.local_notify_message() from public;
drop trigger if exists local_notify_message on realtime.messages;
create trigger local_notify_message after insert on realtime.messages
  for each row execute function realtime.local_notify_message();
