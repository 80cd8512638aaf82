// The render protocol as this service reads it: the wire format of shared/render_protocol.ts (what the worker
// sends to dispatch and cancel a render, what the callbacks carry back), plus this renderer's own rules for
// its input: the job types it can draw and the payload fields its card needs.
import { z } from "zod";
import { CancelNotice, DispatchBody } from "../shared/render_protocol.ts";
import type { JobType } from "./card_text.ts";
import { RendererHttpError } from "./errors.ts";

const JOB_TYPES = ["doubt", "topic_short", "daily_ca"] as const satisfies readonly JobType[];

/** Only what the card needs is checked; the queue has validated the rest, so extra fields are kept. */
const PayloadSchemas: Record<JobType, z.ZodType> = {
  doubt: z.looseObject({ question: z.string().min(1) }),
  topic_short: z.looseObject({ topic: z.string().min(1) }),
  daily_ca: z.looseObject({ date: z.string().min(1), headlines: z.array(z.string()).optional() }),
};

const DispatchSchema = DispatchBody.extend({ job_type: z.enum(JOB_TYPES) }).superRefine((body, ctx) => {
  const payload = PayloadSchemas[body.job_type].safeParse(body.payload);
  for (const issue of payload.success ? [] : payload.error.issues) {
    ctx.addIssue({ code: "custom", message: issue.message, path: ["payload", ...issue.path] });
  }
});

/** `POST /render`: one attempt of one job (of a type this renderer draws), and where to report on it. */
export type DispatchRequest = z.infer<typeof DispatchSchema>;

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

/** `POST /render/cancel`: the cancel notice, or a 400. No attempt means the latest attempt of the job. */
export function parseCancel(body: unknown): CancelNotice {
  const parsed = CancelNotice.safeParse(body);
  if (parsed.success) return parsed.data;
  throw new RendererHttpError(400, "invalid_request", 'Send {"job_id", "attempt"}.');
}

/** The steps a render reports, in order, with the progress each one stands for. */
export type Stage = "generating_screenshot" | "composing_video" | "saving_file";
