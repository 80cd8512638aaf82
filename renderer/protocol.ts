// The render protocol as this service reads it (API.md "Render services", README "Protocol"): what the
// worker sends to dispatch and cancel a render, and what the callbacks carry back.
import { z } from "zod";
import type { JobType } from "./card_text.ts";
import { RendererHttpError } from "./errors.ts";

const JOB_TYPES = ["doubt", "topic_short", "daily_ca"] as const satisfies readonly JobType[];

/** Only what the card needs is checked; the queue has validated the rest, so extra fields are kept. */
const PayloadSchemas: Record<JobType, z.ZodType> = {
  doubt: z.looseObject({ question: z.string().min(1) }),
  topic_short: z.looseObject({ topic: z.string().min(1) }),
  daily_ca: z.looseObject({ date: z.string().min(1), headlines: z.array(z.string()).optional() }),
};

const DispatchSchema = z.object({
  job_id: z.string().min(1).max(200),
  attempt: z.number().int().positive(),
  job_type: z.enum(JOB_TYPES),
  payload: z.record(z.string(), z.unknown()),
  callback: z.object({ url: z.url({ protocol: /^https?$/ }), token: z.string().min(1) }),
  deadline: z.string().refine((s) => !Number.isNaN(Date.parse(s)), "not a timestamp").nullish(),
}).superRefine((body, ctx) => {
  const payload = PayloadSchemas[body.job_type].safeParse(body.payload);
  for (const issue of payload.success ? [] : payload.error.issues) {
    ctx.addIssue({ code: "custom", message: issue.message, path: ["payload", ...issue.path] });
  }
});

const CancelSchema = z.object({
  job_id: z.string().min(1),
  attempt: z.number().int().positive().optional(),
});

/** `POST /render`: one attempt of one job, and where to report on it. */
export type DispatchRequest = z.infer<typeof DispatchSchema>;

/** `POST /render/cancel`: no attempt means the latest attempt of the job. */
export type CancelRequest = z.infer<typeof CancelSchema>;

/** The dispatch body, or a 400 whose `details` name each failing field. */
export function parseDispatch(body: unknown): DispatchRequest {
  const parsed = DispatchSchema.safeParse(body);
  if (parsed.success) return parsed.data;
  const details = parsed.error.issues.map((i) => ({ field: i.path.join("."), message: i.message }));
  throw new RendererHttpError(
    400,
    "invalid_request",
    "The dispatch body does not match the render protocol.",
    details,
  );
}

/** The cancel body, or a 400. */
export function parseCancel(body: unknown): CancelRequest {
  const parsed = CancelSchema.safeParse(body);
  if (parsed.success) return parsed.data;
  throw new RendererHttpError(400, "invalid_request", 'Send {"job_id", "attempt"}.');
}

/** The steps a render reports, in order, with the progress each one stands for. */
export type Stage = "generating_screenshot" | "composing_video" | "saving_file";

/** What a callback tells the queue about the attempt (each body also carries `job_id` and `attempt`). */
export type CallbackEvent =
  | { type: "progress"; stage: Stage; progress: number }
  | { type: "completed"; result: Record<string, unknown> }
  | { type: "failed"; error: string; retryable: boolean };
