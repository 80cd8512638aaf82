// Request shapes (API.md "Endpoints"). Validation of form only: what a value means is SQL's business.
// Form includes what Postgres cannot take at all: every value that reaches SQL is checked here first, so
// hostile input is a 400 naming the field, never a failed statement (a 500). The render protocol's shapes
// (dispatch, callbacks) are in render_protocol.ts, built from the text and JSON rules here.
import { z } from "zod";

export const PRIORITIES = ["high", "medium", "low"] as const;
export const JOB_STATUSES = ["queued", "processing", "completed", "failed", "cancelled"] as const;
export const MAX_LIST_LIMIT = 200;

/** Largest value of Postgres `integer`, the type of attempt numbers. */
export const MAX_INT4 = 2_147_483_647;
/** How far ahead `run_at` may lie (job_wait_estimate counts the seconds until it as an `integer`). */
export const MAX_RUN_AT_DAYS_AHEAD = 365;
/** Deepest nesting of objects and arrays inside a loose JSON object (a callback's `result`). */
export const MAX_JSON_DEPTH = 32;

// Text ------------------------------------------------------------------------------------------------------

/**
 * Whether Postgres can store `s` as sent: `text` and `jsonb` refuse NUL (U+0000), and a lone UTF-16
 * surrogate has no UTF-8 form (jsonb refuses its escape; text would silently get U+FFFD instead).
 */
export function isSafeText(s: string): boolean {
  return !s.includes("\u0000") && s.isWellFormed();
}

const UNSAFE = "must not contain NUL (\\u0000) characters or unpaired UTF-16 surrogates.";
const UNSAFE_TEXT = `Text ${UNSAFE}`;

/** A string that Postgres can store as sent; every string field of every request is one. */
export const safeText = () => z.string().refine(isSafeText, { error: UNSAFE_TEXT, abort: true });

export type JsonIssue = { path: (string | number)[]; message: string };

/**
 * What Postgres would refuse in a JSON value that no schema describes field by field: keys or strings
 * that are not safe text, and nesting deeper than MAX_JSON_DEPTH (jsonb's parser recurses). Iterative,
 * so no input is too deep to check; at most `limit` issues.
 */
export function jsonIssues(value: unknown, basePath: (string | number)[] = [], limit = 10): JsonIssue[] {
  const issues: JsonIssue[] = [];
  const stack: { value: unknown; path: (string | number)[]; depth: number }[] = [
    { value, path: basePath, depth: 0 },
  ];
  while (stack.length > 0 && issues.length < limit) {
    const { value, path, depth } = stack.pop()!;
    if (typeof value === "string") {
      if (!isSafeText(value)) issues.push({ path, message: UNSAFE_TEXT });
    } else if (typeof value === "object" && value !== null) {
      if (depth >= MAX_JSON_DEPTH) {
        issues.push({ path, message: `JSON may nest at most ${MAX_JSON_DEPTH} levels deep.` });
        continue;
      }
      const entries = Array.isArray(value) ? value.entries() : Object.entries(value);
      for (const [key, item] of entries) {
        if (typeof key === "string" && !isSafeText(key)) {
          issues.push({ path: [...path, key], message: `Field names ${UNSAFE}` });
        }
        stack.push({ value: item, path: [...path, key], depth: depth + 1 });
      }
    }
  }
  return issues.slice(0, limit);
}

/**
 * A loose object (extra fields kept, as render services send them): the `shape` fields are checked by
 * their schemas, every other field deeply by jsonIssues.
 */
export function looseJsonObject<S extends z.core.$ZodLooseShape>(shape: S) {
  return z.looseObject(shape).superRefine((value, ctx) => {
    const extra = Object.fromEntries(Object.entries(value).filter(([key]) => !Object.hasOwn(shape, key)));
    for (const { path, message } of jsonIssues(extra)) ctx.addIssue({ code: "custom", path, message });
  });
}

// Shared fields ---------------------------------------------------------------------------------------------

/** A job's id, as every request and callback names it. */
export const jobId = z.guid("job_id must be a UUID.");
const language = safeText().min(1).max(35).optional();
/** The form of a catalog name (a renderer, a job type); which ones exist is SQL's to say (VQ400 lists them). */
const catalogName = (field: string) =>
  z.string().max(63).regex(/^[a-z][a-z0-9_]*$/, `${field} must be a name of a to z, 0 to 9 and _.`);
const rendererName = catalogName("renderer");

/** An ISO 8601 time with an offset, from 1970 on and at most MAX_RUN_AT_DAYS_AHEAD days ahead. */
/** A time a caller may schedule by (run_at, expires_at): ISO 8601 with offset, from 1970 to a year ahead. */
const schedulingTime = (field: string) =>
  z.iso.datetime({ offset: true, message: `${field} must be an ISO 8601 time.`, abort: true })
    .refine(
      (s) => {
        const at = Date.parse(s);
        return at >= 0 && at <= Date.now() + MAX_RUN_AT_DAYS_AHEAD * 86_400_000;
      },
      { error: `${field} must lie between 1970 and ${MAX_RUN_AT_DAYS_AHEAD} days from now.` },
    );

