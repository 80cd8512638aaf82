// Typed errors of the render service. A render's class decides what the queue hears (retry later, or give
// up); RendererHttpError is the one error a request handler throws for its caller (see http.ts).

/** A request the renderer answers with an error: the contract's `{"error": {code, message, details?}}`. */
export class RendererHttpError extends Error {
  override name = "RendererHttpError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** A render failed for a reason that may pass (ffmpeg crash, disk full): the queue should retry. */
export class RetryableRenderError extends Error {
  readonly retryable = true;
  override name = "RetryableRenderError";
}

/** A render can never succeed (bad input): the queue should fail the job without retrying. */
export class PermanentRenderError extends Error {
  readonly retryable = false;
  override name = "PermanentRenderError";
}

/** The queue refused a callback with a 4xx: the attempt is no longer ours (409) or the token is bad. */
export class CallbackRejectedError extends Error {
  override name = "CallbackRejectedError";
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** A callback could not be delivered after its bounded retries (network down, queue 5xx). */
export class CallbackUndeliveredError extends Error {
  override name = "CallbackUndeliveredError";
}

/** Why a render was stopped from outside: a cancel request, or the renderer shutting down. */
export class RenderStoppedError extends Error {
  override name = "RenderStoppedError";
  constructor(readonly kind: "cancel" | "shutdown") {
    super(kind === "cancel" ? "render cancelled" : "renderer shutting down");
  }
}

/** A render that hung on purpose (fault injection) gave up quietly after its lease had passed. */
export class HangExpiredError extends Error {
  override name = "HangExpiredError";
}

/** Resolves after `ms`, or rejects with the signal's reason as soon as it aborts (no dangling timer). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
