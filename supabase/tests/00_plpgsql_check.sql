-- plpgsql_check finds no errors in any PL/pgSQL function of the project (schemas public, queue and private).
-- Functions of extensions are not the project's and are skipped; statement triggers with transition
-- tables are checked with those tables' names.
begin;
set local search_path = public, private, extensions;
select plan(2);

select cmp_ok(
  (select count(*)::int from pg_proc p
     join pg_namespace n on n.oid = p.pronamespace
     join pg_language l on l.oid = p.prolang
    where n.nspname in ('public', 'queue', 'private') and l.lanname = 'plpgsql'
      and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')),
  '>', 0, 'the project has PL/pgSQL functions to check');

select is_empty($$
  select p.proname || ' line ' || coalesce(c.lineno::text, '?') || ': ' || c.message
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace
    join pg_language l on l.oid = p.prolang
    -- a trigger function is checked against a table it is attached to (and its transition tables)
    left join lateral (select t.tgrelid, t.tgoldtable, t.tgnewtable from pg_trigger t where t.tgfoid = p.oid limit 1) trg on true
    cross join lateral plpgsql_check_function_tb(p.oid, coalesce(trg.tgrelid, 0),
                                                 oldtable => trg.tgoldtable, newtable => trg.tgnewtable) c
   where n.nspname in ('public', 'queue', 'private') and l.lanname = 'plpgsql' and c.level = 'error'
     and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
$$, 'plpgsql_check reports no errors');

select * from finish();
rollback;