// Payloads: one strict schema per job type; unknown fields are rejected.
export const payloadSchemas = {
  doubt: z.strictObject({ question: safeText().min(1).max(2000), language }),
  topic_short: z.strictObject({
    topic: safeText().min(1).max(200),
    duration_seconds: z.int().min(15).max(180).optional(),
    language,
  }),
  daily_ca: z.strictObject({
    date: z.iso.date("date must be YYYY-MM-DD."),
    headlines: z.array(safeText()).max(20).optional(),
    language,
  }),
};

/** The job types a payload schema exists for (SQL's job_types table decides which may be enqueued). */
export const JOB_TYPES = Object.keys(payloadSchemas) as (keyof typeof payloadSchemas)[];

const enqueueOptions = {
  idempotency_key: safeText().min(1).max(128).optional(),
  priority: z.enum(PRIORITIES).optional(),
  run_at: schedulingTime("run_at").optional(),
  expires_at: schedulingTime("expires_at").optional(),
  renderer: rendererName.optional(),
};

/** `POST /enqueue` */
export const EnqueueRequest = z.discriminatedUnion("job_type", [
  z.strictObject({ job_type: z.literal("doubt"), payload: payloadSchemas.doubt, ...enqueueOptions }),
  z.strictObject({
    job_type: z.literal("topic_short"),
    payload: payloadSchemas.topic_short,
    ...enqueueOptions,
  }),
  z.strictObject({ job_type: z.literal("daily_ca"), payload: payloadSchemas.daily_ca, ...enqueueOptions }),
], { error: `job_type must be one of ${JOB_TYPES.join(", ")}.` });
export type EnqueueRequest = z.infer<typeof EnqueueRequest>;

/** `POST /cancel` */
export const CancelRequest = z.strictObject({ job_id: jobId, reason: safeText().max(1000).optional() });
export type CancelRequest = z.infer<typeof CancelRequest>;

/** `POST /status/retry` (admins) */
export const RetryRequest = z.strictObject({ job_id: jobId });

/** `POST /status/pause` and `POST /status/resume` (admins): `{}` for the whole queue, or one renderer. */
export const PauseRequest = z.strictObject({ renderer: rendererName.optional() });

/** What `GET /status?view=jobs` filters by (each optional, combined with "and"). */
const jobListFilters = {
  status: z.enum(JOB_STATUSES).optional(),
  job_type: catalogName("job_type").optional(),
  renderer: rendererName.optional(),
  user_id: z.guid("user_id must be a UUID.").optional(),
  limit: z.coerce.number().pipe(z.int().min(1).max(MAX_LIST_LIMIT)).optional(),
};
export type JobListFilters = { [K in keyof typeof jobListFilters]?: z.infer<(typeof jobListFilters)[K]> };

/**
 * `GET /status` query: `job_id` for one job; for admins nothing (stats), `view=jobs` with filters (the job
 * list), `view=history` (24 hours of outcomes), `view=alerts` (thresholds and alerts in force) or
 * `view=peak` (the peak windows).
 */
export const StatusQuery = z.strictObject({
  job_id: jobId.optional(),
  view: z.enum(["jobs", "history", "alerts", "peak"], "view must be jobs, history, alerts or peak.")
    .optional(),
  ...jobListFilters,
}).superRefine((query, ctx) => {
  if (query.view === "jobs") return;
  for (const key of Object.keys(jobListFilters)) {
    if (key in query) ctx.addIssue({ code: "custom", path: [key], message: `${key} goes with view=jobs.` });
  }
});
export type StatusQuery = z.infer<typeof StatusQuery>;

// Response shapes (API.md "The job", "Endpoints", "Errors") --------------------------------------------------
// What the functions answer, for the typed client (client/) and the OpenAPI document (scripts/openapi.ts).
// Objects are loose where API.md says "at least", so a server that adds a field never breaks a client.

/** The contract's error code for each status it names (API.md "Errors"). */
export const ERROR_CODES = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
  500: "internal",
  503: "unavailable",
} as const;
export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

