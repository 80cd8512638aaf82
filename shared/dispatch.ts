// The worker's side of the render protocol (render_protocol.ts): hands a claim to its render endpoint and
// says what the answer means, as a value (DispatchOutcome); tells a render service about a cancel.
import { functionUrl } from "./background.ts";
import type { Claim } from "./queue.ts";
import {
  type CancelNotice,
  type DispatchBody,
  type DispatchOutcome,
  RenderAnswer,
} from "./render_protocol.ts";
import { isSafeText } from "./schemas.ts";

/** How long a render service may take to accept (or refuse) a job. */
export const DISPATCH_TIMEOUT_MS = 10_000;
/** How long a busy (429) endpoint without Retry-After is skipped. */
const BUSY_COOLDOWN_SECONDS = 10;
/** How long the best-effort cancel notice may take. */
const CANCEL_NOTICE_TIMEOUT_MS = 5_000;
/** The most of a render service's answer the worker reads; a result is a few hundred bytes. */
export const MAX_RENDER_ANSWER_BYTES = 64 * 1024;

/** The body a render service receives for one attempt (without SUPABASE_URL there is no callback URL). */
export function dispatchBody(claim: Claim): DispatchBody {
  return {
    job_id: claim.job_id,
    attempt: claim.attempt,
    job_type: claim.job_type,
    payload: claim.payload,
    callback: { url: functionUrl("video-queue-worker/events") ?? "", token: claim.callback_token },
    deadline: claim.deadline,
  };
}

/**
 * Hands one claimed job to its render endpoint and says what the answer means (DispatchOutcome):
 * 202 accepted; 200 with a valid result completed; 429 busy (its Retry-After, else 10 s); a refused
 * connection or a redirect busy too (SQL's default cool-down); no answer within `timeoutMs` (the body
 * included) failed, retryable, and the endpoint cools down; any other 4xx failed for good; 5xx, other
 * statuses and a 200 without a valid result (or over MAX_RENDER_ANSWER_BYTES) failed, retryable.
 * Redirects are never followed: the body carries the attempt's callback token, and only the registered
 * URL may receive it. Nothing a render service does makes it throw.
 */
export async function dispatchToRenderer(
  claim: Claim,
  timeoutMs = DISPATCH_TIMEOUT_MS,
): Promise<DispatchOutcome> {
  let res: Response;
  let text: string | undefined;
  try {
    res = await postJson(claim.endpoint.url, JSON.stringify(dispatchBody(claim)), timeoutMs);
    if (res.status === 202) {
      await res.body?.cancel();
      return { kind: "accepted" };
    }
    text = await readBounded(res); // the time-out covers the body too
  } catch (err) {
    // A time-out may have reached the service (it may be rendering): a failed attempt. A refused
    // connection did not: the job is released. Either way the endpoint looks dead for now.
    if ((err as Error)?.name === "TimeoutError") {
      const error = `render service gave no answer within ${timeoutMs} ms`;
      return { kind: "failed", error, retryable: true, cooldownSeconds: "default" };
    }
    return { kind: "busy", reason: "render service unreachable", cooldownSeconds: "default" };
  }
  if (res.status >= 300 && res.status < 400) {
    // A misconfigured (or hostile) endpoint: the job did not start, so release it and skip the endpoint.
    const reason = `render service answered ${res.status} (a redirect, not followed)`;
    return { kind: "busy", reason, cooldownSeconds: "default" };
  }
  if (res.status === 429) {
    // Busy: the job did not start there. Not a failed attempt (a busy farm must not use up a user's
    // retries): release it and skip this endpoint for its Retry-After.
    const cooldownSeconds = retryAfterSeconds(res.headers.get("retry-after")) ?? BUSY_COOLDOWN_SECONDS;
    return { kind: "busy", reason: "render service is busy (429)", cooldownSeconds };
  }
  if (res.status === 200) {
    if (text === undefined) {
      const error = `render service answered 200 with more than ${MAX_RENDER_ANSWER_BYTES} bytes`;
      return { kind: "failed", error, retryable: true };
    }
    const parsed = RenderAnswer.safeParse(safeJson(text));
    if (parsed.success) return { kind: "completed", result: parsed.data.result };
    return { kind: "failed", error: "render service answered 200 without a valid result", retryable: true };
  }
  // error_message is shown to the job's owner: keep only the service's own error sentence, not its raw body.
  const reason = (safeJson(text ?? "") as { error?: { message?: unknown } } | undefined)?.error?.message;
  const error = `render service answered ${res.status}${
    typeof reason === "string" && isSafeText(reason) ? `: ${[...reason].slice(0, 200).join("")}` : ""
  }`;
  return { kind: "failed", error, retryable: !(res.status >= 400 && res.status < 500) };
}

/** Tells a render service that an attempt was cancelled: `POST <endpoint>/cancel`, best effort. */
export async function notifyRenderCancel(endpointUrl: string, jobId: string, attempt: number): Promise<void> {
  const notice = JSON.stringify({ job_id: jobId, attempt } satisfies CancelNotice);
  const res = await postJson(`${endpointUrl.replace(/\/+$/, "")}/cancel`, notice, CANCEL_NOTICE_TIMEOUT_MS);
  await res.body?.cancel();
}

/**
 * POSTs a JSON body to a service the operator registered (render service, webhook receiver): a redirect is
 * never followed but comes back as the answer (only the registered URL may receive what the body carries),
 * and the request gives up after `timeoutMs` with a TimeoutError.
 */
export function postJson(
  url: string,
  body: string,
  timeoutMs: number,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body,
    redirect: "manual",
    signal: AbortSignal.timeout(timeoutMs),
  });
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
