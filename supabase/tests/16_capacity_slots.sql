-- Capacity as slot rows: every running job holds its slots, every other path frees them, a lowered cap
-- drains before anything new starts, and a truncate or delete leaves nothing held.
begin;
\ir _setup.psql
select plan(16);

create function pg_temp.held(p_scope text) returns bigint language sql as $$
  select count(*) from private.capacity_slots where scope = p_scope and job_id is not null
$$;
-- Every processing job holds a global slot, and one of its renderer when that renderer is capped; no
-- one else holds any.
create function pg_temp.slots_match_jobs() returns boolean language sql as $$
  select not exists (
    select j.id from public.jobs j where j.status = 'processing'
    except select s.job_id from private.capacity_slots s where s.scope = 'global')
  and not exists (
    select s.job_id from private.capacity_slots s where s.job_id is not null
    except select j.id from public.jobs j where j.status = 'processing')
  and not exists (
    select 1 from public.jobs j join private.renderer_caps() rc on rc.renderer = j.renderer
     where j.status = 'processing' and rc.max_concurrent is not null
       and not exists (select 1 from private.capacity_slots s
                        where s.scope = 'renderer:' || j.renderer and s.job_id = j.id))
$$;

-- Slot rows follow the caps (rows are never removed: a cap counts those below it).
update job_queue_config set max_concurrent_renders = 70, max_manim_renders = 64;
select is((select count(*) from private.capacity_slots where scope = 'global' and slot < 105), 105::bigint,
  'global slots up to the peak capacity (70 x 1.5)');
select is((select count(*) from private.capacity_slots where scope = 'renderer:manim' and slot < 64), 64::bigint,
  'Manim slots up to max_manim_renders');
update job_queue_config set max_concurrent_renders = 10, max_manim_renders = 4;
update renderers set max_concurrent = 2 where name = 'revideo';
select is((select count(*) from private.capacity_slots where scope = 'renderer:revideo' and slot < 2), 2::bigint,
  'a newly capped renderer gets its slots');

-- Claims take slots; every way out of processing frees them.
insert into jobs (job_type, status, payload, created_at)
  select 'topic_short', 'queued', '{}', :'N'::timestamptz - interval '1 hour' + g * interval '1 s' from generate_series(1, 8) g;
select is(cardinality(pg_temp.claim_ids(:'N')), 4, 'four Manim jobs start (its cap)');
select is(pg_temp.held('renderer:manim'), 4::bigint, 'each holds a Manim slot');
select is(pg_temp.held('global'), 4::bigint, 'and a global slot');

select is(cardinality(pg_temp.claim_ids(:'N', 1)), 0, 'Manim at its cap: nothing more starts');
select job_id as j1 from private.capacity_slots where scope = 'renderer:manim' and slot = 0 \gset
select (select attempt from jobs where id = :'j1') as a1 \gset
select is((queue.release_job(:'j1', :a1, :'N')->>'status'), 'queued', 'a release');
select ok(pg_temp.slots_match_jobs() and pg_temp.held('renderer:manim') = 3, 'frees both slots of the job');
select is(cardinality(pg_temp.claim_ids(:'N')), 1, 'and the freed slot is taken again at once');
update jobs set status = 'failed' where id = (select job_id from private.capacity_slots where scope = 'global' and slot = 1);
select ok(pg_temp.slots_match_jobs(), 'a hand-written status change (the seeds'' reset) frees them too');

-- A cap lowered under running jobs: nothing new starts until fewer run than the new cap.
update job_queue_config set max_manim_renders = 2;  -- 3 running, in any of the slots 0..3
select is(cardinality(pg_temp.claim_ids(:'N')), 0, 'lowered to 2 with 3 running: nothing starts');
update jobs set status = 'cancelled'
 where id = (select job_id from private.capacity_slots where scope = 'renderer:manim' and job_id is not null
              order by slot limit 1);
select is(cardinality(pg_temp.claim_ids(:'N')), 0, '2 running at a cap of 2: still nothing');
update jobs set status = 'cancelled'
 where id = (select job_id from private.capacity_slots where scope = 'renderer:manim' and job_id is not null
              order by slot limit 1);
select is(cardinality(pg_temp.claim_ids(:'N')), 1, '1 running: one starts, in a slot below the cap');
select ok(pg_temp.slots_match_jobs()
          and not exists (select 1 from private.capacity_slots
                           where scope = 'renderer:manim' and slot >= 2 and job_id is not null),
  'the job held above the lowered cap moved down');

-- Deleting or truncating running jobs leaves no slot held.
truncate jobs cascade;
select is((select count(*) from private.capacity_slots where job_id is not null), 0::bigint,
  'truncate: no slot held');

select * from finish();
rollback;
