// The worker, behind POST /video-queue-worker and POST /video-queue-worker/events. A pass recovers expired
// attempts, claims what capacity allows and hands each claim to its render endpoint, then acts on what the
// answer means (a DispatchOutcome); a callback applies a render service's report on one attempt. SQL fences
// every write by attempt and decides every queue rule: this module only calls it and logs.
import { kickWorker, runInBackground } from "./background.ts";
import { dispatchToRenderer } from "./dispatch.ts";
import { log, type ScopedLog, scopedLog, since } from "./log.ts";
import {
  type Claim,
  claimJobs,
  completeJob,
  failJob,
  type Job,
  markEndpointUnhealthy,
  publishQueueChanges,
  recordHeartbeat,
  recoverExpiredAttempts,
  releaseJob,
  reportProgress,
} from "./queue.ts";
import type { Cooldown, DispatchOutcome, RenderEvent } from "./render_protocol.ts";
import { deliverWebhooksInBackground } from "./webhooks.ts";

/** Render services contacted at once; with the 10 s dispatch time-out this keeps a pass far inside 150 s. */
const DISPATCH_CONCURRENCY = 8;
/** After this, a pass starts no more dispatches and releases what is left (Edge Functions live ≤ 150 s). */
const PASS_BUDGET_MS = 60_000;

/** What a pass answers (API.md `POST /video-queue-worker`). */
export type PassSummary = {
  recovered: number;
  claimed: number;
  dispatched: number;
  released: number;
  capacity: Record<string, unknown>;
};

/** Who passes, and how it is stopped: an Edge Function pass uses the defaults; the long-running worker (worker/) its own. */
export type PassOptions = {
  /** The id claims are recorded under; default: a new one per pass. */
  workerId?: string;
  /** Once aborted, the pass claims nothing more and releases at once the claims it has not started dispatching. */
  stop?: AbortSignal;
  /** Called when the pass freed slots (default: kick another pass through the Edge Function). */
  onSlotsFreed?: (reason: string) => void;
};

/** How one claim ended in this pass: still rendering, already done at dispatch, failed/retrying, back in the queue. */
type Settled = "dispatched" | "completed" | "failed" | "released";

/** A claim this pass holds, with the logger of its job and attempt. */
type InHand = { claim: Claim; workerId: string; log: ScopedLog };

/** Claims this instance holds but has not handed to a render service yet, released on shutdown. */
const undispatched = new Map<string, Claim>();
const claimKey = (c: Claim) => `${c.job_id}/${c.attempt}`;

/** The claims this instance holds and has not handed to a render service (in a pass, or a dispatch in flight). */
export function claimsInHand(): Claim[] {
  return [...undispatched.values()];
}

/**
 * Puts back in the queue every claim this instance still holds (a dispatch that got no answer included; a
 * render service that took it anyway is fenced off by the attempt): what a stopping instance does last.
 */
export async function releaseClaimsInHand(): Promise<number> {
  const claims = claimsInHand();
  undispatched.clear();
  const released = await Promise.allSettled(claims.map((c) => releaseJob(c.job_id, c.attempt)));
  return released.filter((r) => r.status === "fulfilled").length;
}

let releaseOnShutdown = false;
function releaseUndispatchedOnShutdown(): void {
  if (releaseOnShutdown) return;
  releaseOnShutdown = true;
  addEventListener("beforeunload", () => {
    if (undispatched.size === 0) return; // scheduling nothing lets the runtime exit
    runInBackground("release_on_shutdown", releaseClaimsInHand);
  });
}

/** One worker pass: recover, claim, dispatch; never stopped by one job's trouble. */
export async function workerPass(options: PassOptions = {}): Promise<PassSummary> {
  releaseUndispatchedOnShutdown();
  const { stop, onSlotsFreed = kickWorker } = options;
  const workerId = options.workerId ?? `worker-${crypto.randomUUID().slice(0, 8)}`;
  const attemptLog = (ref: { job_id: string; attempt: number }) =>
    scopedLog({ job_id: ref.job_id, attempt: ref.attempt, worker_id: workerId });
  const passStart = performance.now();

  const recovered = await recoverExpiredAttempts();
  for (const r of recovered) attemptLog(r)("attempt_recovered", { outcome: r.outcome });

  const claims = stop?.aborted ? [] : await claimJobs(workerId);
  const inHand = claims.map((claim): InHand => ({ claim, workerId, log: attemptLog(claim) }));
  for (const job of inHand) {
    undispatched.set(claimKey(job.claim), job.claim);
    job.log("job_claimed", {
      renderer: job.claim.renderer,
      endpoint_id: job.claim.endpoint.id,
      duration_ms: since(passStart),
    });
  }

  const settled = await dispatchAll(inHand, passStart, stop);

  // Webhooks of finished jobs go out beside the queue: no receiver can delay this pass or the next claim.
  deliverWebhooksInBackground();

  // Slots freed by this pass are filled by the next one at once, not at the next cron minute.
  if (recovered.length > 0 || settled.some((s) => s !== "dispatched")) onSlotsFreed("slots_freed");

  // Waiting jobs hear their new places (Realtime); the same call answers the stats.
  const stats = await publishQueueChanges();
  return {
    recovered: recovered.length,
    claimed: claims.length,
    dispatched: settled.filter((s) => s === "dispatched" || s === "completed").length,
    released: settled.filter((s) => s === "released").length,
    capacity: { ...stats.capacity, processing: stats.processing, queued: stats.queued },
  };
}

