// The worker's side of the render protocol (API.md "Render services", docs/ARCHITECTURE.md).
import { PermanentRenderError, RetryableRenderError } from "./errors.ts";
import { functionUrl } from "./background.ts";
import type { Claim } from "./queue.ts";
import { isSafeText, RenderResult } from "./schemas.ts";

/** How long a render service may take to accept (or refuse) a job. */
export const DISPATCH_TIMEOUT_MS = 10_000;
/** How long a busy (429) endpoint without Retry-After is skipped. */
const BUSY_COOLDOWN_SECONDS = 10;
/** How long the best-effort cancel notice may take. */
const CANCEL_NOTICE_TIMEOUT_MS = 5_000;
/** The most of a render service's answer the worker reads; a result is a few hundred bytes. */
export const MAX_RENDER_ANSWER_BYTES = 64 * 1024;

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
 * when the job surely did not start there: a refused connection, a 429 or a redirect).
 * Redirects are never followed: the body carries the attempt's callback token, and only the registered
 * URL may receive it.
 */
export async function dispatchToRenderer(claim: Claim, timeoutMs = DISPATCH_TIMEOUT_MS): Promise<Dispatched> {
  let res: Response;
  let text: string | undefined;
  try {
    res = await fetch(claim.endpoint.url, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(dispatchBody(claim)),
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
    if (res.status === 202) {
      await res.body?.cancel();
      return { accepted: "async" };
    }
    text = await readBounded(res); // the time-out covers the body too
  } catch (err) {
    // A time-out may have reached the service (it may be rendering); a refused connection did not.
    const timedOut = (err as Error)?.name === "TimeoutError";
    throw new RetryableRenderError(
      timedOut ? `render service gave no answer within ${timeoutMs} ms` : "render service unreachable",
      { endpointDown: true, delivered: timedOut },
    );
  }
  if (res.status >= 300 && res.status < 400) {
    // A misconfigured (or hostile) endpoint: the job did not start, so release it and skip the endpoint.
    throw new RetryableRenderError(`render service answered ${res.status} (a redirect, not followed)`, {
      endpointDown: true,
      delivered: false,
    });
  }
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
    if (text === undefined) {
      throw new RetryableRenderError(
        `render service answered 200 with more than ${MAX_RENDER_ANSWER_BYTES} bytes`,
      );
    }
    const parsed = RenderResult.safeParse(safeJson(text));
    if (parsed.success) return { accepted: "done", result: parsed.data.result };
    throw new RetryableRenderError("render service answered 200 without a valid result");
  }
  // error_message is shown to the job's owner: keep only the service's own error sentence, not its raw body.
  const reason = (safeJson(text ?? "") as { error?: { message?: unknown } } | undefined)?.error?.message;
  const message = `render service answered ${res.status}${
    typeof reason === "string" && isSafeText(reason) ? `: ${[...reason].slice(0, 200).join("")}` : ""
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
    redirect: "manual",
    signal: AbortSignal.timeout(CANCEL_NOTICE_TIMEOUT_MS),
  });
  await res.body?.cancel();
}

/** The answer's body as text, or undefined when it is longer than MAX_RENDER_ANSWER_BYTES. */
async function readBounded(res: Response): Promise<string | undefined> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of res.body) {
    size += chunk.byteLength;
    if (size > MAX_RENDER_ANSWER_BYTES) return undefined; // leaving the loop cancels the stream
    chunks.push(chunk);
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(bytes);
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
