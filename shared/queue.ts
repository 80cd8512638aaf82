// The SQL API of docs/ARCHITECTURE.md (schema `queue`, not served by the Data API), one typed call each.
// SQL owns every queue rule; these only call it.
import type postgres from "postgres";
import type { Caller, ServiceCaller } from "./auth.ts";
import { asCaller } from "./db.ts";
import type { QueueMetrics } from "./metrics.ts";
import type {
  EnqueueRequest,
  HourlyPoint,
  Job,
  JobListFilters,
  PeakSchedule,
  QueueAlerts,
  Stats,
} from "./schemas.ts";

// Job and Stats are the response schemas' types (schemas.ts), the one description of API.md's shapes.
export type { Job, Stats } from "./schemas.ts";

/** One job claimed by a worker pass: everything needed to dispatch it. */
export type Claim = {
  job_id: string;
  attempt: number;
  callback_token: string;
  job_type: string;
  renderer: string;
  payload: Record<string, unknown>;
  deadline: string;
  endpoint: { id: string; url: string };
};

export type RecoveredAttempt = { job_id: string; attempt: number; outcome: "retry_scheduled" | "failed" };
export type CancelOutcome = { job: Job; cancelled_attempt: { attempt: number; endpoint_url: string } | null };

const SERVICE: ServiceCaller = { kind: "service" };

// Callers' calls -----------------------------------------------------------------------------------------

export function enqueueJob(caller: Caller, req: EnqueueRequest): Promise<{ job: Job; created: boolean }> {
  return asCaller(caller, (tx) =>
    tx`select queue.enqueue_job(
         p_job_type => ${req.job_type}, p_payload => ${tx.json(req.payload)},
         p_idempotency_key => ${req.idempotency_key ?? null}, p_priority => ${req.priority ?? null},
         p_run_at => ${req.run_at ?? null}::timestamptz, p_renderer => ${req.renderer ?? null},
         p_expires_at => ${req.expires_at ?? null}::timestamptz) as result`);
}

export function cancelJob(caller: Caller, jobId: string, reason?: string): Promise<CancelOutcome> {
  return asCaller(
    caller,
    (tx) => tx`select queue.cancel_job(p_job_id => ${jobId}::uuid, p_reason => ${reason ?? null}) as result`,
  );
}

/** Admin: a failed job goes back to the queue (VQ409 unless failed, VQ403 for non-admins). */
export function retryJob(caller: Caller, jobId: string): Promise<Job> {
  return asCaller(caller, (tx) => tx`select queue.retry_job(p_job_id => ${jobId}::uuid) as result`);
}

export function getJob(caller: Caller, jobId: string): Promise<Job> {
  return asCaller(caller, (tx) => tx`select queue.get_job(p_job_id => ${jobId}::uuid) as result`);
}

/** Admin: jobs newest first, filtered (an unknown job type or renderer is VQ400). */
export function listJobs(caller: Caller, filters: JobListFilters = {}): Promise<Job[]> {
  return asCaller(
    caller,
    (tx) =>
      tx`select queue.list_jobs(p_status => ${filters.status ?? null}, p_job_type => ${
        filters.job_type ?? null
      },
           p_renderer => ${filters.renderer ?? null}, p_user_id => ${filters.user_id ?? null}::uuid,
           p_limit => ${filters.limit ?? 50}::int) as result`,
  );
}

/** Admin: completed and failed jobs per hour, the last 24 hours, oldest first. */
export function getQueueHistory(caller: Caller): Promise<HourlyPoint[]> {
  return asCaller(caller, (tx) => tx`select queue.get_queue_history() as result`);
}

/** Admin: the alert thresholds (job_queue_config.alert_*) and the alerts in force. */
export function getQueueAlerts(caller: Caller): Promise<QueueAlerts> {
  return asCaller(caller, (tx) => tx`select queue.get_queue_alerts() as result`);
}

/** Admin: pauses or resumes the whole queue (no renderer) or one renderer; answers the stats. */
export function setPaused(caller: Caller, paused: boolean, renderer?: string): Promise<Stats> {
  return asCaller(
    caller,
    (tx) => tx`select queue.set_paused(p_paused => ${paused}, p_renderer => ${renderer ?? null}) as result`,
  );
}

export function getQueueStats(caller: Caller): Promise<Stats> {
  return asCaller(caller, (tx) => tx`select queue.get_queue_stats() as result`);
}

export function getQueueMetrics(caller: Caller): Promise<QueueMetrics> {
  return asCaller(caller, (tx) => tx`select queue.get_queue_metrics() as result`);
}

/** Admin: the peak windows, the multiplier and the next window boundary. */
export function getPeakSchedule(caller: Caller): Promise<PeakSchedule> {
  return asCaller(caller, (tx) => tx`select queue.get_peak_schedule() as result`);
}

// The seed's queue-utils names, kept as thin reads of what SQL computes.

/** 1-based place among queued jobs, or null when the job is not queued. */
export async function getQueuePosition(caller: Caller, jobId: string): Promise<number | null> {
  return (await getJob(caller, jobId)).queue_position;
}

/** Seconds until the job is expected to start, or null when it is not queued. */
export async function calculateEstimatedWaitTime(caller: Caller, jobId: string): Promise<number | null> {
  return (await getJob(caller, jobId)).estimated_wait_seconds;
}

/** Whether the peak-hour capacity multiplier is in force now. */
export async function isPeakHour(caller: Caller = SERVICE): Promise<boolean> {
  return (await getQueueStats(caller)).capacity.peak;
}

