-- The seed's two tables (seed 002, "Database Schema"), with its column names and defaults.
-- Later migrations add what the queue design needs; nothing here is renamed.

create extension if not exists pg_cron;

create table public.job_queue_config (
  id uuid primary key default gen_random_uuid(),
  max_concurrent_renders integer not null default 10 check (max_concurrent_renders >= 0),
  max_manim_renders integer not null default 4 check (max_manim_renders >= 0),
  job_timeout_minutes integer not null default 10 check (job_timeout_minutes > 0),
  retry_interval_minutes integer not null default 5 check (retry_interval_minutes >= 0),
  peak_hour_start time not null default '06:00',
  peak_hour_end time not null default '21:00',
  peak_worker_multiplier numeric(4, 2) not null default 1.5 check (peak_worker_multiplier > 0),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

-- Exactly one configuration row: the seed's UPDATE ... WHERE id = (SELECT id ... LIMIT 1) targets it.
create unique index job_queue_config_singleton on public.job_queue_config ((true));
insert into public.job_queue_config default values;

create table public.jobs (
  id uuid primary key default gen_random_uuid(),
  job_type text not null check (job_type in ('doubt', 'topic_short', 'daily_ca')),
  priority text not null check (priority in ('high', 'medium', 'low')),
  status text not null default 'queued'
    check (status in ('queued', 'processing', 'completed', 'failed', 'cancelled')),
  payload jsonb not null default '{}'::jsonb,
  queue_position integer,
  retry_count integer not null default 0 check (retry_count >= 0),
  max_retries integer not null default 3 check (max_retries >= 0),
  error_message text,
  started_at timestamptz,
  completed_at timestamptz,
  created_at timestamptz not null default now(),
  user_id uuid references auth.users (id) on delete cascade
);

alter table public.job_queue_config enable row level security;
alter table public.jobs enable row level security;
