// Request shapes (API.md "Endpoints"). Validation of form only: what a value means is SQL's business.
import { z } from "zod";

export const JOB_TYPES = ["doubt", "topic_short", "daily_ca"] as const;
export const PRIORITIES = ["high", "medium", "low"] as const;
export const RENDERERS = ["manim", "revideo", "orchestrator"] as const;
export const JOB_STATUSES = ["queued", "processing", "completed", "failed", "cancelled"] as const;
export const MAX_LIST_LIMIT = 200;

const jobId = z.guid("job_id must be a UUID.");
const language = z.string().min(1).max(35).optional();

// Payloads: one strict schema per job type; unknown fields are rejected.
export const payloadSchemas = {
  doubt: z.strictObject({ question: z.string().min(1).max(2000), language }),
  topic_short: z.strictObject({
    topic: z.string().min(1).max(200),
    duration_seconds: z.int().min(15).max(180).optional(),
    language,
  }),
  daily_ca: z.strictObject({
    date: z.iso.date("date must be YYYY-MM-DD."),
    headlines: z.array(z.string()).max(20).optional(),
    language,
  }),
};

const enqueueOptions = {
  idempotency_key: z.string().min(1).max(128).optional(),
  priority: z.enum(PRIORITIES).optional(),
  run_at: z.iso.datetime({ offset: true, message: "run_at must be an ISO 8601 time." }).optional(),
  renderer: z.enum(RENDERERS).optional(),
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
export const CancelRequest = z.strictObject({ job_id: jobId, reason: z.string().max(1000).optional() });
export type CancelRequest = z.infer<typeof CancelRequest>;

/** `POST /status/retry` (admins) */
export const RetryRequest = z.strictObject({ job_id: jobId });

/** `GET /status` query: `job_id` for one job, `view=jobs` for the admin list, nothing for admin stats. */
export const StatusQuery = z.strictObject({
  job_id: jobId.optional(),
  view: z.literal("jobs", "view must be jobs.").optional(),
  status: z.enum(JOB_STATUSES).optional(),
  limit: z.coerce.number().pipe(z.int().min(1).max(MAX_LIST_LIMIT)).optional(),
});
export type StatusQuery = z.infer<typeof StatusQuery>;

// Callbacks come from render services we do not control: extra fields are ignored, not refused.
const attemptRef = { job_id: jobId, attempt: z.int().min(1) };

/** `POST /video-queue-worker/events` */
export const RenderEvent = z.discriminatedUnion("type", [
  z.object({
    ...attemptRef,
    type: z.literal("progress"),
    stage: z.string().min(1).max(100).optional(),
    progress: z.number().min(0).max(100).transform(Math.round),
  }),
  z.object({
    ...attemptRef,
    type: z.literal("completed"),
    result: z.looseObject({ video_url: z.string().min(1) }),
  }),
  z.object({
    ...attemptRef,
    type: z.literal("failed"),
    error: z.string().min(1).max(2000),
    retryable: z.boolean().default(true),
  }),
], { error: "type must be one of progress, completed, failed." });
export type RenderEvent = z.infer<typeof RenderEvent>;

/** A render service's synchronous `200` answer: the finished result. */
export const RenderResult = z.object({ result: z.looseObject({ video_url: z.string().min(1) }) });
