// The long-running worker as real processes (worker/main.ts, what `deno task worker` runs) against the stack:
//   - three workers drain 60 jobs together, woken by NOTIFY alone (their interval is 10 minutes): each job
//     claimed once, the global and per-renderer caps never exceeded, every job completed;
//   - SIGTERM mid-run: the worker claims nothing more, releases at once the claims it had not started
//     dispatching (the other workers take them), lets its dispatches in flight finish, and exits 0; with a
//     grace period shorter than its dispatches, it releases those too, and a render service that took one
//     anyway is fenced off by the attempt;
//   - the wake-up migration notifies when a pass is useful (a claimable job, a freed slot, a release, a config
//     change) and not on a claim, a progress report or a job scheduled for later;
//   - GET /health says the database is down while Postgres is stopped and up once it is back, and the
//     worker listens and passes again by itself.
// Jobs are inserted with SQL (the seed's INSERT INTO jobs) and the fake render service reports completions
// with queue.complete_job, as the callback endpoint would: no Edge Function pass or kick is involved.
import assert from "node:assert/strict";
import postgres from "postgres";
import { startPostgres, stopPostgres, waitForPostgres } from "../scripts/stack/stack.ts";
import { type Claim, type DispatchBody, dispatchBody } from "../shared/mod.ts";
import { type SpawnedWorker, spawnWorker } from "../worker/spawn.ts";
import type { WorkerStatus } from "../worker/worker.ts";
import { db, env, eventually, resetData, setQueueCronActive, test } from "./harness.ts";
import { fakeRenderService } from "./support/render_service.ts";

const workerEnv = { SUPABASE_DB_URL: env.SUPABASE_DB_URL, SUPABASE_URL: env.SUPABASE_URL };
/** Only NOTIFY (and the pass at start) wakes these workers within a test. */
const NOTIFY_ONLY = ["--interval-ms", "600000"];
/** How long the fake render service "renders" before it reports the job completed. */
const RENDER_MS = 300;
const RENDERERS = ["orchestrator", "manim", "revideo"] as const;

/** Caps without peak-hour scaling, and one endpoint per renderer at the fake service (`<url>/<renderer>`). */
async function configure(
  serviceUrl: string,
  caps: { global: number; manim: number; revideo: number | null },
) {
  await db`update job_queue_config set max_concurrent_renders = ${caps.global}, max_manim_renders = ${caps.manim},
             peak_worker_multiplier = 1`;
  await db`update renderers set max_concurrent = ${caps.revideo} where name = 'revideo'`;
  await db`delete from render_endpoints`;
  for (const renderer of RENDERERS) {
    await db`insert into render_endpoints (renderer, url) values (${renderer}, ${`${serviceUrl}/${renderer}`})`;
  }
}

/** `n` queued jobs in one statement (one NOTIFY), job types (so renderers) in turn unless one is given. */
async function insertJobs(n: number, jobType?: string): Promise<string[]> {
  const rows = await db<{ id: string }[]>`
    insert into jobs (job_type, status, payload)
    select coalesce(${jobType ?? null}, (array['doubt', 'topic_short', 'daily_ca'])[g % 3 + 1]), 'queued',
           jsonb_build_object('n', g)
      from generate_series(1, ${n}) g
    returning id`;
  return rows.map((r) => r.id);
}

/** What the render service's callback would do: complete the attempt (refused if it is no longer current). */
async function complete(body: DispatchBody): Promise<"completed" | "refused"> {
  try {
    await db`select queue.complete_job(${body.job_id}::uuid, ${body.attempt}::int, ${body.callback.token},
                                       ${db.json({ video_url: `https://cdn.test/${body.job_id}.mp4` })})`;
    return "completed";
  } catch (err) {
    if ((err as { code?: string }).code === "VQ409") return "refused";
    throw err;
  }
}

async function workerOf(body: DispatchBody): Promise<string> {
  const [{ worker_id }] = await db`select worker_id from job_attempts
                                     where job_id = ${body.job_id} and attempt = ${body.attempt}`;
  return worker_id;
}

async function get(worker: SpawnedWorker, path: "/health" | "/status") {
  const res = await fetch(`${worker.healthUrl}${path}`);
  return { status: res.status, body: await res.json() as WorkerStatus & Record<string, unknown> };
}

/** Resolves once the worker listens and has ended its first passes (at start, and when it began listening). */
const idle = (worker: SpawnedWorker) =>
  eventually(`${worker.workerId} to listen, idle`, async () => {
    const { body } = await get(worker, "/status");
    return body.listening && !body.passing && body.passes > 0;
  }, 30_000);

