// The render protocol in one place (API.md "Render services", docs/ARCHITECTURE.md "Render protocol
// details"): what the worker sends a render service (a dispatch, a cancel notice), what the service answers
// and reports back by callback, and what its answer means for the attempt (DispatchOutcome). Imported by
// the worker (dispatch.ts, worker_pass.ts), the reference renderer (renderer/protocol.ts) and the tests.
// It needs nothing but zod and the text rules of schemas.ts, so a render service can import it too.
import { z } from "zod";
import { jobId, looseJsonObject, MAX_INT4, safeText } from "./schemas.ts";

// The worker → a render service -----------------------------------------------------------------------------

/**
 * `POST <endpoint url>`: one attempt of one job, and where to report on it. The worker sends a UUID, the
 * attempt number, the job's payload, the callback of this attempt and the attempt's deadline (ISO time);
 * a render service reads the body with this schema and adds its own rules (its job types, their payloads).
 */
export const DispatchBody = z.object({
  job_id: z.string().min(1).max(200),
  attempt: z.number().int().positive(),
  job_type: z.string(),
  payload: z.record(z.string(), z.unknown()),
  callback: z.object({ url: z.url({ protocol: /^https?$/ }), token: z.string().min(1) }),
  deadline: z.string().refine((s) => !Number.isNaN(Date.parse(s)), "not a timestamp").nullish(),
});
export type DispatchBody = z.infer<typeof DispatchBody>;

/** `POST <endpoint url>/cancel` (best effort): that attempt was cancelled. No `attempt`: the job's latest. */
export const CancelNotice = z.object({
  job_id: z.string().min(1),
  attempt: z.number().int().positive().optional(),
});
export type CancelNotice = z.infer<typeof CancelNotice>;

// A render service → the queue --------------------------------------------------------------------------------

/** The finished video a render service reports: `video_url`, and whatever else it adds (file_size, …). */
export const RenderResult = looseJsonObject({ video_url: safeText().min(1) });
export type RenderResult = z.infer<typeof RenderResult>;

/** A render service's synchronous `200` answer to a dispatch: the render is done already. */
export const RenderAnswer = z.object({ result: RenderResult });

// Callbacks come from render services we do not control: extra fields are ignored, not refused.
const ATTEMPT = `attempt must be a whole number from 1 to ${MAX_INT4}.`;
const attemptRef = {
  job_id: jobId,
  attempt: z.int({ error: ATTEMPT, abort: true }).min(1, ATTEMPT).max(MAX_INT4, ATTEMPT),
};

/** `POST /video-queue-worker/events` with `Authorization: Bearer <callback.token>`. */
export const RenderEvent = z.discriminatedUnion("type", [
  z.object({
    ...attemptRef,
    type: z.literal("progress"),
    stage: safeText().min(1).max(100).optional(),
    progress: z.number().min(0).max(100).transform(Math.round),
  }),
  z.object({ ...attemptRef, type: z.literal("heartbeat") }),
  z.object({ ...attemptRef, type: z.literal("completed"), result: RenderResult }),
  z.object({
    ...attemptRef,
    type: z.literal("failed"),
    error: safeText().min(1).max(2000),
    retryable: z.boolean().default(true),
  }),
], { error: "type must be one of progress, heartbeat, completed, failed." });
export type RenderEvent = z.infer<typeof RenderEvent>;

/** What a render service reports in a callback, as it sends it, without the `job_id` and `attempt` of each. */
export type RenderReport = z.input<typeof RenderEvent> extends infer E
  ? E extends unknown ? Omit<E, keyof typeof attemptRef> : never
  : never;

// What an answer means ---------------------------------------------------------------------------------------

/** How long an endpoint leaves rotation: so many seconds, or SQL's default (mark_endpoint_unhealthy, 30 s). */
export type Cooldown = number | "default";

/**
 * What a render service's answer to a dispatch means for the attempt (shared/dispatch.ts decides, the
 * worker pass acts on it; the messages become the job's error_message, shown to its owner):
 * - `accepted`: 202, it will call back.
 * - `completed`: 200 with a valid result.
 * - `busy`: the job did not start there (429, a refused connection, a redirect): release it without using
 *   a retry, and keep the endpoint out of rotation (a 429's Retry-After, else 10 s; otherwise SQL's default).
 * - `failed`: the attempt failed, retryable or not (4xx other than 429: permanent; 5xx, a bad or over-long
 *   200: retryable; no answer in time: retryable, and the endpoint cools down as well).
 */
export type DispatchOutcome =
  | { kind: "accepted" }
  | { kind: "completed"; result: RenderResult }
  | { kind: "busy"; reason: string; cooldownSeconds: Cooldown }
  | { kind: "failed"; error: string; retryable: boolean; cooldownSeconds?: Cooldown };