/** Hands one claim to its render endpoint and acts on what the answer means; never throws. */
async function dispatch(job: InHand): Promise<Settled> {
  const { claim } = job;
  const start = performance.now();
  const outcome = await dispatchToRenderer(claim).catch(unexpectedFailure);
  switch (outcome.kind) {
    case "accepted":
      handedOver(job, "async", start);
      return "dispatched";
    case "completed":
      handedOver(job, "done", start);
      return await settle(
        job,
        "completed",
        () => completeJob(claim.job_id, claim.attempt, claim.callback_token, outcome.result),
      );
    case "busy":
      await coolDown(job, outcome.reason, outcome.cooldownSeconds);
      return await release(job);
    case "failed":
      if (outcome.cooldownSeconds !== undefined) await coolDown(job, outcome.error, outcome.cooldownSeconds);
      return await settle(
        job,
        "failed",
        () => failJob(claim.job_id, claim.attempt, claim.callback_token, outcome.error, outcome.retryable),
      );
  }
}

/** The render service took the job (202 `async`, or 200 `done`): no longer this instance's to release. */
function handedOver(job: InHand, answer: "async" | "done", start: number): void {
  undispatched.delete(claimKey(job.claim));
  job.log("job_dispatched", { endpoint_id: job.claim.endpoint.id, answer, duration_ms: since(start) });
}

/** A bug, not an answer (dispatchToRenderer does not throw for anything a render service does): retry later. */
function unexpectedFailure(err: unknown): DispatchOutcome {
  return { kind: "failed", error: err instanceof Error ? err.message : String(err), retryable: true };
}

/** Records the attempt's outcome and logs it (job_completed / job_retry_scheduled / job_failed). */
async function settle(job: InHand, as: Settled, write: () => Promise<Job>): Promise<Settled> {
  undispatched.delete(claimKey(job.claim));
  return await quietly(job, async () => {
    logOutcome(await write(), job.log);
    return as;
  }, "failed");
}

/** Puts a claim back in the queue without counting a retry (it never started at a render service). */
async function release(job: InHand): Promise<Settled> {
  undispatched.delete(claimKey(job.claim));
  return await quietly(job, async () => {
    await releaseJob(job.claim.job_id, job.claim.attempt);
    job.log("job_released");
    return "released";
  }, "released");
}

// A write that loses a race (the job was cancelled meanwhile: VQ409) is logged, not fatal to the pass;
// either way the job is no longer this pass's to dispatch.
async function quietly(job: InHand, write: () => Promise<Settled>, ifLost: Settled): Promise<Settled> {
  try {
    return await write();
  } catch (err) {
    job.log("settle_failed", { error: String((err as Error)?.message ?? err) });
    return ifLost;
  }
}

/** Keeps the claim's endpoint out of rotation for a while; a failure to do so is logged, not fatal. */
async function coolDown(job: InHand, reason: string, seconds: Cooldown): Promise<void> {
  const endpointId = job.claim.endpoint.id;
  try {
    await markEndpointUnhealthy(endpointId, seconds === "default" ? undefined : seconds);
    log("endpoint_unhealthy", { endpoint_id: endpointId, worker_id: job.workerId, reason });
  } catch (e) {
    log("endpoint_unhealthy_failed", { endpoint_id: endpointId, error: String((e as Error)?.message ?? e) });
  }
}

/** Applies a render service's callback; the token and attempt are checked by SQL (VQ401 / VQ409). */
export async function applyRenderEvent(event: RenderEvent, token: string): Promise<Job> {
  const { job_id, attempt } = event;
  const jobLog = scopedLog({ job_id, attempt });
  switch (event.type) {
    case "progress":
      return await reportProgress(job_id, attempt, token, event.stage ?? null, event.progress);
    case "heartbeat":
      return await recordHeartbeat(job_id, attempt, token);
    case "completed":
      return attemptFinished(await completeJob(job_id, attempt, token, event.result), jobLog);
    case "failed":
      return attemptFinished(await failJob(job_id, attempt, token, event.error, event.retryable), jobLog);
  }
}

/** A callback ended its attempt: log how, and fill the freed slot at once. */
function attemptFinished(job: Job, jobLog: ScopedLog): Job {
  logOutcome(job, jobLog);
  kickWorker("attempt_finished");
  return job;
}

/** job_completed / job_retry_scheduled / job_failed, with how long the attempt ran. */
function logOutcome(job: Job, jobLog: ScopedLog): void {
  const event = job.status === "completed"
    ? "job_completed"
    : job.status === "queued"
    ? "job_retry_scheduled"
    : "job_failed";
  const ranMs = job.started_at ? Date.now() - Date.parse(job.started_at) : undefined;
  jobLog(event, { duration_ms: ranMs, retry_count: job.retry_count, next_attempt_at: job.next_attempt_at });
}

/**
 * Dispatches the pass's claims, DISPATCH_CONCURRENCY at a time. Past the pass budget, or once `stop` is
 * aborted, the claims not yet started are released instead (on abort at once, not when a lane frees up).
 * Each claim is taken once, by a lane or by the release.
 */
async function dispatchAll(inHand: InHand[], passStart: number, stop?: AbortSignal): Promise<Settled[]> {
  const waiting = [...inHand];
  const settled: Promise<Settled>[] = [];
  const releaseWaiting = () => settled.push(...waiting.splice(0).map(release));
  stop?.addEventListener("abort", releaseWaiting);
  if (stop?.aborted) releaseWaiting();
  const lane = async () => {
    for (let job = waiting.shift(); job; job = waiting.shift()) {
      const outcome = performance.now() - passStart > PASS_BUDGET_MS ? release(job) : dispatch(job);
      settled.push(outcome);
      await outcome;
    }
  };
  await Promise.all(Array.from({ length: Math.min(DISPATCH_CONCURRENCY, waiting.length) }, lane));
  stop?.removeEventListener("abort", releaseWaiting);
  return await Promise.all(settled);
}