// The worker's calls (service_role) -----------------------------------------------------------------------

export function recoverExpiredAttempts(): Promise<RecoveredAttempt[]> {
  return asCaller(SERVICE, (tx) => tx`select queue.recover_expired_attempts() as result`);
}

/**
 * Realtime: sends the waiting jobs whose place moved meaningfully their `job` event, and the stats on
 * `queue:admin` when they changed (bounded work per call; once per pass). Returns the stats.
 */
export function publishQueueChanges(): Promise<Stats> {
  return asCaller(SERVICE, (tx) => tx`select queue.publish_queue_changes() as result`);
}

export function claimJobs(workerId: string): Promise<Claim[]> {
  return asCaller(SERVICE, (tx) => tx`select queue.claim_jobs(p_worker_id => ${workerId}) as result`);
}

export function releaseJob(jobId: string, attempt: number): Promise<Job> {
  return asCaller(
    SERVICE,
    (tx) => tx`select queue.release_job(p_job_id => ${jobId}::uuid, p_attempt => ${attempt}::int) as result`,
  );
}

export function reportProgress(
  jobId: string,
  attempt: number,
  token: string,
  stage: string | null,
  progress: number,
): Promise<Job> {
  return asCaller(
    SERVICE,
    (tx) =>
      tx`select queue.report_progress(p_job_id => ${jobId}::uuid, p_attempt => ${attempt}::int,
         p_token => ${token}, p_stage => ${stage}, p_progress => ${progress}::int) as result`,
  );
}

/** A heartbeat callback: a sign of life that extends the current attempt's lease, nothing else. */
export function recordHeartbeat(jobId: string, attempt: number, token: string): Promise<Job> {
  return asCaller(
    SERVICE,
    (tx) =>
      tx`select queue.record_heartbeat(p_job_id => ${jobId}::uuid, p_attempt => ${attempt}::int,
         p_token => ${token}) as result`,
  );
}

export function completeJob(
  jobId: string,
  attempt: number,
  token: string,
  result: Record<string, unknown>,
): Promise<Job> {
  return asCaller(
    SERVICE,
    (tx) =>
      tx`select queue.complete_job(p_job_id => ${jobId}::uuid, p_attempt => ${attempt}::int,
         p_token => ${token}, p_result => ${tx.json(result as postgres.JSONValue)}) as result`,
  );
}

export function failJob(
  jobId: string,
  attempt: number,
  token: string,
  error: string,
  retryable: boolean,
): Promise<Job> {
  return asCaller(
    SERVICE,
    (tx) =>
      tx`select queue.fail_job(p_job_id => ${jobId}::uuid, p_attempt => ${attempt}::int,
         p_token => ${token}, p_error => ${error}, p_retryable => ${retryable}) as result`,
  );
}

/** Takes a render endpoint out of rotation for a cool-down after it refused a connection or timed out. */
export async function markEndpointUnhealthy(endpointId: string, cooldownSeconds?: number): Promise<void> {
  await asCaller(
    SERVICE,
    (tx) =>
      cooldownSeconds === undefined
        ? tx`select queue.mark_endpoint_unhealthy(p_endpoint_id => ${endpointId}::uuid) as result`
        : tx`select queue.mark_endpoint_unhealthy(p_endpoint_id => ${endpointId}::uuid,
                                                    p_cooldown_seconds => ${cooldownSeconds}::int) as result`,
  );
}

// Webhooks (the worker, service_role) ----------------------------------------------------------------------

/** One due webhook delivery, leased to this worker for one attempt: what sending it needs. */
export type WebhookDelivery = {
  id: number;
  attempt: number;
  job_id: string;
  event_type: "job.completed" | "job.failed" | "job.cancelled";
  /** webhook-id: the same on every attempt. */
  message_id: string;
  url: string;
  /** whsec_<base64> from Vault; null when the endpoint's secret is missing there. */
  secret: string | null;
  /** The exact bytes to send (and sign). */
  body: string;
};

/** What record_webhook_attempt left: delivered, given up, or due again at next_attempt_at. */
export type WebhookDeliveryState = {
  id: number;
  attempts: number;
  delivered_at: string | null;
  gave_up_at: string | null;
  next_attempt_at: string | null;
};

/** Claims due deliveries (SKIP LOCKED), each leased for `leaseSeconds`; `now` is the tests' clock. */
export function claimWebhookDeliveries(
  limit: number,
  leaseSeconds: number,
  now?: Date,
): Promise<WebhookDelivery[]> {
  return asCaller(
    SERVICE,
    (tx) =>
      tx`select queue.claim_webhook_deliveries(p_limit => ${limit}::int, p_lease_seconds => ${leaseSeconds}::int,
         p_now => coalesce(${now ?? null}::timestamptz, now())) as result`,
  );
}

/** Records one attempt's answer (status null: none); SQL decides delivered, retry with backoff, or given up. */
export function recordWebhookAttempt(
  delivery: Pick<WebhookDelivery, "id" | "attempt">,
  answer: { status: number | null; error: string | null; durationMs: number },
  now?: Date,
): Promise<WebhookDeliveryState> {
  return asCaller(
    SERVICE,
    (tx) =>
      tx`select queue.record_webhook_attempt(p_delivery_id => ${delivery.id}::bigint,
         p_attempt => ${delivery.attempt}::int, p_status => ${answer.status}::int, p_error => ${answer.error},
         p_duration_ms => ${answer.durationMs}::int, p_now => coalesce(${
        now ?? null
      }::timestamptz, now())) as result`,
  );
}
