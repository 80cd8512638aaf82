// POST /video-queue-worker (secret key): one worker pass — recover expired attempts, claim what capacity
// allows, dispatch each claim to its render endpoint. POST /video-queue-worker/events (callback token):
// a render service reports progress or the outcome of one attempt. SQL fences every write by attempt.
import {
  bearerToken,
  type Claim,
  claimJobs,
  completeJob,
  type Dispatched,
  dispatchToRenderer,
  failJob,
  getQueueStats,
  HttpError,
  type Job,
  json,
  kickWorker,
  log,
  markEndpointUnhealthy,
  PermanentRenderError,
  readJson,
  recoverExpiredAttempts,
  releaseJob,
  RenderEvent,
  reportProgress,
  requireSecretKey,
  RetryableRenderError,
  router,
  runInBackground,
  since,
} from "../../../shared/mod.ts";

/** Render services contacted at once; with the 10 s dispatch time-out this keeps a pass far inside 150 s. */
const DISPATCH_CONCURRENCY = 8;
/** After this, a pass starts no more dispatches and releases what is left (Edge Functions live ≤ 150 s). */
const PASS_BUDGET_MS = 60_000;

export const handler = router("video-queue-worker", {
  "": {
    POST: async (req) => {
      await requireSecretKey(req);
      return json(await workerPass());
    },
  },
  events: {
    POST: async (req) => {
      const token = bearerToken(req);
      if (!token) {
        throw new HttpError(401, "Send the attempt's callback token as Authorization: Bearer <token>.");
      }
      const event = RenderEvent.parse(await readJson(req));
      return json({ job: await applyRenderEvent(event, token) });
    },
  },
});

/** How one claim ended in this pass: still rendering, already done at dispatch, failed/retrying, back in the queue. */
type Settled = "dispatched" | "completed" | "failed" | "released";

/** Claims this instance holds but has not handed to a render service yet, released on shutdown. */
const undispatched = new Map<string, Claim>();
const claimKey = (c: Claim) => `${c.job_id}/${c.attempt}`;

addEventListener("beforeunload", () => {
  if (undispatched.size === 0) return; // scheduling nothing lets the runtime exit
  const claims = [...undispatched.values()];
  undispatched.clear();
  runInBackground(
    "release_on_shutdown",
    () => Promise.all(claims.map((c) => releaseJob(c.job_id, c.attempt))),
  );
});

async function workerPass() {
  const workerId = `worker-${crypto.randomUUID().slice(0, 8)}`;
  const passStart = performance.now();

  const recovered = await recoverExpiredAttempts();
  for (const r of recovered) {
    log("attempt_recovered", {
      job_id: r.job_id,
      attempt: r.attempt,
      worker_id: workerId,
      outcome: r.outcome,
    });
  }

  const claims = await claimJobs(workerId);
  for (const claim of claims) {
    undispatched.set(claimKey(claim), claim);
    log("job_claimed", {
      job_id: claim.job_id,
      attempt: claim.attempt,
      worker_id: workerId,
      renderer: claim.renderer,
      endpoint_id: claim.endpoint.id,
      duration_ms: since(passStart),
    });
  }

  const settled = await mapConcurrently(claims, DISPATCH_CONCURRENCY, (claim) => {
    if (performance.now() - passStart > PASS_BUDGET_MS) return release(claim, workerId);
    return dispatch(claim, workerId);
  });

  // Slots freed by this pass are filled by the next one at once, not at the next cron minute.
  if (recovered.length > 0 || settled.some((s) => s !== "dispatched")) kickWorker("slots_freed");

  const stats = await getQueueStats({ kind: "service" });
  return {
    recovered: recovered.length,
    claimed: claims.length,
    dispatched: settled.filter((s) => s === "dispatched" || s === "completed").length,
    released: settled.filter((s) => s === "released").length,
    capacity: { ...stats.capacity, processing: stats.processing, queued: stats.queued },
  };
}

