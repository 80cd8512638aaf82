// The typed client of the video queue (README "Client"): createQueueClient on a supabase-js client.
//   const queue = createQueueClient(supabase);
//   const { job } = await queue.enqueue({ job_type: "doubt", payload: { question: "…" } });
//   const done = await queue.waitForCompletion(job.id, { onProgress: (j) => console.log(j.stage, j.progress) });
// Types come from the zod schemas in shared/schemas.ts, the ones the functions validate with.
export {
  type AdminClient,
  type CallOptions,
  createQueueClient,
  type JobListFilter,
  type QueueClient,
  type QueueClientOptions,
} from "./client.ts";
export type { ChannelState } from "./channels.ts";
export {
  type FinishedJob,
  type FollowOptions,
  isFinished,
  type ProgressListener,
  type UpdateSource,
} from "./follow.ts";
export * from "./errors.ts";
export type {
  EnqueueRequest,
  ErrorCode,
  HourlyPoint,
  Job,
  JobResult,
  PeakSchedule,
  QueueAlert,
  QueueAlerts,
  Stats,
} from "../shared/schemas.ts";
