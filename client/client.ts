// The typed client: every endpoint of API.md as a method, on a supabase-js client, answers checked against
// the same zod schemas the functions use, errors as QueueError subclasses.
import {
  FunctionsFetchError,
  FunctionsHttpError,
  FunctionsRelayError,
  type SupabaseClient,
} from "@supabase/supabase-js";
import { z } from "zod";
import {
  AlertsAnswer,
  type EnqueueRequest,
  HistoryAnswer,
  type HourlyPoint,
  Job,
  JobAnswer,
  JobsAnswer,
  PeakAnswer,
  type PeakSchedule,
  type QueueAlerts,
  Stats,
  StatsAnswer,
} from "../shared/schemas.ts";
import { channelHub, type ChannelState } from "./channels.ts";
import { errorFromResponse, InvalidResponseError, NetworkError } from "./errors.ts";
import {
  abortReason,
  DEFAULT_FOLLOW,
  type FinishedJob,
  followJob,
  type FollowOptions,
  type ProgressListener,
} from "./follow.ts";

export type QueueClientOptions = Partial<FollowOptions>;

/** Every call takes an optional signal; aborting rejects the call with the signal's reason. */
export type CallOptions = { signal?: AbortSignal };

/** `listJobs` filters.  */
export type JobListFilter = {
  status?: Job["status"];
  job_type?: Job["job_type"];
  renderer?: string;
  user_id?: string;
  /** 1..200 (default: the server's) */
  limit?: number;
};

export interface QueueClient {
  /** `POST /enqueue`: `created` is false when this user repeated an `idempotency_key` (the first job). */
  enqueue(request: EnqueueRequest, options?: CallOptions): Promise<{ job: Job; created: boolean }>;
  /** `POST /cancel`: the job, now `cancelled` (ConflictError when it had finished already). */
  cancel(jobId: string, reason?: string, options?: CallOptions): Promise<Job>;
  /** `GET /status?job_id=`: the job with a fresh position and estimate. */
  status(jobId: string, options?: CallOptions): Promise<Job>;
  /**
   * Resolves with the job once it is finished: `completed`, `failed` or `cancelled` alike (look at
   * `status`; a failure of the render is an answer, not an error). Listens on the job's Realtime topic and
   * polls while Realtime is unavailable. Rejects with the signal's reason on abort (an AbortError), or with
   * a QueueError waiting cannot fix (UnauthorizedError, NotFoundError, …).
   */
  waitForCompletion(
    jobId: string,
    options?: { onProgress?: ProgressListener; signal?: AbortSignal },
  ): Promise<FinishedJob>;
  /**
   * Calls `onJob` with each state broadcast on the job's private topic `job:<id>` (and `onState` with the
   * channel's state); returns the function that stops. No polling, no ordering: waitForCompletion adds those.
   */
  subscribe(jobId: string, onJob: (job: Job) => void, onState?: (state: ChannelState) => void): () => void;
  /** Admins only (an admin user's token, or a secret key); others get ForbiddenError. */
  admin: AdminClient;
}

export interface AdminClient {
  /** `GET /status`: the queue's Stats. */
  stats(options?: CallOptions): Promise<Stats>;
  /** `GET /status?view=jobs&…`: jobs newest first. */
  listJobs(filter?: JobListFilter, options?: CallOptions): Promise<Job[]>;
  /** `POST /status/retry`: a failed job back in the queue (ConflictError unless it failed). */
  retry(jobId: string, options?: CallOptions): Promise<Job>;
  /** `POST /status/pause`: the whole queue, or one renderer. */
  pause(renderer?: string, options?: CallOptions): Promise<Stats>;
  /** `POST /status/resume`: the whole queue, or one renderer. */
  resume(renderer?: string, options?: CallOptions): Promise<Stats>;
  /** `GET /status/metrics`: Prometheus text exposition. */
  metrics(options?: CallOptions): Promise<string>;
  /** `GET /status?view=history`: finished jobs per hour. */
  history(options?: CallOptions): Promise<HourlyPoint[]>;
  /** `GET /status?view=alerts`: the alert thresholds and the alerts in force. */
  alerts(options?: CallOptions): Promise<QueueAlerts>;
  /** `GET /status?view=peak`: the peak windows, the multiplier and the next window boundary. */
  peak(options?: CallOptions): Promise<PeakSchedule>;
  /** Calls `onStats` with each Stats broadcast on the private topic `queue:admin`; returns the function that stops. */
  onQueueChange(onStats: (stats: Stats) => void, onState?: (state: ChannelState) => void): () => void;
}

