// Every failure becomes the contract's error body here, and only here (API.md "Errors").
import { ZodError } from "zod";
import { log } from "./log.ts";
import { ERROR_CODES } from "./schemas.ts";

/** The contract's code for each status it names. */
const CODES: Record<number, string> = ERROR_CODES;

/** Seconds a client should wait when the database is unreachable. */
const UNAVAILABLE_RETRY_AFTER_SECONDS = 5;

/** An error whose status, message and details are meant for the caller. */
export class HttpError extends Error {
  readonly code: string;
  constructor(
    readonly status: number,
    message: string,
    readonly details?: unknown,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
    this.code = CODES[status] ?? "internal";
  }
}

/** Maps anything thrown while handling a request to the contract's status, body and headers. */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof ZodError) {
    return new HttpError(400, "The request does not match the expected shape; see details.", zodDetails(err));
  }
  const sqlState = (err as { code?: unknown })?.code;
  if (typeof sqlState === "string" && /^VQ\d{3}$/.test(sqlState)) return fromQueueSqlError(err as SqlError);
  if (isConnectionFailure(err)) {
    return new HttpError(503, "The database is unreachable; try again shortly.", undefined, {
      "Retry-After": String(UNAVAILABLE_RETRY_AFTER_SECONDS),
    });
  }
  log("internal_error", { error: describe(err) });
  return new HttpError(500, "Something went wrong on our side; try again later.");
}

/** The Response for an error; CORS headers are added by the router. */
export function errorResponse(err: unknown): Response {
  const e = toHttpError(err);
  const error: Record<string, unknown> = { code: e.code, message: e.message };
  if (e.details !== undefined) error.details = e.details;
  return Response.json({ error }, { status: e.status, headers: e.headers });
}

type SqlError = { code: string; message: string; detail?: string; hint?: string };

// SQLSTATE VQnnn carries HTTP status nnn (docs/ARCHITECTURE.md); MESSAGE is written for the caller.
function fromQueueSqlError(err: SqlError): HttpError {
  const status = Number(err.code.slice(2));
  if (!(status in CODES)) return new HttpError(500, "Something went wrong on our side; try again later.");
  const message = [err.message, err.hint].filter((s): s is string => !!s).map(sentence).join(" ");
  if (status !== 429) return new HttpError(status, message);
  const retryAfter = retryAfterSeconds(err.detail);
  return new HttpError(status, message, { retry_after_seconds: retryAfter }, {
    "Retry-After": String(retryAfter),
  });
}

/** "job is done" → "Job is done.": SQL messages read as sentences in the error body. */
function sentence(text: string): string {
  const trimmed = text.trim();
  return trimmed.charAt(0).toUpperCase() + trimmed.slice(1) + (/[.!?]$/.test(trimmed) ? "" : ".");
}

function retryAfterSeconds(detail?: string): number {
  try {
    const n = Number(JSON.parse(detail ?? "{}").retry_after_seconds);
    if (Number.isFinite(n) && n > 0) return Math.ceil(n);
  } catch { /* fall through to a safe default */ }
  return 60;
}

/** `details` lists each failing field by its dotted path. */
function zodDetails(err: ZodError): { field: string; message: string }[] {
  return err.issues.flatMap((issue) => {
    const path = issue.path.map(String);
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => ({ field: [...path, key].join("."), message: "Unknown field." }));
    }
    return [{ field: path.join(".") || "(body)", message: issue.message }];
  });
}

// A failure of the connection (as opposed to an error raised by the SQL): what postgres.js and the runtime
// report for a socket that failed or closed, and the SQLSTATEs of a server shutting down or refusing
// connections (class 08, 57P0x). The database layer discards the pool on these; callers get 503.
const CONNECTION_FAILURES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "ETIMEDOUT",
  "EPIPE",
  "CONNECT_TIMEOUT",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "53300", // too_many_connections
  "57P01", // admin_shutdown
  "57P02", // crash_shutdown
  "57P03", // cannot_connect_now
]);

/** Did the connection to the database fail (rather than the SQL)? */
export function isConnectionFailure(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === "string" && (CONNECTION_FAILURES.has(code) || code.startsWith("08"))) return true;
  return err instanceof Deno.errors.ConnectionRefused || err instanceof Deno.errors.ConnectionReset ||
    err instanceof Deno.errors.BrokenPipe;
}

/** What the logs may say about an unexpected error: its kind and message, never request data. */
function describe(err: unknown): Record<string, unknown> {
  if (err instanceof Error) {
    return { name: err.name, message: err.message, code: (err as { code?: unknown }).code };
  }
  return { value: String(err) };
}
