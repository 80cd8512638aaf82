// Delivers progress and outcome callbacks to the queue, retrying briefly on network errors and 5xx.
import { CallbackRejectedError, CallbackUndeliveredError, sleep } from "./errors.ts";

export interface CallbackTarget {
  url: string;
  token: string;
}

export interface CallbackPolicy {
  /** Total tries per callback, first one included. */
  attempts: number;
  /** Delay before the second try; doubles after each failure. */
  retryDelayMs: number;
  /** Per-try timeout. */
  timeoutMs: number;
}

export const defaultCallbackPolicy: CallbackPolicy = { attempts: 4, retryDelayMs: 250, timeoutMs: 10_000 };

/**
 * POSTs `body` to the callback URL with the attempt's bearer token. Resolves on 2xx; throws
 * CallbackRejectedError on 4xx other than 429 (not worth retrying: the queue said no), and
 * CallbackUndeliveredError once the tries are spent. Aborting `signal` stops at once.
 */
export async function sendCallback(
  target: CallbackTarget,
  body: Record<string, unknown>,
  policy: CallbackPolicy,
  signal?: AbortSignal,
): Promise<number> {
  let lastProblem = "";
  for (let attempt = 1; attempt <= policy.attempts; attempt++) {
    if (attempt > 1) await sleep(policy.retryDelayMs * 2 ** (attempt - 2), signal);
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(new Error("callback timed out")), policy.timeoutMs);
    try {
      const response = await fetch(target.url, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${target.token}` },
        body: JSON.stringify(body),
        signal: signal ? AbortSignal.any([signal, timeout.signal]) : timeout.signal,
      });
      const text = await response.text();
      if (response.ok) return response.status;
      if (response.status >= 400 && response.status < 500 && response.status !== 429) {
        throw new CallbackRejectedError(
          response.status,
          `callback refused with ${response.status}: ${text.slice(0, 200)}`,
        );
      }
      lastProblem = `status ${response.status}`;
    } catch (err) {
      if (err instanceof CallbackRejectedError || signal?.aborted) {
        throw signal?.aborted ? signal.reason : err;
      }
      lastProblem = err instanceof Error ? err.message : String(err);
    } finally {
      clearTimeout(timer);
    }
  }
  throw new CallbackUndeliveredError(`callback not delivered after ${policy.attempts} tries: ${lastProblem}`);
}