/** Hands one claim to its render endpoint and records the outcome; never throws, so one bad job cannot stop a pass. */
async function dispatch(claim: Claim, workerId: string): Promise<Settled> {
  const fields = { job_id: claim.job_id, attempt: claim.attempt, worker_id: workerId };
  const start = performance.now();
  let answer: Dispatched;
  try {
    answer = await dispatchToRenderer(claim);
  } catch (err) {
    return await settleRefusedDispatch(claim, workerId, err);
  }
  undispatched.delete(claimKey(claim));
  log("job_dispatched", {
    ...fields,
    endpoint_id: claim.endpoint.id,
    answer: answer.accepted,
    duration_ms: since(start),
  });
  if (answer.accepted === "async") return "dispatched";
  const result = answer.result;
  return await settleQuietly(fields, async () => {
    logOutcome(await completeJob(claim.job_id, claim.attempt, claim.callback_token, result), fields);
    return "completed";
  });
}

/**
 * A dispatch that did not take: an unreachable endpoint leaves rotation and the job is released (it never
 * got there); otherwise the attempt fails, retryable unless the render service said it can never succeed.
 */
async function settleRefusedDispatch(claim: Claim, workerId: string, err: unknown): Promise<Settled> {
  if (err instanceof RetryableRenderError && err.endpointDown) await takeOutOfRotation(claim, workerId, err);
  if (err instanceof RetryableRenderError && !err.delivered) return await release(claim, workerId);
  undispatched.delete(claimKey(claim));
  const fields = { job_id: claim.job_id, attempt: claim.attempt, worker_id: workerId };
  const message = err instanceof Error ? err.message : String(err);
  const retryable = !(err instanceof PermanentRenderError);
  return await settleQuietly(fields, async () => {
    logOutcome(await failJob(claim.job_id, claim.attempt, claim.callback_token, message, retryable), fields);
    return "failed";
  });
}

/** Puts a claim back in the queue without counting a retry (it never reached a render service). */
async function release(claim: Claim, workerId: string): Promise<Settled> {
  undispatched.delete(claimKey(claim));
  const fields = { job_id: claim.job_id, attempt: claim.attempt, worker_id: workerId };
  return await settleQuietly(fields, async () => {
    await releaseJob(claim.job_id, claim.attempt);
    log("job_released", fields);
    return "released";
  }, "released");
}

async function takeOutOfRotation(claim: Claim, workerId: string, err: RetryableRenderError): Promise<void> {
  try {
    await markEndpointUnhealthy(claim.endpoint.id, err.cooldownSeconds);
    log("endpoint_unhealthy", { endpoint_id: claim.endpoint.id, worker_id: workerId, reason: err.message });
  } catch (e) {
    log("endpoint_unhealthy_failed", {
      endpoint_id: claim.endpoint.id,
      error: String((e as Error)?.message ?? e),
    });
  }
}

// A write that loses a race (the job was cancelled meanwhile: VQ409) is logged, not fatal to the pass;
// either way the job is no longer this pass's to dispatch.
async function settleQuietly(
  fields: Record<string, unknown>,
  write: () => Promise<Settled>,
  ifLost: Settled = "failed",
): Promise<Settled> {
  try {
    return await write();
  } catch (err) {
    log("settle_failed", { ...fields, error: String((err as Error)?.message ?? err) });
    return ifLost;
  }
}

/** Applies a render service's callback; the token and attempt are checked by SQL (VQ401 / VQ409). */
async function applyRenderEvent(event: RenderEvent, token: string): Promise<Job> {
  const { job_id, attempt } = event;
  switch (event.type) {
    case "progress":
      return await reportProgress(job_id, attempt, token, event.stage ?? null, event.progress);
    case "completed": {
      const job = await completeJob(job_id, attempt, token, event.result);
      logOutcome(job, { job_id, attempt });
      kickWorker("attempt_finished");
      return job;
    }
    case "failed": {
      const job = await failJob(job_id, attempt, token, event.error, event.retryable);
      logOutcome(job, { job_id, attempt });
      kickWorker("attempt_finished");
      return job;
    }
  }
}

/** job_completed / job_retry_scheduled / job_failed, with how long the attempt ran. */
function logOutcome(job: Job, fields: Record<string, unknown>): void {
  const event = job.status === "completed"
    ? "job_completed"
    : job.status === "queued"
    ? "job_retry_scheduled"
    : "job_failed";
  const ranMs = job.started_at ? Date.now() - Date.parse(job.started_at) : undefined;
  log(event, {
    ...fields,
    duration_ms: ranMs,
    retry_count: job.retry_count,
    next_attempt_at: job.next_attempt_at,
  });
}

/** Runs `fn` over `items` with at most `limit` at once, keeping the order of results. */
async function mapConcurrently<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
