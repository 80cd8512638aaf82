// The chaos run (scripts/chaos.ts) in short: a few hundred jobs over HTTP with every render-protocol fault,
// concurrent worker loops, one Postgres restart and one kill of the functions process; then the queue's
// invariants. The full run is `deno task chaos --jobs 2000`.
import assert from "node:assert/strict";
import { type ChaosReport, formatReport, runChaos } from "../scripts/chaos.ts";
import { db, env, eventually, resetData, setQueueCronActive, test } from "./harness.ts";

const JOBS = Number(Deno.env.get("CHAOS_JOBS") ?? 300);

test(`chaos: ${JOBS} jobs through faults, concurrent passes, a Postgres restart and a functions kill`, async () => {
  await resetData();
  await setQueueCronActive(false);
  let report: ChaosReport;
  try {
    report = await runChaos({
      env,
      db,
      jobs: JOBS,
      seed: Number(Deno.env.get("CHAOS_SEED") ?? 20261124),
      eventually,
      log: (line) => console.log(`[chaos] ${line}`),
    });
    console.log(formatReport(report));
  } finally {
    // Later test files start from the migrations' data with the cron off (runChaos restored its own changes).
    await resetData();
    await setQueueCronActive(false);
  }

  const violations = Object.fromEntries(Object.entries(report.violations).filter(([, n]) => n > 0));
  assert.deepEqual(violations, {}, report.violationSamples.join("\n"));
  assert.equal(report.enqueued, JOBS, "every job was enqueued");
  const { completed, failed, cancelled, unfinished } = report.outcomes;
  assert.equal(unfinished, 0);
  assert.equal(completed + failed + cancelled, JOBS, "every job in exactly one terminal state");
  for (
    const kind of [
      "async_ok",
      "sync_ok",
      "http_4xx",
      "http_5xx",
      "busy_429_retry_after",
      "busy_429_plain",
      "hang",
      "silence",
      "duplicate_completed",
      "contradicting",
      "cb_failed_retryable",
      "cb_failed_permanent",
      "cancel_race",
      "stale_callback",
      "cancel_queued",
      "run_at_ahead",
      "idempotent_repeat",
      "idempotent_repeat_concurrent",
      "heartbeat",
    ]
  ) assert.ok((report.faults[kind] ?? 0) > 0, `the run injected ${kind}`);
  assert.ok(report.retries.injected > 0);
  assert.ok(report.workerPasses > 0);
});
