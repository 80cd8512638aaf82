// The Data API tier: what a caller reaches through PostgREST (/rest/v1) on a hosted project, bypassing the
// Edge Functions. PostgREST logs in as `authenticator` and runs each request in a transaction as the role
// the caller's JWT names, with the claims in request.jwt.claims; a table is a GET/POST/PATCH/DELETE and a
// function is POST /rest/v1/rpc/<fn> with its named arguments taken from a JSON body. These tests do the
// same over a real `authenticator` connection, for every table and function in the exposed schemas.
// API.md offers nothing through the Data API: only the secret key's role (service_role) may use it.
import assert from "node:assert/strict";
import postgres from "postgres";
import { db, env, mintUser, resetData, test } from "./harness.ts";

/** The schemas a hosted project serves (config.toml [api] schemas), as PostgREST reads them. */
async function exposedSchemas(): Promise<string[]> {
  const [{ setting }] = await db`select coalesce((select split_part(c, '=', 2) from pg_roles r,
      unnest(r.rolconfig) c where r.rolname = 'authenticator' and c like 'pgrst.db_schemas=%'), '') as setting`;
  return setting.split(",").map((s: string) => s.trim()).filter(Boolean);
}

/** The Data API's own connection: the authenticator role, which can only switch to anon/authenticated/service_role. */
function authenticator() {
  const url = new URL(env.SUPABASE_DB_URL);
  url.username = "authenticator";
  url.password = "";
  return postgres(url.toString(), { max: 4, prepare: false, onnotice: () => {} });
}

type Caller = {
  name: string;
  role: "anon" | "authenticated" | "service_role";
  claims: Record<string, unknown>;
};

async function callers(): Promise<Caller[]> {
  const owner = await mintUser();
  const other = await mintUser();
  const admin = await mintUser({ admin: true });
  const user = (name: string, sub: string, app_metadata: Record<string, unknown> = {}): Caller => ({
    name,
    role: "authenticated",
    claims: { sub, role: "authenticated", aud: "authenticated", app_metadata },
  });
  return [
    { name: "anon", role: "anon", claims: { role: "anon" } },
    user("user", owner.userId),
    user("other user", other.userId),
    user("admin", admin.userId, { queue_role: "admin" }),
  ];
}

type Outcome = "allowed" | `denied (${string})`;

/** Thrown to end a transaction with a rollback once its outcome is known. */
const ROLLBACK = new Error("rollback");
const rolledBack = (err: unknown) => {
  if (err !== ROLLBACK) throw err;
};

/** Runs `query` the way PostgREST runs a request: one transaction, role and claims set locally. Rolled back. */
async function asDataApi(
  sql: postgres.Sql,
  caller: Caller,
  query: (tx: postgres.TransactionSql) => Promise<unknown>,
): Promise<Outcome> {
  let outcome: Outcome = "allowed";
  await sql.begin(async (tx) => {
    await tx`select set_config('role', ${caller.role}, true),
                    set_config('request.jwt.claims', ${JSON.stringify(caller.claims)}, true),
                    set_config('search_path', 'public, extensions', true)`;
    try {
      await query(tx);
    } catch (err) {
      outcome = `denied (${(err as { code?: string }).code ?? "error"})`;
    }
    throw ROLLBACK; // nothing a request does here is kept
  }).catch(rolledBack);
  return outcome;
}

type Relation = { schema: string; name: string; column: string };
type Fn = { schema: string; name: string; args: { name: string; type: string }[] };

async function exposedObjects(schemas: string[]): Promise<{ relations: Relation[]; functions: Fn[] }> {
  const relations = await db<Relation[]>`
    select n.nspname as schema, c.relname as name,
           (select a.attname from pg_attribute a where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
             order by a.attnum limit 1) as column
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where n.nspname = any(${schemas}) and c.relkind in ('r', 'p', 'v', 'm', 'f')
     order by 1, 2`;
  const functions = await db<Fn[]>`
    select n.nspname as schema, p.proname as name,
           coalesce((select jsonb_agg(jsonb_build_object('name', a.name, 'type', format_type(a.type, null))
                                      order by a.ord)
                       from unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) with ordinality a(name, type, ord)),
                    '[]'::jsonb) as args
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(${schemas}) and p.prokind = 'f' and p.prorettype <> 'trigger'::regtype
     order by 1, 2`;
  return { relations, functions };
}

/** A plausible JSON value for an argument of `type`, as a caller would send it (a clock far in the past, too). */
function sampleArg(type: string): unknown {
  if (type === "uuid") return crypto.randomUUID();
  if (type.startsWith("timestamp")) return "2000-01-01T00:00:00Z";
  if (type === "integer" || type === "bigint" || type === "smallint" || type === "numeric") return 1;
  if (type === "boolean") return true;
  if (type === "jsonb" || type === "json") return { question: "x", render_opts: { ffmpeg_args: "-y" } };
  if (type === "text") return "doubt";
  return {}; // a row type (e.g. public.jobs): PostgREST builds it from a JSON object
}