/** Every non-2xx answer: `details` lists failing fields (400) or says when to retry (429). */
export const ErrorBody = z.object({
  error: z.object({
    code: z.enum(Object.values(ERROR_CODES)),
    message: z.string(),
    details: z.unknown().optional(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

export const WAIT_REASONS = [
  "paused",
  "scheduled",
  "retry_backoff",
  "no_endpoint",
  "user_limit",
  "renderer_busy",
  "capacity",
  "behind",
] as const;
/** The statuses a job ends in; it never changes again. */
export const FINISHED_STATUSES = ["completed", "failed", "cancelled"] as const;

const isoTime = z.iso.datetime({ offset: true });
const count = z.int().min(0);

/** A completed job's result: at least `video_url`; more where the render service gives it. */
export const JobResult = z.looseObject({ video_url: z.string() });
export type JobResult = z.infer<typeof JobResult>;

/** API.md's Job, as every endpoint (and every Realtime `job` event) returns it: public.job_to_json(). */
export const Job = z.object({
  id: z.guid(),
  job_type: z.enum(JOB_TYPES),
  priority: z.enum(PRIORITIES),
  status: z.enum(JOB_STATUSES),
  renderer: z.string(),
  payload: z.record(z.string(), z.unknown()),
  /** 1-based among queued jobs in claim order; null unless queued. */
  queue_position: z.int().min(1).nullable(),
  /** Seconds until it should start; null unless queued (and while its queue or renderer is paused). */
  estimated_wait_seconds: z.number().min(0).nullable(),
  /** Why a queued job has not started, the first that applies; null unless queued. */
  wait_reason: z.enum(WAIT_REASONS).nullable(),
  /** Whether the estimate rests on recent render times or the configured default; null unless queued. */
  estimate_basis: z.enum(["history", "default"]).nullable(),
  expires_at: isoTime.nullable(),
  progress: z.number().min(0).max(100),
  stage: z.string().nullable(),
  retry_count: count,
  max_retries: count,
  next_attempt_at: isoTime.nullable(),
  error_message: z.string().nullable(),
  result: JobResult.nullable(),
  created_at: isoTime,
  started_at: isoTime.nullable(),
  completed_at: isoTime.nullable(),
  updated_at: isoTime,
});
export type Job = z.infer<typeof Job>;

/** API.md's Stats, the object get_queue_stats() returns. */
export const Stats = z.looseObject({
  queued: count,
  processing: count,
  completed_today: count,
  failed_today: count,
  cancelled_today: count,
  expired_today: count,
  paused: z.boolean(),
  by_priority: z.record(z.enum(PRIORITIES), z.looseObject({ queued: count, processing: count })),
  by_renderer: z.record(z.string(), z.looseObject({ processing: count, limit: count, paused: z.boolean() })),
  capacity: z.looseObject({
    max_concurrent: count,
    effective: count,
    peak: z.boolean(),
    multiplier: z.number(),
  }),
  avg_wait_seconds: z.number().nullable(),
  avg_processing_seconds: z.number().nullable(),
  throughput_last_hour: count,
  oldest_queued_seconds: count.nullable(),
  generated_at: isoTime,
});
export type Stats = z.infer<typeof Stats>;

/** One hour of the admin history (`GET /status?view=history`): jobs that finished in it. */
export const HourlyPoint = z.object({ hour: isoTime, completed: count, failed: count });
export type HourlyPoint = z.infer<typeof HourlyPoint>;

/** `GET /status?view=alerts`: the thresholds (job_queue_config.alert_*) and the alerts in force. */
export const QueueAlerts = z.looseObject({
  thresholds: z.looseObject({
    queue_depth: count,
    oldest_queued_seconds: count,
    failure_rate: z.number().min(0).max(1),
  }),
  active: z.array(z.looseObject({
    kind: z.enum(["queue_depth", "oldest_queued", "failure_rate", "no_healthy_endpoint"]),
    /** The figure that crossed its threshold: jobs, seconds, a 0..1 rate, or a renderer's queued jobs. */
    value: z.number(),
    threshold: z.number(),
    /** no_healthy_endpoint: which renderer. */
    renderer: z.string().optional(),
    message: z.string(),
  })),
  generated_at: isoTime,
});
export type QueueAlerts = z.infer<typeof QueueAlerts>;
export type QueueAlert = QueueAlerts["active"][number];

/** `GET /status?view=peak`: the peak windows behind Stats' capacity.peak. */
export const PeakSchedule = z.looseObject({
  time_zone: z.string(),
  multiplier: z.number(),
  /** Local times "HH:MM" in time_zone; start > end crosses midnight. */
  windows: z.array(z.object({ start: z.string(), end: z.string(), label: z.string().nullable() })),
  peak: z.boolean(),
  /** The next start or end of a window after now; null when there is no window. */
  next_boundary_at: isoTime.nullable(),
});
export type PeakSchedule = z.infer<typeof PeakSchedule>;

/** `POST /video-queue-worker`: what one worker pass did. */
export const WorkerPassSummary = z.looseObject({
  recovered: count,
  claimed: count,
  dispatched: count,
  released: count,
  capacity: z.record(z.string(), z.unknown()),
});

/** The answers' envelopes. */
export const JobAnswer = z.object({ job: Job });
export const JobsAnswer = z.object({ jobs: z.array(Job) });
export const StatsAnswer = z.object({ stats: Stats });
export const HistoryAnswer = z.object({ history: z.array(HourlyPoint) });
export const AlertsAnswer = z.object({ alerts: QueueAlerts });
export const PeakAnswer = z.object({ peak: PeakSchedule });
