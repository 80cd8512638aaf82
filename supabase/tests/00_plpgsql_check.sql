-- plpgsql_check finds no errors in any PL/pgSQL function of the project (schema public).
begin;
select plan(2);

select cmp_ok(
  (select count(*)::int from pg_proc p
     join pg_namespace n on n.oid = p.pronamespace
     join pg_language l on l.oid = p.prolang
    where n.nspname = 'public' and l.lanname = 'plpgsql'),
  '>', 0, 'the project has PL/pgSQL functions to check');

select is_empty($$
  select p.proname || ' line ' || coalesce(c.lineno::text, '?') || ': ' || c.message
    from pg_proc p
    join pg_namespace n on n.oid = p.pronamespace
    join pg_language l on l.oid = p.prolang
    -- a trigger function is checked against a table it is attached to
    left join lateral (select t.tgrelid from pg_trigger t where t.tgfoid = p.oid limit 1) trg on true
    cross join lateral plpgsql_check_function_tb(p.oid, coalesce(trg.tgrelid, 0)) c
   where n.nspname = 'public' and l.lanname = 'plpgsql' and c.level = 'error'
$$, 'plpgsql_check reports no errors');

select * from finish();
rollback;
