// The worker's side of the render protocol (API.md "Render services", docs/ARCHITECTURE.md).
import { PermanentRenderError, RetryableRenderError } from "./errors.ts";
import { functionUrl } from "./background.ts";
import type { Claim } from "./queue.ts";
import { RenderResult } from "./schemas.ts";

/** How long a render service may take to accept (or refuse) a job. */
export const DISPATCH_TIMEOUT_MS = 10_000;
/** How long a busy (429) endpoint without Retry-After is skipped. */
const BUSY_COOLDOWN_SECONDS = 10;
/** How long the best-effort cancel notice may take. */
const CANCEL_NOTICE_TIMEOUT_MS = 5_000;

/** What a render service did with a job it accepted. */
export type Dispatched =
  | { accepted: "async" } // 202: it will call back
  | { accepted: "done"; result: Record<string, unknown> }; // 200: finished already

/** The body a render service receives for one attempt. */
export function dispatchBody(claim: Claim) {
  return {
    job_id: claim.job_id,
    attempt: claim.attempt,
    job_type: claim.job_type,
    payload: claim.payload,
    callback: { url: functionUrl("video-queue-worker/events"), token: claim.callback_token },
    deadline: claim.deadline,
  };
}

/**
 * Hands one claimed job to its render endpoint and classifies the answer: 202 and 200 are accepted;
 * any other 4xx throws PermanentRenderError; 5xx, 429, a time-out or a failed connection throw
 * RetryableRenderError (with `endpointDown` when the endpoint looks dead or busy, and `delivered: false`
 * when the job surely did not start there: a refused connection or a 429).
 */
export async function dispatchToRenderer(claim: Claim, timeoutMs = DISPATCH_TIMEOUT_MS): Promise<Dispatched> {
  let res: Response;
  try {
    res = await fetch(claim.endpoint.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(dispatchBody(claim)),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    // A time-out may have reached the service (it may be rendering); a refused connection did not.
    const timedOut = (err as Error)?.name === "TimeoutError";
    throw new RetryableRenderError(
      timedOut ? `render service gave no answer within ${timeoutMs} ms` : "render service unreachable",
      { endpointDown: true, delivered: timedOut },
    );
  }
  const text = await res.text().catch(() => "");
  if (res.status === 202) return { accepted: "async" };
  if (res.status === 429) {
    // Busy: the job did not start there. Not a failed attempt (a busy farm must not use up a user's
    // retries): release it and skip this endpoint for its Retry-After.
    throw new RetryableRenderError("render service is busy (429)", {
      endpointDown: true,
      delivered: false,
      cooldownSeconds: retryAfterSeconds(res.headers.get("retry-after")) ?? BUSY_COOLDOWN_SECONDS,
    });
  }
  if (res.status === 200) {
    const parsed = RenderResult.safeParse(safeJson(text));
    if (parsed.success) return { accepted: "done", result: parsed.data.result };
    throw new RetryableRenderError("render service answered 200 without result.video_url");
  }
  // error_message is shown to the job's owner: keep only the service's own error sentence, not its raw body.
  const reason = (safeJson(text) as { error?: { message?: unknown } } | undefined)?.error?.message;
  const message = `render service answered ${res.status}${
    typeof reason === "string" ? `: ${reason.slice(0, 200)}` : ""
  }`;
  if (res.status >= 400 && res.status < 500 && res.status !== 429) throw new PermanentRenderError(message);
  throw new RetryableRenderError(message);
}

/** Tells a render service that an attempt was cancelled: `POST <endpoint>/cancel`, best effort. */
export async function notifyRenderCancel(endpointUrl: string, jobId: string, attempt: number): Promise<void> {
  const res = await fetch(`${endpointUrl.replace(/\/+$/, "")}/cancel`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ job_id: jobId, attempt }),
    signal: AbortSignal.timeout(CANCEL_NOTICE_TIMEOUT_MS),
  });
  await res.body?.cancel();
}

/** Retry-After in seconds (delta-seconds or an HTTP date), capped at 10 minutes; undefined if absent or bad. */
function retryAfterSeconds(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = /^\d+$/.test(header.trim()) ? Number(header) : (Date.parse(header) - Date.now()) / 1000;
  return Number.isFinite(seconds) ? Math.min(600, Math.max(0, Math.ceil(seconds))) : undefined;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
