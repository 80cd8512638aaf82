-- The job's lifecycle columns, its attempts, the state invariants, the claim/position indexes, and the
-- BEFORE INSERT trigger that turns the seed's direct INSERT into a valid queued job.

alter table public.jobs
  add column renderer text references public.renderers (name),
  add column attempt integer not null default 0 check (attempt >= 0),
  add column lease_expires_at timestamptz,
  add column next_attempt_at timestamptz,
  add column progress integer not null default 0 check (progress between 0 and 100),
  add column stage text,
  add column result jsonb,
  add column worker_id text,
  add column endpoint_id uuid references public.render_endpoints (id) on delete set null,
  add column idempotency_key text check (length(idempotency_key) between 1 and 128),
  add column cancel_reason text,
  add column updated_at timestamptz not null default now(),
  -- Claim order: high (0) before medium (1) before low (2); FIFO by (created_at, id) within a priority.
  add column priority_rank smallint generated always as
    (case priority when 'high' then 0 when 'medium' then 1 else 2 end) stored;

alter table public.jobs alter column renderer set not null;
alter table public.jobs add constraint jobs_job_type_fk foreign key (job_type) references public.job_types (job_type);

-- State invariants.
alter table public.jobs
  add constraint jobs_finished_has_completed_at
    check ((status in ('completed', 'failed', 'cancelled')) = (completed_at is not null)),
  add constraint jobs_processing_has_lease
    check ((status = 'processing') = (lease_expires_at is not null)),
  add constraint jobs_queued_has_next_attempt_at
    check ((status = 'queued') = (next_attempt_at is not null)),
  add constraint jobs_processing_has_attempt
    check (status <> 'processing' or (attempt >= 1 and started_at is not null and worker_id is not null)),
  add constraint jobs_completed_has_result
    check (status <> 'completed' or result is not null),
  add constraint jobs_failed_has_error
    check (status <> 'failed' or error_message is not null);

comment on column public.jobs.queue_position is
  'The seed''s column, kept for operators but NOT maintained: a trigger renumbering every queued row deadlocks '
  'under concurrent enqueues and makes enqueue O(queue). The exact position is computed at read time by '
  'public.job_queue_position() and returned as queue_position by every API call (public.job_to_json).';
comment on column public.jobs.retry_count is
  'Retries used. max_retries = 3 means up to 3 retries after the first attempt (4 attempts in all).';
comment on column public.jobs.attempt is 'Current (or last) attempt number; each claim increments it. Outcomes are fenced by it.';
comment on column public.jobs.lease_expires_at is
  'Set while processing: claim time + job_timeout_minutes. Progress reports do not extend it; recovery fails an expired attempt (retryable).';
comment on column public.jobs.next_attempt_at is 'Earliest time a queued job may be claimed (run_at, retry backoff). Null unless queued.';
comment on column public.jobs.renderer is 'The render service that makes this job (what a "Manim job" is).';

-- Attempts: one row per claim. The callback token is stored only as its sha256 (hex).
create table public.job_attempts (
  job_id uuid not null references public.jobs (id) on delete cascade,
  attempt integer not null check (attempt >= 1),
  token_hash text not null check (token_hash ~ '^[0-9a-f]{64}$'),
  worker_id text not null,
  endpoint_id uuid references public.render_endpoints (id) on delete set null,
  endpoint_url text,
  started_at timestamptz not null,
  lease_expires_at timestamptz not null,
  finished_at timestamptz,
  outcome text check (outcome in ('completed', 'failed', 'retry_scheduled', 'released', 'timed_out', 'cancelled')),
  error text,
  primary key (job_id, attempt),
  check ((outcome is null) = (finished_at is null))
);
create unique index job_attempts_token_hash on public.job_attempts (token_hash);

-- Indexes. Claim: one partial index scan per renderer in claim order.
create index jobs_claim_order on public.jobs (renderer, priority_rank, created_at, id) where status = 'queued';
-- Position: count in claim order among queued jobs (index-only).
create index jobs_queued_order on public.jobs (priority_rank, created_at, id) where status = 'queued';
create index jobs_processing on public.jobs (renderer, endpoint_id) where status = 'processing';
create index jobs_lease on public.jobs (lease_expires_at) where status = 'processing';
create index jobs_finished on public.jobs (completed_at, status) where completed_at is not null;
create index jobs_completed_by_renderer on public.jobs (renderer, completed_at) where status = 'completed';
create index jobs_user_created on public.jobs (user_id, created_at);
create index jobs_user_unfinished on public.jobs (user_id) where status in ('queued', 'processing');
create unique index jobs_idempotency on public.jobs (user_id, idempotency_key) nulls not distinct
  where idempotency_key is not null;
create index jobs_created on public.jobs (created_at);

-- BEFORE INSERT: derive what the caller left out (the seed's INSERT gives job_type, priority, status, payload).
create function public.jobs_before_insert() returns trigger
language plpgsql set search_path = '' as $$
-- Trigger on jobs: fills priority/renderer from job_types and makes a queued job claimable. Called by Postgres only.
declare
  v_type public.job_types;
begin
  select * into v_type from public.job_types t where t.job_type = new.job_type;
  if not found then
    raise exception 'unknown job_type "%"', new.job_type using errcode = '23514',
      hint = 'Use one of the job_types table: doubt, topic_short, daily_ca.';
  end if;
  new.priority := coalesce(new.priority, v_type.priority);
  new.renderer := coalesce(new.renderer, v_type.default_renderer);
  new.created_at := coalesce(new.created_at, now());
  new.updated_at := new.created_at;
  if new.status = 'queued' then
    new.next_attempt_at := coalesce(new.next_attempt_at, new.created_at);
    new.queue_position := null;
  end if;
  return new;
end $$;

create trigger jobs_before_insert before insert on public.jobs
  for each row execute function public.jobs_before_insert();

-- BEFORE UPDATE: keep updated_at for direct updates (the queue functions set it from p_now themselves).
create function public.jobs_touch_updated_at() returns trigger
language plpgsql set search_path = '' as $$
-- Trigger on jobs: sets updated_at = now() unless the statement set it. Called by Postgres only.
begin
  if new.updated_at is not distinct from old.updated_at then
    new.updated_at := now();
  end if;
  return new;
end $$;

create trigger jobs_touch_updated_at before update on public.jobs
  for each row execute function public.jobs_touch_updated_at();