/** POST /rest/v1/rpc/<fn>: named arguments taken from the JSON body with json_to_record, as PostgREST does. */
function rpc(tx: postgres.TransactionSql, fn: Fn) {
  const ident = (s: string) => `"${s.replaceAll('"', '""')}"`;
  const target = `${ident(fn.schema)}.${ident(fn.name)}`;
  if (fn.args.length === 0) return tx.unsafe(`select ${target}()`);
  const body = Object.fromEntries(fn.args.map((a) => [a.name, sampleArg(a.type)]));
  const named = fn.args.map((a) => `${ident(a.name)} => x.${ident(a.name)}`).join(", ");
  const columns = fn.args.map((a) => `${ident(a.name)} ${a.type}`).join(", ");
  return tx.unsafe(`select ${target}(${named}) from jsonb_to_record($1::jsonb) as x(${columns})`, [
    JSON.stringify(body),
  ]);
}

/** GET, POST, PATCH and DELETE on a table or view. */
function tableRequests(rel: Relation) {
  const t = `"${rel.schema}"."${rel.name}"`;
  const c = `"${rel.column}"`;
  return {
    GET: (tx: postgres.TransactionSql) => tx.unsafe(`select * from ${t} limit 1`),
    POST: (tx: postgres.TransactionSql) => tx.unsafe(`insert into ${t} default values`),
    PATCH: (tx: postgres.TransactionSql) => tx.unsafe(`update ${t} set ${c} = ${c}`),
    DELETE: (tx: postgres.TransactionSql) => tx.unsafe(`delete from ${t}`),
  };
}

test("data api: the local stack exposes what a hosted project does (authenticator, exposed schemas, default grants)", async () => {
  assert.deepEqual(await exposedSchemas(), ["public", "graphql_public"]);
  const [{ members }] = await db`select array_agg(r.rolname::text order by r.rolname) as members
    from pg_auth_members m join pg_roles r on r.oid = m.roleid
   where m.member = (select oid from pg_roles where rolname = 'authenticator')`;
  assert.deepEqual(members, ["anon", "authenticated", "service_role"]);
  const [{ setting }] = await db`select current_setting('pgrst.db_schemas', true) as setting`;
  assert.equal(setting, "public, graphql_public", "the lints read the exposed schemas from the session");

  // A table a later migration adds to public: Supabase's default grants give it to service_role, and the
  // queue's migrations took anon and authenticated out of those defaults, so it is closed without a revoke.
  await db.begin(async (tx) => {
    await tx`create table public.data_api_probe (id int)`;
    const [p] = await tx`select has_table_privilege('service_role', 'public.data_api_probe', 'select') as svc,
                                has_table_privilege('anon', 'public.data_api_probe', 'select') as anon,
                                has_table_privilege('authenticated', 'public.data_api_probe', 'select') as auth`;
    assert.deepEqual({ ...p }, { svc: true, anon: false, auth: false });
    await tx`create function public.data_api_probe_fn() returns int language sql as 'select 1'`;
    const [f] =
      await tx`select has_function_privilege('anon', 'public.data_api_probe_fn()', 'execute') as anon,
                                has_function_privilege('authenticated', 'public.data_api_probe_fn()', 'execute') as auth`;
    assert.deepEqual({ ...f }, { anon: false, auth: false });
    throw ROLLBACK;
  }).catch(rolledBack);
});

test("data api: every table and function of the exposed schemas is denied to anon, users and admins", async () => {
  await resetData();
  const schemas = await exposedSchemas();
  const { relations, functions } = await exposedObjects(schemas);
  assert.ok(relations.some((r) => r.name === "jobs"), "the sweep covers the queue's tables");
  assert.ok(
    functions.some((f) => f.name === "get_queue_stats"),
    "the sweep covers the functions left in public",
  );

  // A job of the user's own, so that "their own rows" would show if anything leaked.
  const who = await callers();
  const owner = who.find((c) => c.name === "user")!;
  await db`insert into jobs (job_type, status, payload, user_id)
           values ('doubt', 'queued', ${db.json({ question: "mine" })}, ${owner.claims.sub as string})`;
  const before = await db`select count(*)::int as n from jobs`;

  const sql = authenticator();
  try {
    const matrix: Record<string, Record<string, Outcome>> = {};
    for (const caller of who) {
      for (const rel of relations) {
        for (const [verb, request] of Object.entries(tableRequests(rel))) {
          const key = `${verb} /rest/v1/${rel.name}`;
          (matrix[key] ??= {})[caller.name] = await asDataApi(sql, caller, request);
        }
      }
      for (const fn of functions) {
        const key = `POST /rest/v1/rpc/${fn.name}`;
        (matrix[key] ??= {})[caller.name] = await asDataApi(sql, caller, (tx) => rpc(tx, fn));
      }
    }
    const allowed = Object.entries(matrix).flatMap(([request, byCaller]) =>
      Object.entries(byCaller).filter(([, o]) => o === "allowed").map(([c]) => `${c}: ${request}`)
    );
    assert.deepEqual(allowed, [], "nothing in the exposed schemas is usable by an API role");
    const denials = new Set(Object.values(matrix).flatMap((byCaller) => Object.values(byCaller)));
    assert.deepEqual(
      [...denials],
      ["denied (42501)"],
      "every refusal is a permission error, before any work",
    );
    console.log(
      `data api matrix: ${Object.keys(matrix).length} requests × ${who.length} callers, all denied (42501)`,
    );
  } finally {
    await sql.end();
  }
  assert.deepEqual(await db`select count(*)::int as n from jobs`, before, "nothing was written");
});

