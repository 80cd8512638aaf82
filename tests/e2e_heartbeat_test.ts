// End to end, a render longer than the lease: the reference renderer as its own process (renderer/main.ts
// through spawnRenderer), made to take 75 s while the queue's `job_timeout_minutes` is 1. Its heartbeats
// (every 5 s) are signs of life, so the lease keeps moving and recovery, run all along, leaves the job alone:
// it completes once, in its first attempt (API.md "Scheduling").
import assert from "node:assert/strict";
import { spawnRenderer } from "../renderer/spawn.ts";
import type { LogEntry } from "../renderer/log.ts";
import { client, db, env, eventually, fnUrl, mintUser, resetData, test } from "./harness.ts";

const LEASE_MINUTES = 1;
const RENDER_SECONDS = 75; // longer than the lease
const HEARTBEAT_SECONDS = 5;
const RECOVERY_EVERY_MS = 5_000;

/** One recovery run while the job renders, and what the job looked like just before it. */
interface Recovery {
  via: "worker pass" | "sql";
  /** Seconds since the attempt started (database clock). */
  secondsIn: number;
  /** Seconds of lease left when it ran. */
  leaseLeft: number;
  recovered: number;
}

/** Recovery as the queue runs it: a worker pass over HTTP (secret key), or the cron's SQL as superuser. */
async function recover(via: Recovery["via"]): Promise<number> {
  if (via === "sql") {
    const [{ n }] = await db`select jsonb_array_length(queue.recover_expired_attempts()) as n`;
    return n;
  }
  const res = await fetch(fnUrl("video-queue-worker"), {
    method: "POST",
    headers: { apikey: env.SECRET_KEY },
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.recovered;
}

test("a render longer than job_timeout_minutes completes once, in one attempt, kept alive by heartbeats", async () => {
  await resetData();
  await db`update job_queue_config set job_timeout_minutes = ${LEASE_MINUTES}, max_render_minutes = 5`;
  const storageDir = await Deno.makeTempDir({ prefix: "e2e-heartbeat-videos-" });
  const logs: LogEntry[] = [];
  try {
    await using renderer = await spawnRenderer({
      name: "e2e-heartbeat",
      storageDir,
      clipSeconds: 1,
      heartbeatSeconds: HEARTBEAT_SECONDS,
      minRenderSeconds: RENDER_SECONDS,
      args: ["--cleanup-interval-seconds", "0"],
      onLog: (entry) => logs.push(entry),
    });
    for (const kind of ["manim", "revideo", "orchestrator"]) {
      await db`insert into render_endpoints (renderer, url) values (${kind}, ${renderer.endpointUrl})`;
    }

    const user = await mintUser();
    const { data, error } = await client(user.token).functions.invoke("enqueue", {
      body: {
        job_type: "doubt",
        payload: { question: "Why do the westerlies bring winter rain to Punjab?" },
      },
    });
    assert.equal(error, null);
    const id: string = data.job.id;

    // Until it ends: every 5 s of rendering, a recovery run (alternately both ways) and a look at the lease.
    const recoveries: Recovery[] = [];
    let nextRecoveryAt = 0;
    const job = await eventually("the long render to end", async () => {
      const [row] = await db`
        select status, attempt, retry_count, error_message,
               extract(epoch from now() - started_at)::float8 as seconds_in,
               extract(epoch from lease_expires_at - now())::float8 as lease_left
          from jobs where id = ${id}`;
      if (row.status !== "queued" && row.status !== "processing") return row;
      // Taken away (recovered, retried): no need to wait any longer to know the test failed.
      if (row.attempt > 1 || row.retry_count > 0 || recoveries.some((r) => r.recovered > 0)) return row;
      if (row.status === "processing" && Date.now() >= nextRecoveryAt) {
        nextRecoveryAt = Date.now() + RECOVERY_EVERY_MS;
        const via = recoveries.length % 2 === 0 ? "worker pass" : "sql";
        recoveries.push({
          via,
          secondsIn: row.seconds_in,
          leaseLeft: row.lease_left,
          recovered: await recover(via),
        });
      }
      return false;
    }, (RENDER_SECONDS + 45) * 1000);

    const summary = JSON.stringify(recoveries);
    assert.deepEqual(
      [job.status, job.attempt, job.retry_count, job.error_message],
      ["completed", 1, 0, null],
      `recoveries: ${summary}`,
    );
    const attempts = await db`
      select attempt, outcome, extract(epoch from lease_expires_at - started_at)::float8 as lease_seconds,
             extract(epoch from finished_at - started_at)::float8 as ran_seconds
        from job_attempts where job_id = ${id}`;
    assert.equal(attempts.length, 1, "a single attempt");
    const [attempt] = attempts;
    assert.deepEqual([attempt.attempt, attempt.outcome], [1, "completed"]);
    assert.ok(attempt.ran_seconds >= RENDER_SECONDS, `it rendered ${attempt.ran_seconds} s`);
    assert.ok(
      attempt.lease_seconds > LEASE_MINUTES * 60 + RENDER_SECONDS - 2 * HEARTBEAT_SECONDS,
      `the lease moved forward with the heartbeats: it ended ${attempt.lease_seconds} s after the start`,
    );
    const [{ completions }] = await db`
      select count(*)::int as completions from job_attempts where job_id = ${id} and outcome = 'completed'`;
    assert.equal(completions, 1, "completed exactly once");

    // Recovery ran all along, also after the first lease would have run out, and never took the job.
    assert.ok(recoveries.some((r) => r.via === "worker pass") && recoveries.some((r) => r.via === "sql"));
    assert.ok(recoveries.some((r) => r.secondsIn > LEASE_MINUTES * 60 + HEARTBEAT_SECONDS), summary);
    assert.deepEqual(recoveries.filter((r) => r.recovered !== 0), [], "nothing was recovered");
    for (const r of recoveries) {
      assert.ok(
        r.leaseLeft > LEASE_MINUTES * 60 - 2 * HEARTBEAT_SECONDS,
        `the lease stayed ahead: ${summary}`,
      );
    }

    // The renderer's side: heartbeats every 5 s, all accepted, then one completed render.
    const beats = logs.filter((e) => e.event === "render_heartbeat" && e.job_id === id);
    assert.ok(beats.length >= RENDER_SECONDS / HEARTBEAT_SECONDS - 2, `${beats.length} heartbeats`);
    assert.deepEqual(logs.filter((e) => e.event === "callback_undelivered"), []);
    await eventually(
      "the renderer to log the render's end",
      () => Promise.resolve(logs.some((e) => e.job_id === id && e.event === "render_completed")),
    );
    const outcomes = logs.filter((e) =>
      e.job_id === id && /^render_(?!accepted|stage|heartbeat)/.test(e.event)
    );
    assert.deepEqual(outcomes.map((e) => e.event), ["render_completed"]);
  } finally {
    await resetData(); // restores job_queue_config (and every other table)
    await Deno.remove(storageDir, { recursive: true });
  }
});