async function spawnAll(ids: string[], args: string[] = NOTIFY_ONLY): Promise<SpawnedWorker[]> {
  const workers = await Promise.all(ids.map((workerId) => spawnWorker({ workerId, env: workerEnv, args })));
  await Promise.all(workers.map(idle));
  return workers;
}

const attempts = () =>
  db<{ job_id: string; attempt: number; worker_id: string; outcome: string | null }[]>`
    select job_id, attempt, worker_id, outcome from job_attempts order by job_id, attempt`;
const completedCount = async () =>
  (await db`select count(*)::int as n from jobs where status = 'completed'`)[0].n as number;

test("NOTIFY video_queue_wakeup: a claimable job, a freed slot, a release, a config change; not a claim or progress", async () => {
  await resetData();
  await setQueueCronActive(false);
  const listener = postgres(env.SUPABASE_DB_URL, { max: 1, prepare: false, onnotice: () => {} });
  const heard: string[] = [];
  await listener.listen("video_queue_wakeup", (payload) => heard.push(payload));
  let sentinels = 0;
  /** What `statement` made Postgres notify: all heard before a sentinel notified after it (commit order). */
  const notifiedBy = async (statement: () => Promise<unknown>) => {
    heard.length = 0;
    await statement();
    const sentinel = `sentinel-${sentinels++}`;
    await db`select pg_notify('video_queue_wakeup', ${sentinel})`;
    await eventually(sentinel, () => Promise.resolve(heard.includes(sentinel)));
    return heard.filter((payload) => payload !== sentinel);
  };
  try {
    await configure("http://127.0.0.1:9/render", { global: 10, manim: 4, revideo: null });
    // Nobody holds a listener row yet (a deployment without the worker): nothing notifies.
    assert.deepEqual(
      await notifiedBy(() =>
        db`insert into jobs (job_type, status, payload) values ('doubt', 'queued', '{}')`
      ),
      [],
      "no listener, no NOTIFY",
    );
    await db`delete from jobs`;
    await listener`select queue.hold_wakeup_listener(60)`;
    assert.deepEqual(
      await notifiedBy(() =>
        db`insert into jobs (job_type, status, payload, next_attempt_at)
           values ('doubt', 'queued', '{}', now() + interval '1 hour')`
      ),
      [],
      "a job scheduled for later",
    );
    assert.deepEqual(await notifiedBy(() => insertJobs(3, "doubt")), ["job_claimable"]);
    let claims: Claim[] = [];
    const claim = async () => [{ claims }] = await db`select queue.claim_jobs('notify-test', 2) as claims`;
    assert.deepEqual(await notifiedBy(claim), [], "a claim");
    const [first, second] = claims.map(dispatchBody);
    assert.deepEqual(
      await notifiedBy(() =>
        db`select queue.report_progress(${first.job_id}::uuid, ${first.attempt}::int, ${first.callback.token},
                                        'composing_video', 60)`
      ),
      [],
      "a progress report",
    );
    assert.deepEqual(await notifiedBy(() => complete(first)), ["slot_freed"], "a completion");
    assert.deepEqual(
      await notifiedBy(() => db`select queue.release_job(${second.job_id}::uuid, ${second.attempt}::int)`),
      ["slot_freed"],
      "a release",
    );
    assert.deepEqual(
      await notifiedBy(() => db`update job_queue_config set max_concurrent_renders = 12`),
      ["config_changed"],
    );
    assert.deepEqual(
      await notifiedBy(() => db`update renderers set paused = false where name = 'manim'`),
      ["config_changed"],
    );
  } finally {
    await listener`select queue.hold_wakeup_listener(0)`;
    await listener.end();
  }
});

