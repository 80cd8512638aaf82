// The SQL API of docs/ARCHITECTURE.md (schema `queue`, not served by the Data API), one typed call each.
// SQL owns every queue rule; these only call it.
import type postgres from "postgres";
import type { Caller, ServiceCaller } from "./auth.ts";
import { asCaller } from "./db.ts";
import type { QueueMetrics } from "./metrics.ts";
import type { EnqueueRequest, JobListFilters } from "./schemas.ts";

/** API.md's Job, as public.job_to_json() builds it. */
export type Job = {
  id: string;
  job_type: string;
  priority: string;
  status: "queued" | "processing" | "completed" | "failed" | "cancelled";
  renderer: string;
  payload: Record<string, unknown>;
  queue_position: number | null;
  estimated_wait_seconds: number | null;
  progress: number;
  stage: string | null;
  retry_count: number;
  max_retries: number;
  next_attempt_at: string | null;
  error_message: string | null;
  result: Record<string, unknown> | null;
  /** Why a queued job has not started (API.md's codes, first that applies); null unless queued. */
  wait_reason:
    | "paused"
    | "scheduled"
    | "retry_backoff"
    | "no_endpoint"
    | "user_limit"
    | "renderer_busy"
    | "capacity"
    | "behind"
    | null;
  /** Whether estimated_wait_seconds rests on recent render times or the configured default; null unless queued. */
  estimate_basis: "history" | "default" | null;
  expires_at: string | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  updated_at: string;
};

/** API.md's Stats (what get_queue_stats() returns). */
export type Stats = Record<string, unknown> & {
  queued: number;
  processing: number;
  capacity: { max_concurrent: number; effective: number; peak: boolean; multiplier: number };
};

/** One hour of `GET /status?view=history`: jobs that ended completed or failed in it. */
export type HourOutcomes = { hour: string; completed: number; failed: number };

/** `GET /status?view=alerts`: what get_queue_alerts() returns. */
export type QueueAlerts = {
  thresholds: { queue_depth: number; oldest_queued_seconds: number; failure_rate: number };
  active: QueueAlert[];
  generated_at: string;
};
export type QueueAlert = {
  kind: "queue_depth" | "oldest_queued" | "failure_rate" | "no_healthy_endpoint";
  /** The figure that crossed its threshold (jobs, seconds, a 0..1 rate, or queued jobs for a renderer). */
  value: number;
  threshold: number;
  /** Set for no_healthy_endpoint. */
  renderer?: string;
  message: string;
};

/** `GET /status?view=peak`: what get_peak_schedule() returns. */
export type PeakSchedule = {
  time_zone: string;
  multiplier: number;
  /** Local times "HH:MM" in time_zone; start > end crosses midnight. */
  windows: { start: string; end: string; label: string | null }[];
  peak: boolean;
  /** The next start or end of a window, or null when there is none. */
  next_boundary_at: string | null;
};

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
export function getQueueHistory(caller: Caller): Promise<HourOutcomes[]> {
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
