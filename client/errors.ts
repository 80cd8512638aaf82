// Typed errors: one class per error code of the contract (API.md "Errors"), built from the error body.
//   try { await queue.cancel(id) } catch (err) { if (err instanceof ConflictError) … }
import { ERROR_CODES, ErrorBody, type ErrorCode } from "../shared/schemas.ts";

/** Codes beyond the contract's: the request never got an answer, or the answer was not the contract's shape. */
export type ClientErrorCode = "network_error" | "invalid_response";

/** Every error the client throws (but an abort, which rejects with the signal's reason). */
export class QueueError extends Error {
  constructor(
    /** The contract's code (`not_found`, …), or a ClientErrorCode. */
    readonly code: ErrorCode | ClientErrorCode,
    /** The HTTP status; 0 when no answer arrived. */
    readonly status: number,
    message: string,
    /** The body's `details`: the failing fields of a 400, `retry_after_seconds` of a 429. */
    readonly details?: unknown,
    options?: ErrorOptions,
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

type Init = { status: number; message: string; details?: unknown; retryAfterSeconds?: number };

/** A class for one contract code: its instances carry that code. */
function contractError<C extends ErrorCode>(code: C) {
  return class extends QueueError {
    declare readonly code: C;
    constructor(init: Init) {
      super(code, init.status, init.message, init.details);
    }
  };
}

/** A 429 or 503: when to try again, from `Retry-After` (else the body, else a default). */
function retryableError<C extends "rate_limited" | "unavailable">(code: C, defaultSeconds: number) {
  return class extends contractError(code) {
    readonly retryAfterSeconds: number;
    constructor(init: Init) {
      super(init);
      this.retryAfterSeconds = init.retryAfterSeconds ?? defaultSeconds;
    }
  };
}

/** One field of a 400's `details`. */
export type FieldIssue = { field: string; message: string };

/** 400: malformed, wrong types, a payload failing its schema; `issues` lists the failing fields. */
export class InvalidRequestError extends contractError("invalid_request") {
  get issues(): FieldIssue[] {
    return Array.isArray(this.details) ? this.details as FieldIssue[] : [];
  }
}
/** 401: no credential, a bad signature, an expired token. */
export class UnauthorizedError extends contractError("unauthorized") {}
/** 403: a valid caller asking for what it may not do (a non-admin reading stats or setting priority). */
export class ForbiddenError extends contractError("forbidden") {}
/** 404: an unknown job, or one that is not the caller's. */
export class NotFoundError extends contractError("not_found") {}
/** 405: the wrong verb for the path. */
export class MethodNotAllowedError extends contractError("method_not_allowed") {}
/** 409: e.g. cancelling a finished job, retrying one that has not failed. */
export class ConflictError extends contractError("conflict") {}
/** 413: the body is over the limit (64 KiB). */
export class PayloadTooLargeError extends contractError("payload_too_large") {}
/** 415: the body was not sent as JSON. */
export class UnsupportedMediaTypeError extends contractError("unsupported_media_type") {}
/** 429: a per-user limit (queued jobs, enqueues per minute); try again after `retryAfterSeconds`. */
export class RateLimitedError extends retryableError("rate_limited", 60) {}
/** 500: something unexpected on the server (also any status the contract does not name, e.g. a proxy's 502). */
export class InternalError extends contractError("internal") {}
/** 503: the database is unreachable; try again after `retryAfterSeconds`. */
export class UnavailableError extends retryableError("unavailable", 5) {}
/** The request got no answer (connection refused, DNS, reset); `cause` holds the underlying error. */
export class NetworkError extends QueueError {
  constructor(cause: unknown) {
    super(
      "network_error",
      0,
      "The queue could not be reached; check the connection and try again.",
      undefined,
      {
        cause,
      },
    );
  }
}
/** The answer did not have the contract's shape; `details` holds what was wrong. */
export class InvalidResponseError extends QueueError {
  constructor(status: number, details: unknown) {
    super("invalid_response", status, "The queue answered in an unexpected shape.", details);
  }
}

const CLASSES: Record<ErrorCode, new (init: Init) => QueueError> = {
  invalid_request: InvalidRequestError,
  unauthorized: UnauthorizedError,
  forbidden: ForbiddenError,
  not_found: NotFoundError,
  method_not_allowed: MethodNotAllowedError,
  conflict: ConflictError,
  payload_too_large: PayloadTooLargeError,
  unsupported_media_type: UnsupportedMediaTypeError,
  rate_limited: RateLimitedError,
  internal: InternalError,
  unavailable: UnavailableError,
};

/**
 * The typed error for a non-2xx answer: by the body's `code` when it is the contract's error body, else by
 * the status (InternalError for a status the contract does not name, e.g. a proxy's 502).
 */
export async function errorFromResponse(response: Response): Promise<QueueError> {
  const text = await response.text().catch(() => "");
  const body = ErrorBody.safeParse(parseJson(text));
  const code = body.success
    ? body.data.error.code
    : ERROR_CODES[response.status as keyof typeof ERROR_CODES] ?? "internal";
  const details = body.success ? body.data.error.details : undefined;
  const message = body.success
    ? body.data.error.message
    : `The queue answered ${response.status} ${response.statusText}`.trim() + ".";
  return new CLASSES[code]({
    status: response.status,
    message,
    details,
    retryAfterSeconds: retryAfter(response.headers.get("retry-after"), details),
  });
}

/** Seconds from `Retry-After` (seconds or an HTTP date), else the body's `details.retry_after_seconds`. */
function retryAfter(header: string | null, details: unknown): number | undefined {
  if (header) {
    const seconds = /^\d+$/.test(header.trim())
      ? Number(header)
      : Math.ceil((Date.parse(header) - Date.now()) / 1000);
    if (Number.isFinite(seconds)) return Math.max(0, seconds);
  }
  const fromBody = (details as { retry_after_seconds?: unknown } | undefined)?.retry_after_seconds;
  return typeof fromBody === "number" ? fromBody : undefined;
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
