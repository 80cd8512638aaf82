// Plans that cannot flip: every statement the queue's SQL functions run against `jobs` and `job_attempts`
// (stats, metrics, positions, wait reasons and estimates, the per-user limits of enqueue, list_jobs, claim and
// complete) reads through an index only the rows it needs, whatever the statistics say.
//
// auto_explain, loaded into the test's one session, hands back the plan of every nested statement (plpgsql
// and SQL function bodies, triggers, foreign-key checks) as a JSON notice with actual rows and buffers. Each
// check runs everything once with custom plans and once with generic ones (plan_cache_mode): the generic plan
// is the one plpgsql keeps for a connection after five calls, so it is checked whether or not the planner
// would switch to it today. A plan fails on a sequential scan of jobs or job_attempts, or on a scan that
// walks: many rows dropped by its filter, or far more buffers read than rows returned.
//
// The states, in one session throughout (a generic plan cached in one state is reused in the next, as on a
// pooled connection):
//   a.  jobs and job_attempts analyzed while empty, with no column statistics (a new database), the first
//       calls of an empty queue made (enqueues as users, stats, metrics, the list: their generic plans are
//       cached on the empty table), then 3,000 queued jobs and 3,000 finished ones with their attempts, no
//       analyze;
//   b0. plus 1,000,000 finished jobs and 7,000 queued ones, statistics still those of the empty table;
//   b1. analyzed, visibility map unset;
//   b2. vacuumed: visibility map set (an index-only walk past finished rows looks cheap).
// Autovacuum is off for both tables meanwhile, so the states are exactly these. It truncates the queue: run it
// against a local / test database only.
import postgres from "postgres";
import assert from "node:assert/strict";
import { resetQueue } from "./support/reset_queue.ts";
import { COUNT_INSERTED_OUTCOMES } from "./support/count_outcomes.ts";

const url = Deno.env.get("SUPABASE_DB_URL") ?? (() => {
  throw new Error("set SUPABASE_DB_URL to a local test database");
})();

const CHECKED_TABLES = new Set(["jobs", "job_attempts", "job_outcome_buckets"]);
/** A scan dropping more rows than this by its filter is walking rows it does not need. */
const MAX_ROWS_FILTERED = 200;
/** A scan may read this many buffers, plus 3 per row returned and 4 per loop; more is a walk. */
const MAX_EXTRA_BUFFERS = 100;

type PlanNode = { [key: string]: unknown; Plans?: PlanNode[] };
type Captured = { query: string; plan: PlanNode };

const captured: Captured[] = [];
const sql = postgres(url, {
  max: 1, // one session: auto_explain is loaded into it, and plpgsql caches plans per session
  prepare: false,
  onnotice: (n) => {
    const message = String(n.message ?? "");
    const json = message.indexOf("{");
    if (!message.startsWith("duration:") || json < 0) return;
    const logged = JSON.parse(message.slice(json));
    captured.push({ query: String(logged["Query Text"]).replace(/\s+/g, " ").trim(), plan: logged.Plan });
  },
});
type Tx = postgres.TransactionSql;
// Fills, analyze and vacuum go through another session: setting session_replication_role (the fast fill)
// resets the plan cache of its session, and the checked session must keep its cached plans.
const admin = postgres(url, { max: 1, prepare: false, onnotice: () => {} });

/** What is wrong with one scan node of a checked table ([where, what]), or null. */
function fault(node: PlanNode): [string, string] | null {
  const type = String(node["Node Type"]);
  if (!CHECKED_TABLES.has(String(node["Relation Name"])) || type === "ModifyTable") return null;
  const index = node["Index Name"] ? ` using ${node["Index Name"]}` : "";
  const where = `${type} on ${node["Relation Name"]}${index}`;
  if (type.includes("Seq Scan")) return [where, "sequential scan"];
  const loops = Number(node["Actual Loops"] ?? 0);
  const rows = Number(node["Actual Rows"] ?? 0) * loops;
  const filtered = (Number(node["Rows Removed by Filter"] ?? 0) +
    Number(node["Rows Removed by Index Recheck"] ?? 0)) * loops;
  const buffers = Number(node["Shared Hit Blocks"] ?? 0) + Number(node["Shared Read Blocks"] ?? 0);
  if (filtered > MAX_ROWS_FILTERED) return [where, `dropped ${filtered} rows by filter for ${rows}`];
  if (buffers > MAX_EXTRA_BUFFERS + 3 * rows + 4 * loops) {
    return [where, `read ${buffers} buffers for ${rows} rows in ${loops} loops`];
  }
  return null;
}

/** Every faulty scan, once per statement and scan (with the figures first seen). */
function faults(plans: Captured[]): string[] {
  const found = new Map<string, string>();
  const visit = (c: Captured, node: PlanNode) => {
    const f = fault(node);
    const key = `${f?.[0]} | ${c.query}`;
    if (f && !found.has(key)) found.set(key, `${f[0]}: ${f[1]}\n    in: ${c.query.slice(0, 400)}`);
    node.Plans?.forEach((child) => visit(c, child));
  };
  for (const c of plans) visit(c, c.plan);
  return [...found.values()];
}