type Invoke = { method?: "GET" | "POST"; body?: Record<string, unknown>; signal?: AbortSignal };

/**
 * A client of the queue on `supabase` (`createClient(url, publishableKey)` with the user's session, or
 * with `accessToken`; a secret key for operators). Calls go through `supabase.functions.invoke`, GET
 * queries as part of the function path (`status?job_id=…`); Realtime through `supabase.channel`.
 */
export function createQueueClient(supabase: SupabaseClient, options: QueueClientOptions = {}): QueueClient {
  const follow: FollowOptions = { ...DEFAULT_FOLLOW, ...options };
  const hub = channelHub(supabase);

  async function call<S extends z.ZodType>(path: string, schema: S, init: Invoke = {}) {
    const { data, error, response } = await supabase.functions.invoke(path, {
      method: init.method ?? "POST",
      body: init.body,
      signal: init.signal,
    });
    if (error) throw await toQueueError(error, init.signal);
    const parsed = schema.safeParse(data);
    if (!parsed.success) {
      throw new InvalidResponseError(response?.status ?? 200, z.treeifyError(parsed.error));
    }
    return { data: parsed.data as z.infer<S>, status: response?.status ?? 200 };
  }
  const get = <S extends z.ZodType>(path: string, schema: S, { signal }: CallOptions = {}) =>
    call(path, schema, { method: "GET", signal }).then((r) => r.data);
  const post = <S extends z.ZodType>(
    path: string,
    body: Record<string, unknown>,
    schema: S,
    o?: CallOptions,
  ) => call(path, schema, { body, signal: o?.signal }).then((r) => r.data);

  const status = async (jobId: string, o?: CallOptions) =>
    (await get(`status?${new URLSearchParams({ job_id: jobId })}`, JobAnswer, o)).job;
  const subscribe: QueueClient["subscribe"] = (jobId, onJob, onState) =>
    hub.listen(`job:${jobId}`, "job", Job, onJob, onState);
  const setPaused = (path: string) => async (renderer?: string, o?: CallOptions) =>
    (await post(path, renderer === undefined ? {} : { renderer }, StatsAnswer, o)).stats;

  return {
    async enqueue(request, o) {
      const { data, status } = await call("enqueue", JobAnswer, { body: request, signal: o?.signal });
      return { job: data.job, created: status === 201 };
    },
    cancel: async (jobId, reason, o) =>
      (await post(
        "cancel",
        reason === undefined ? { job_id: jobId } : { job_id: jobId, reason },
        JobAnswer,
        o,
      ))
        .job,
    status,
    subscribe,
    waitForCompletion: (jobId, o) =>
      followJob({ readStatus: (id, signal) => status(id, { signal }), listen: subscribe }, jobId, follow, o),
    admin: {
      stats: async (o) => (await get("status", StatsAnswer, o)).stats,
      async listJobs(filter = {}, o) {
        const query = new URLSearchParams({ view: "jobs" });
        for (const [key, value] of Object.entries(filter)) {
          if (value !== undefined) query.set(key, String(value));
        }
        return (await get(`status?${query}`, JobsAnswer, o)).jobs;
      },
      retry: async (jobId, o) => (await post("status/retry", { job_id: jobId }, JobAnswer, o)).job,
      pause: setPaused("status/pause"),
      resume: setPaused("status/resume"),
      metrics: (o) => get("status/metrics", z.string(), o),
      history: async (o) => (await get("status?view=history", HistoryAnswer, o)).history,
      alerts: async (o) => (await get("status?view=alerts", AlertsAnswer, o)).alerts,
      peak: async (o) => (await get("status?view=peak", PeakAnswer, o)).peak,
      onQueueChange: (onStats, onState) => hub.listen("queue:admin", "stats", Stats, onStats, onState),
    },
  };
}

/** supabase-js's error of a failed invoke → the typed error (the signal's reason when it was aborted). */
async function toQueueError(error: unknown, signal?: AbortSignal): Promise<unknown> {
  if (signal?.aborted) return abortReason(signal);
  if (error instanceof FunctionsHttpError || error instanceof FunctionsRelayError) {
    return await errorFromResponse(error.context as Response);
  }
  if (error instanceof FunctionsFetchError) return new NetworkError(error.context);
  return error;
}