test("data api: the queue's SQL API is not served, and the attacks of issue 8 go nowhere", async () => {
  await resetData();
  const schemas = await exposedSchemas();
  assert.ok(!schemas.includes("queue"));
  const [{ reachable }] = await db`
    select coalesce(array_agg(p.proname::text order by p.proname), '{}') as reachable
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace
     where n.nspname = any(${schemas}) and p.proname = any(${[
    "enqueue_job",
    "cancel_job",
    "claim_jobs",
    "complete_job",
    "job_to_json",
  ]})`;
  assert.deepEqual(reachable, [], "no enqueue/cancel/claim/complete in an exposed schema");

  const [user] = (await callers()).filter((c) => c.name === "user");
  const sql = authenticator();
  try {
    // rpc/enqueue_job with a caller-chosen clock and an oversized, unknown payload.
    const enqueue = await asDataApi(
      sql,
      user,
      (tx) =>
        tx`select enqueue_job(p_job_type => 'doubt', p_payload => ${
          tx.json({ question: "x".repeat(5_000_000) })
        }, p_now => '2000-01-01T00:00:00Z')`,
    );
    assert.equal(enqueue, "denied (42883)", "there is no enqueue_job to call");
    // PostgREST serves no function outside the exposed schemas; anon may not even use the `queue` schema.
    const direct = await asDataApi(
      sql,
      { ...user, role: "anon" },
      (tx) => tx`select queue.enqueue_job('doubt', '{"question": "x"}', p_now => '2000-01-01T00:00:00Z')`,
    );
    assert.equal(direct, "denied (42501)");
    // GET /rest/v1/jobs: internal columns (worker_id, endpoint_id, leases) are not readable at all.
    assert.equal(
      await asDataApi(sql, user, (tx) => tx`select worker_id, endpoint_id from public.jobs`),
      "denied (42501)",
    );
    // rpc/job_to_json on a made-up row would have shown the queue total; it is an internal now.
    assert.equal(
      await asDataApi(sql, user, (tx) => tx`select private.job_to_json(null::public.jobs)`),
      "denied (42501)",
    );
  } finally {
    await sql.end();
  }
  const [{ n }] = await db`select count(*)::int as n from jobs`;
  assert.equal(n, 0, "no job was created");
});

test("data api: the seeds' operator SQL still works as the service role and in a plain SQL session", async () => {
  await resetData();
  const sql = authenticator();
  const service: Caller = { name: "service_role", role: "service_role", claims: { role: "service_role" } };
  try {
    assert.equal(
      await asDataApi(sql, service, (tx) =>
        tx`INSERT INTO jobs (job_type, priority, status, payload)
           VALUES ('doubt', 'high', 'queued', '{"question": "seed 001"}')`),
      "allowed",
    );
    assert.equal(
      await asDataApi(
        sql,
        service,
        (tx) =>
          tx`UPDATE job_queue_config SET max_concurrent_renders = 15 WHERE id = (SELECT id FROM job_queue_config LIMIT 1)`,
      ),
      "allowed",
    );
    assert.equal(await asDataApi(sql, service, (tx) => tx`select get_queue_stats()`), "allowed");
  } finally {
    await sql.end();
  }
  const [{ stats }] = await db`select get_queue_stats() as stats`;
  assert.equal(typeof stats.queued, "number");
});

test("data api: a payload over the documented limit is refused by SQL too, even from the service role", async () => {
  await resetData();
  await assert.rejects(
    db`insert into jobs (job_type, status, payload) values ('doubt', 'queued', ${
      db.json({ question: "x".repeat(70_000) })
    })`,
    (err: { code?: string; constraint_name?: string }) =>
      err.code === "23514" && err.constraint_name === "jobs_payload_is_small_object",
  );
  await assert.rejects(
    db`insert into jobs (job_type, status, payload) values ('doubt', 'queued', '[1, 2]')`,
    (err: { code?: string }) => err.code === "23514",
  );
});