/** Runs fn as the given caller (claims and role, as the Edge Functions set them); commits unless told not to. */
async function as(
  claims: Record<string, unknown> | null,
  fn: (tx: Tx) => Promise<unknown>,
  { commit = true } = {},
): Promise<void> {
  const rollback = new Error("rollback");
  await sql.begin(async (tx) => {
    if (claims) {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                      set_config('role', ${String(claims.role)}, true)`;
    }
    await fn(tx);
    if (!commit) throw rollback;
  }).catch((e) => {
    if (e !== rollback) throw e;
  });
}

const service = { role: "service_role" };
const user = (id: string) => ({ sub: id, role: "authenticated", app_metadata: {} });
const heavyUser = crypto.randomUUID(); // a tenth of every job, queued and finished: over its limits
const lightUser = crypto.randomUUID(); // no jobs: its enqueues go through

/** Runs calls once with custom plans and once with generic ones. */
async function inBothPlanModes(calls: () => Promise<void>): Promise<void> {
  for (const mode of ["force_custom_plan", "force_generic_plan"]) {
    await sql.unsafe(`set plan_cache_mode = ${mode}`);
    await calls();
  }
  await sql`reset plan_cache_mode`;
}

/** What an empty queue's first callers run: enqueues, stats and metrics (worker, dashboard), the admin list. */
async function queueWideCalls(): Promise<void> {
  // Enqueue as a user with room (limits checked, job inserted), as one over its limits (429 once it has
  // jobs), as the service role. Rolled back: the queue stays as it is.
  await as(user(lightUser), (tx) => tx`select queue.enqueue_job('doubt', '{}'::jsonb)`, { commit: false });
  await as(user(heavyUser), async (tx) => {
    const overLimit = (e: { code?: string }) => assert.equal(e.code, "VQ429");
    await tx`select queue.enqueue_job('topic_short', '{}'::jsonb)`.catch(overLimit);
  }, { commit: false });
  await as(service, (tx) => tx`select queue.enqueue_job('daily_ca', '{}'::jsonb)`, { commit: false });
  // Stats and metrics, as the functions and the worker read them, and as an operator in SQL.
  await as(service, (tx) => tx`select queue.get_queue_stats(), queue.get_queue_metrics()`);
  await as(null, (tx) => tx`select public.get_queue_stats()`);
  // The admin list, every filter.
  await as(service, async (tx) => {
    for (const status of [null, "queued", "processing", "completed", "failed", "cancelled"]) {
      await tx`select queue.list_jobs(${status}, 50)`;
    }
  });
}

/** Queued jobs whose Job JSON is read: first, middle and last in claim order of each priority; the heavy user's. */
async function probeJobs(): Promise<{ probes: string[]; own: string }> {
  const rows = await admin<{ id: string }[]>`
    select id from (
      select j.id, row_number() over w as n, count(*) over (partition by j.priority_rank) as total
        from public.jobs j where j.status = 'queued'
      window w as (partition by j.priority_rank order by j.created_at, j.id)) x
     where n in (1, total / 2, total)`;
  const [own] = await admin<{ id: string }[]>`
    select id from public.jobs where user_id = ${heavyUser} and status = 'queued' order by created_at limit 1`;
  return { probes: rows.map((r) => r.id), own: own.id };
}

type Claim = { job_id: string; attempt: number; callback_token: string };

/** Everything whose plans are checked, in one plan mode. */
async function allCalls({ probes, own }: { probes: string[]; own: string }): Promise<void> {
  await queueWideCalls();
  // Positions, wait reasons and estimates: strict priority, then bounded overtake; the owner's view.
  await as(service, async (tx) => {
    for (const id of probes) await tx`select queue.get_job(${id}::uuid)`;
    await tx`update public.job_queue_config set high_priority_offset_minutes = 0,
               medium_priority_offset_minutes = 10, low_priority_offset_minutes = 30`;
    for (const id of probes) await tx`select queue.get_job(${id}::uuid)`;
  }, { commit: false });
  await as(user(heavyUser), (tx) => tx`select queue.get_job(${own}::uuid)`);
  // Claim and complete (committed: the next call claims the next jobs).
  await as(service, async (tx) => {
    const [{ claims }] = await tx<{ claims: Claim[] }[]>`
      select queue.claim_jobs('query-plans-test', 2) as claims`;
    assert.ok(claims.length > 0, "the claim found jobs");
    for (const c of claims) {
      await tx`select queue.complete_job(${c.job_id}::uuid, ${c.attempt}::int, ${c.callback_token},
                                         '{"video_url": "https://cdn.test/v.mp4"}'::jsonb)`;
    }
  });
}

/** Every faulty plan of a full set of calls, custom and generic. */
async function checkPlans(): Promise<string[]> {
  const jobs = await probeJobs();
  captured.length = 0;
  await inBothPlanModes(() => allCalls(jobs));
  assert.ok(captured.length > 1000, `auto_explain reported the nested plans (${captured.length})`);
  return faults(captured);
}

async function insertQueued(n: number): Promise<void> {
  await admin`insert into public.jobs (job_type, status, payload, created_at, user_id)
              select (array['doubt', 'topic_short', 'daily_ca'])[1 + g % 3], 'queued', '{}',
                     now() - interval '1 hour' + g * interval '100 ms',
                     case when g % 10 = 0 then ${heavyUser}::uuid end
                from generate_series(1, ${n}) g`;
}

/**
 * Finished jobs numbered from..to, one every 3 s up to an hour ago (number 1,003,000 is the newest), a tenth
 * the heavy user's, inserted as finished rows: triggers off (the others count queued rows only), their outcome
 * counts added as the outcome trigger would (COUNT_INSERTED_OUTCOMES), CHECKs on.
 */
async function insertFinished(from: number, to: number): Promise<void> {
  await admin.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`with ins as (
             insert into public.jobs (id, job_type, priority, renderer, status, payload, result, error_message,
                                      cancel_reason, user_id, attempt, progress, stage, worker_id,
                                      created_at, started_at, completed_at, updated_at, next_attempt_at)
             select lpad(to_hex(g), 32, '0')::uuid, t.job_type, t.priority, t.renderer, s.status, '{}',
                    case when s.status = 'completed' then '{"video_url": "https://cdn.test/v.mp4"}'::jsonb end,
                    case when s.status <> 'completed' then 'ended' end,
                    case when s.status = 'cancelled' then 'expired' end,
                    case when g % 10 = 0 then ${heavyUser}::uuid end, 1, 100, 'completed', 'w',
                    at - interval '3 minutes', at - interval '2 minutes', at, at, null
               from generate_series(${from}::int, ${to}::int) g
              cross join lateral (select now() - interval '1 hour' - (1003000 - g) * interval '3 s' as at) c
              cross join lateral (select (array['doubt', 'topic_short', 'daily_ca'])[1 + g % 3] as job_type,
                                         (array['high', 'medium', 'low'])[1 + g % 3] as priority,
                                         (array['orchestrator', 'manim', 'revideo'])[1 + g % 3] as renderer) t
              cross join lateral (select case when g % 50 = 1 then 'failed' when g % 50 = 2 then 'cancelled'
                                              else 'completed' end as status) s
             returning status, cancel_reason, created_at, started_at, completed_at)
             ${tx.unsafe(COUNT_INSERTED_OUTCOMES)}`;
  });
}

Deno.test({
  name: "queue statements read only what they need: no sequential scan, no walk over finished rows",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    await resetQueue(admin);
    await admin`insert into auth.users (id) values (${heavyUser}), (${lightUser})`;
    await admin`update public.job_queue_config set max_processing_per_user = 2`;
    await admin`alter table public.jobs set (autovacuum_enabled = false)`;
    await admin`alter table public.job_attempts set (autovacuum_enabled = false)`;
    await sql`load 'auto_explain'`;
    await sql.unsafe(`set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;
                      set auto_explain.log_analyze = on; set auto_explain.log_buffers = on;
                      set auto_explain.log_timing = off; set auto_explain.log_format = json;
                      set auto_explain.log_level = notice; set client_min_messages = notice`).simple();
    try {
      // As on a new database: no column statistics (analyzing an empty table keeps the ones it had).
      await admin`delete from pg_statistic
                   where starelid in ('public.jobs'::regclass, 'public.job_attempts'::regclass)`;
      await admin`analyze public.jobs, public.job_attempts`;
      await inBothPlanModes(queueWideCalls);
      await insertQueued(3000);
      await insertFinished(1000001, 1003000);
      await admin`insert into public.job_attempts (job_id, attempt, token_hash, worker_id, started_at,
                                                   lease_expires_at, finished_at, outcome)
                  select id, 1, encode(sha256(convert_to(id::text, 'UTF8')), 'hex'), 'w', started_at,
                         completed_at, completed_at, status
                    from public.jobs where completed_at is not null`;
      const a = await checkPlans();
      await t.step(
        "a. analyzed while empty, first calls made; 3,000 queued, 3,000 finished",
        () => assert.deepEqual(a, []),
      );

      await insertFinished(1, 1000000);
      await insertQueued(7000);
      const b0 = await checkPlans();
      await t.step(
        "b0. + 1,000,000 finished and 7,000 queued, statistics of the empty table",
        () => assert.deepEqual(b0, []),
      );

      await admin`analyze public.jobs, public.job_attempts`;
      const b1 = await checkPlans();
      await t.step("b1. analyzed, visibility map unset", () => assert.deepEqual(b1, []));

      await admin`vacuum (analyze) public.jobs, public.job_attempts`;
      const b2 = await checkPlans();
      await t.step("b2. vacuumed: visibility map set", () => assert.deepEqual(b2, []));
    } finally {
      await admin`alter table public.jobs reset (autovacuum_enabled)`;
      await admin`alter table public.job_attempts reset (autovacuum_enabled)`;
      await resetQueue(admin);
      await admin`delete from auth.users where id in (${heavyUser}, ${lightUser})`;
      await admin`analyze public.jobs, public.job_attempts`;
      await sql.end();
      await admin.end();
    }
  },
});