test("three worker processes drain 60 jobs on NOTIFY: each claimed once, caps never exceeded", async () => {
  await resetData();
  await setQueueCronActive(false);
  const caps = { global: 6, manim: 2, revideo: 2 };
  const rendering = new Map<string, number>(RENDERERS.map((r) => [r, 0]));
  const most = new Map<string, number>([["total", 0], ...RENDERERS.map((r): [string, number] => [r, 0])]);
  const total = () => [...rendering.values()].reduce((a, b) => a + b, 0);
  const observe = () => {
    for (const [r, n] of rendering) most.set(r, Math.max(most.get(r)!, n));
    most.set("total", Math.max(most.get("total")!, total()));
  };
  await using service = await fakeRenderService((body, req) => {
    const renderer = new URL(req.url).pathname.split("/").pop()!;
    rendering.set(renderer, rendering.get(renderer)! + 1);
    observe();
    setTimeout(async () => {
      await complete(body);
      rendering.set(renderer, rendering.get(renderer)! - 1);
    }, RENDER_MS);
    return new Response(null, { status: 202 });
  });
  await configure(service.url, caps);
  const workers = await spawnAll(["drain-a", "drain-b", "drain-c"]);

  // The database's own view, sampled while the queue drains.
  const sampled = { total: 0, manim: 0, revideo: 0 };
  let draining = true;
  const sampler = (async () => {
    while (draining) {
      const rows = await db<{ renderer: string; n: number }[]>`
        select renderer, count(*)::int as n from jobs where status = 'processing' group by renderer`;
      const n = (r: string) => rows.find((row) => row.renderer === r)?.n ?? 0;
      sampled.total = Math.max(sampled.total, rows.reduce((a, row) => a + row.n, 0));
      sampled.manim = Math.max(sampled.manim, n("manim"));
      sampled.revideo = Math.max(sampled.revideo, n("revideo"));
      await new Promise((r) => setTimeout(r, 20)); // the sampling period, not a wait for anything
    }
  })();

  let exits: Deno.CommandStatus[];
  try {
    await insertJobs(60);
    await eventually("60 completed jobs", async () => await completedCount() === 60, 120_000);
  } finally {
    draining = false;
    await sampler;
    exits = await Promise.all(workers.map((w) => w.close()));
  }

  assert.deepEqual(exits.map((s) => s.code), [0, 0, 0]);
  const all = await attempts();
  assert.equal(all.length, 60, "one attempt per job: no job claimed twice");
  assert.ok(all.every((a) => a.attempt === 1 && a.outcome === "completed"));
  const claimedBy = new Set(all.map((a) => a.worker_id));
  assert.ok([...claimedBy].every((w) => w.startsWith("drain-")), [...claimedBy].join());
  assert.ok(claimedBy.size >= 2, `jobs shared between the workers: ${[...claimedBy].join()}`);
  assert.equal(most.get("total"), caps.global, "the global cap was reached, never exceeded");
  assert.ok(
    most.get("manim")! <= caps.manim && most.get("revideo")! <= caps.revideo,
    JSON.stringify([...most]),
  );
  assert.ok(sampled.total <= caps.global && sampled.manim <= caps.manim && sampled.revideo <= caps.revideo);
});

/**
 * Worker "stop-a" alone claims 12 jobs in one pass (the others are SIGSTOPped meanwhile) and dispatches 8 at a
 * time; the render service holds its dispatches until `gate` opens, so 8 are in flight and 4 wait in hand.
 */
async function twelveInHand(stopArgs: string[]) {
  await resetData();
  await setQueueCronActive(false);
  const gate = Promise.withResolvers<void>();
  const stale: DispatchBody[] = [];
  const service = await fakeRenderService(async (body) => {
    if (await workerOf(body) === "stop-a") await gate.promise;
    setTimeout(async () => {
      if (await complete(body) === "refused") stale.push(body);
    }, RENDER_MS);
    return new Response(null, { status: 202 });
  });
  await configure(service.url, { global: 20, manim: 20, revideo: null });
  const [a] = await spawnAll(["stop-a"], [...NOTIFY_ONLY, ...stopArgs]);
  const others = await spawnAll(["stop-b", "stop-c"]);
  for (const w of others) Deno.kill(w.pid, "SIGSTOP");
  const jobs = await insertJobs(12, "doubt");
  await service.until("8 dispatches in flight", () => service.dispatches.length === 8);
  await eventually("12 claims in hand", async () => (await get(a, "/status")).body.in_flight === 12);
  for (const w of others) Deno.kill(w.pid, "SIGCONT");
  return { a, others, jobs, service, gate, stale };
}

/** A's attempts that ended `released`, once there are `n`. */
const releasedBy = (workerId: string, n: number) =>
  eventually(`${n} claims of ${workerId} released`, async () => {
    const rows = (await attempts()).filter((r) => r.worker_id === workerId && r.outcome === "released");
    return rows.length === n && rows.map((r) => r.job_id);
  });

/** The jobs' second attempts, once each exists, taken by another worker. */
const retakenByOthers = (jobIds: string[]) =>
  eventually("the released jobs claimed again", async () => {
    const rows = (await attempts()).filter((r) => jobIds.includes(r.job_id) && r.attempt === 2);
    return rows.length === jobIds.length && rows;
  });

