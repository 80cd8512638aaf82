-- Configuration the queue design adds to the seed's job_queue_config, and the catalog tables:
-- job types (priority + default renderer), renderers (per-renderer caps), render endpoints, peak windows.

-- job_queue_config: new columns beside the seed's (nothing renamed; the seed's UPDATEs keep working).
alter table public.job_queue_config
  -- Peak windows are local times in this zone. The seed's users are in India (UPSC exam prep), so IST.
  add column peak_time_zone text not null default 'Asia/Kolkata',
  -- Unfinished (queued or processing) jobs one user may have at once; enqueues per user per minute.
  add column max_queued_per_user integer not null default 20 check (max_queued_per_user >= 0),
  add column max_enqueues_per_minute integer not null default 10 check (max_enqueues_per_minute >= 0),
  -- Finished jobs older than this are pruned by the daily cron job.
  add column finished_job_retention_days integer not null default 30 check (finished_job_retention_days > 0),
  -- Wait estimates use this processing time until a renderer has finished jobs to learn from.
  add column default_processing_seconds integer not null default 120 check (default_processing_seconds > 0);

comment on column public.job_queue_config.peak_hour_start is
  'Start (local time in peak_time_zone) of the main peak window. start > end crosses midnight; start = end: no main window. More windows: table peak_windows.';
comment on column public.job_queue_config.peak_hour_end is 'End (exclusive) of the main peak window, see peak_hour_start.';
comment on column public.job_queue_config.peak_worker_multiplier is
  'Inside any peak window the global cap is floor(max_concurrent_renders * this). Renderer caps (e.g. Manim) are not scaled.';
comment on column public.job_queue_config.max_manim_renders is 'The Manim renderer''s cap (the only place it lives; renderers.max_concurrent stays null for manim).';

-- An unknown time zone would break every claim: refuse it when it is written.
create function public.job_queue_config_validate() returns trigger
language plpgsql set search_path = '' as $$
-- Trigger on job_queue_config: rejects an unknown peak_time_zone and keeps updated_at. Called by Postgres only.
begin
  if not exists (select 1 from pg_catalog.pg_timezone_names where name = new.peak_time_zone) then
    raise exception 'unknown peak_time_zone "%"', new.peak_time_zone
      using errcode = '22023', hint = 'Use an IANA zone name such as Asia/Kolkata or UTC (see pg_timezone_names).';
  end if;
  new.updated_at := now();
  return new;
end $$;

create trigger job_queue_config_validate before insert or update on public.job_queue_config
  for each row execute function public.job_queue_config_validate();

-- Extra peak windows beside the config row's main one (AC10's "6-9 AM, 8-11 PM" needs two).
create table public.peak_windows (
  id uuid primary key default gen_random_uuid(),
  starts_at time not null,
  ends_at time not null,
  label text,
  created_at timestamptz not null default now(),
  check (starts_at <> ends_at)
);
comment on table public.peak_windows is
  'Peak windows in addition to job_queue_config.peak_hour_start/end, local time in job_queue_config.peak_time_zone; starts_at > ends_at crosses midnight.';

-- Renderers: the render services. max_concurrent null = bounded only by the global cap.
create table public.renderers (
  name text primary key check (name ~ '^[a-z][a-z0-9_]*$'),
  max_concurrent integer check (max_concurrent >= 0),
  created_at timestamptz not null default now(),
  -- Manim's cap is job_queue_config.max_manim_renders (the seed's column): one rule, one place.
  constraint renderers_manim_cap_in_config check (name <> 'manim' or max_concurrent is null)
);
insert into public.renderers (name, max_concurrent) values ('manim', null), ('revideo', null), ('orchestrator', null);

-- Job types: the seed's three, each with its priority and default renderer.
create table public.job_types (
  job_type text primary key,
  priority text not null check (priority in ('high', 'medium', 'low')),
  default_renderer text not null references public.renderers (name),
  created_at timestamptz not null default now()
);
insert into public.job_types (job_type, priority, default_renderer) values
  ('doubt', 'high', 'orchestrator'),
  ('topic_short', 'medium', 'manim'),
  ('daily_ca', 'low', 'revideo');

-- Render endpoints: operators register servers with
--   insert into render_endpoints (renderer, url) values ('manim', 'http://manim-1.internal:5000');
-- delete the row or set disabled = true to take one out of rotation.
create table public.render_endpoints (
  id uuid primary key default gen_random_uuid(),
  renderer text not null references public.renderers (name),
  url text not null check (url ~ '^https?://'),
  disabled boolean not null default false,
  unhealthy_until timestamptz,
  created_at timestamptz not null default now(),
  unique (renderer, url)
);
create index render_endpoints_renderer on public.render_endpoints (renderer) where not disabled;

-- The cap of each renderer, resolved in one place (Manim from the seed's config column).
create function public.renderer_caps()
returns table (renderer text, max_concurrent integer)
language plpgsql stable security definer rows 3 set search_path = '' as $$
-- Cap per renderer (null = only the global cap applies). Internal; called by claim, stats and estimates.
begin
  return query
    select r.name,
           case when r.name = 'manim' then (select c.max_manim_renders from public.job_queue_config c limit 1)
                else r.max_concurrent end
      from public.renderers r;
end $$;
