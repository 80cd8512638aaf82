-- Render endpoints out of rotation: a cooled-down endpoint gets no claims; its renderer's jobs wait
-- while others go ahead; completing a render on an endpoint ends its cool-down.
begin;
\ir _setup.psql
select plan(6);

select id as e from render_endpoints where renderer = 'orchestrator' \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '2 min') as d1 \gset
select pg_temp.mk('doubt', :'T'::timestamptz - interval '1 min') as d2 \gset
select pg_temp.mk('daily_ca', :'T'::timestamptz - interval '1 min') as ca \gset

-- d1 runs on the orchestrator endpoint, which then turns busy for 2 minutes (a 429's Retry-After).
select pg_temp.claim_job(:'d1', :'T') ->> 'callback_token' as tok \gset
select mark_endpoint_unhealthy(:'e', 120, :'T');
select is((select unhealthy_until from render_endpoints where id = :'e'), :'T'::timestamptz + interval '2 min',
          'cool-down ends after the given seconds');
select is(pg_temp.claim_ids(:'T'::timestamptz + interval '1 min'), array[:'ca'::uuid],
          'a cooling-down endpoint gets no job; another renderer''s job goes ahead');
select is((select status from jobs where id = :'d2'), 'queued', 'the doubt waits for its renderer');

-- d1 completes on that endpoint: it is alive and has a free slot, so the cool-down ends at once.
select complete_job(:'d1', 1, :'tok', '{"video_url": "https://cdn/d1.mp4"}', :'T'::timestamptz + interval '90 s');
select is((select unhealthy_until from render_endpoints where id = :'e'), null, 'a completion ends the cool-down');
select is(pg_temp.claim_ids(:'T'::timestamptz + interval '91 s'), array[:'d2'::uuid], 'the waiting doubt is claimed at once');

-- A failure reported by the same endpoint does not end a cool-down (it may be why the endpoint is out).
select mark_endpoint_unhealthy(:'e', 120, :'T'::timestamptz + interval '92 s');
select pg_temp.claim_job(:'d2', :'T') ->> 'callback_token' as tok2 \gset
select is((select unhealthy_until from render_endpoints where id = :'e'), :'T'::timestamptz + interval '212 s',
          'cool-down still set before any completion');

select * from finish();
rollback;