test("SIGTERM: stops claiming, releases unstarted claims at once, lets dispatches in flight finish, exits 0", async () => {
  const { a, others, jobs, service, gate } = await twelveInHand(["--grace-ms", "60000"]);
  let aExited = false;
  a.exited.then(() => aExited = true);
  try {
    a.kill("SIGTERM");
    const released = await releasedBy("stop-a", 4);
    const retaken = await retakenByOthers(released);
    assert.ok(retaken.every((r) => r.worker_id === "stop-b" || r.worker_id === "stop-c"));
    assert.equal(aExited, false, "stop-a waits for its 8 dispatches in flight");
    assert.equal((await get(a, "/status")).body.running, false);

    gate.resolve(); // the render service answers stop-a's dispatches: 202
    const exit = await a.exited;
    assert.equal(exit.code, 0);
    const stopped = a.logs.find((e) => e.event === "worker_stopped")!;
    assert.equal(stopped.finished_in_grace, true);
    assert.equal(stopped.released_after_grace, 0);

    await eventually("12 completed jobs", async () => await completedCount() === 12, 30_000);
    const all = await attempts();
    const byA = all.filter((r) => r.worker_id === "stop-a");
    assert.equal(
      byA.filter((r) => r.outcome === "completed").length,
      8,
      "its dispatches in flight completed",
    );
    assert.equal(all.filter((r) => r.outcome === "completed").length, 12, "each job completed once");
    assert.deepEqual(new Set(all.map((r) => r.job_id)), new Set(jobs));
    assert.equal(byA.length, 12, "stop-a claimed nothing after SIGTERM");
  } finally {
    gate.resolve();
    await Promise.all([a, ...others].map((w) => w.close()));
    await service.close();
  }
  assert.deepEqual((await Promise.all(others.map((w) => w.exited))).map((s) => s.code), [0, 0]);
});

test("SIGTERM with dispatches outliving the grace period: those are released too; a late taker is fenced", async () => {
  const { a, others, service, gate, stale } = await twelveInHand(["--grace-ms", "500"]);
  try {
    a.kill("SIGTERM");
    const exit = await a.exited; // the render service still holds its 8 dispatches
    assert.equal(exit.code, 0);
    const stopped = a.logs.find((e) => e.event === "worker_stopped")!;
    assert.equal(stopped.finished_in_grace, false);
    assert.equal(stopped.released_after_grace, 8);
    const released = await releasedBy("stop-a", 12);
    await retakenByOthers(released);
    await eventually("12 completed jobs", async () => await completedCount() === 12, 30_000);

    // The render service "took" stop-a's 8 dispatches after all: their completions are refused (409).
    gate.resolve();
    await eventually("8 stale completions refused", () => Promise.resolve(stale.length === 8), 30_000);
    const all = await attempts();
    assert.ok(all.filter((r) => r.worker_id === "stop-a").every((r) => r.outcome === "released"));
    assert.equal(all.filter((r) => r.outcome === "completed").length, 12);
  } finally {
    gate.resolve();
    await Promise.all([a, ...others].map((w) => w.close()));
    await service.close();
  }
});

test("GET /health: database down while Postgres is stopped, up again after; the worker listens and passes again", async () => {
  await resetData();
  await setQueueCronActive(false);
  await using service = await fakeRenderService(() => new Response(null, { status: 202 }));
  await configure(service.url, { global: 10, manim: 4, revideo: null });
  const [worker] = await spawnAll(["health-a"]);
  const dir = env.STACK_DIR;
  try {
    const up = await eventually("a pass", async () => {
      const res = await get(worker, "/health");
      return res.body.last_pass_at !== null && res;
    });
    assert.equal(up.status, 200);
    assert.equal(up.body.status, "ok");
    assert.equal(up.body.database, "up");
    assert.equal(up.body.worker_id, "health-a");
    assert.equal(up.body.in_flight, 0);

    await stopPostgres(dir);
    try {
      const down = await get(worker, "/health");
      assert.equal(down.status, 503);
      assert.equal(down.body.status, "unavailable");
      assert.equal(down.body.database, "down");
      assert.equal(down.body.worker_id, "health-a");
      assert.equal((await get(worker, "/status")).status, 200, "/status answers without the database");
      await eventually(
        "the LISTEN connection noticed",
        async () => !(await get(worker, "/status")).body.listening,
      );
    } finally {
      await startPostgres(dir).catch(() => {});
      await waitForPostgres(dir);
    }

    const again = await eventually("database up again", async () => {
      const res = await get(worker, "/health");
      return res.status === 200 && res;
    }, 30_000);
    assert.equal(again.body.database, "up");
    await idle(worker);
    // Only NOTIFY wakes this worker now (its interval is 10 minutes): a new job is claimed by it.
    const [jobId] = await insertJobs(1, "doubt");
    await eventually("the new job claimed by health-a", async () => {
      const rows = await db`select worker_id from job_attempts where job_id = ${jobId}`;
      return rows[0]?.worker_id === "health-a";
    }, 30_000);
  } finally {
    await startPostgres(dir).catch(() => {});
    await waitForPostgres(dir);
    assert.equal((await worker.close()).code, 0);
  }
});
