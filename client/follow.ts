// Following one job to its end: Realtime broadcast where it works, polling GET /status with backoff where it
// does not, both feeding one ordered, de-duplicated stream of Job states.
import { FINISHED_STATUSES, Job, type JobResult } from "../shared/schemas.ts";
import type { ChannelState } from "./channels.ts";
import { QueueError, type RateLimitedError } from "./errors.ts";

/** A job in a final state. A completed job always has its result (at least `video_url`). */
export type FinishedJob =
  | (Job & { status: "completed"; result: JobResult })
  | (Job & { status: "failed" | "cancelled" });

/** Where an update came from: a Realtime broadcast, or a read of `GET /status`. */
export type UpdateSource = "realtime" | "status";

/** Called with each new state of the job, in order, the first (as read) and the final one included. */
export type ProgressListener = (job: Job, update: { source: UpdateSource }) => void;

/** How a wait listens and polls (QueueClientOptions). */
export interface FollowOptions {
  /** Listen on the job's Realtime topic (default true). Without it, or while it fails, the wait polls. */
  realtime: boolean;
  /** Polling without Realtime: the first interval (ms, default 1000), doubled after each read that brought
   * no news up to `pollMaxMs` (default 15000), and back to the first after each one that did. */
  pollInitialMs: number;
  pollMaxMs: number;
  /** While subscribed, read the status anyway this often (ms, default 30000; Infinity: never), since
   * broadcast is best effort: a lost message delays the wait by at most this much. */
  realtimeCheckMs: number;
}

export const DEFAULT_FOLLOW: FollowOptions = {
  realtime: true,
  pollInitialMs: 1_000,
  pollMaxMs: 15_000,
  realtimeCheckMs: 30_000,
};

/** What a wait needs from the client: read the job, and listen on its topic. */
export interface FollowIo {
  readStatus(jobId: string, signal: AbortSignal): Promise<Job>;
  listen(jobId: string, onJob: (job: Job) => void, onState: (state: ChannelState) => void): () => void;
}

export const isFinished = (job: Job): job is FinishedJob =>
  (FINISHED_STATUSES as readonly string[]).includes(job.status);

/**
 * Resolves with the job once it is finished, calling `onProgress` with every newer state on the way;
 * rejects with the signal's reason (an AbortError) when aborted, or with a QueueError that waiting longer
 * cannot fix (401, 403, 404). Transient errors (network, 429, 5xx) only slow the polling down.
 */
export function followJob(
  io: FollowIo,
  jobId: string,
  options: FollowOptions,
  { onProgress, signal }: { onProgress?: ProgressListener; signal?: AbortSignal } = {},
): Promise<FinishedJob> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const reads = new AbortController(); // the status read in flight, cancelled when the wait ends
    let latest: Job | undefined;
    let subscribed = false;
    let done = false;
    let delay = options.pollInitialMs;
    let wake = () => {};
    let readNow = false; // a read is due at once, even if one is in flight (it may predate the news)
    const poke = () => (readNow = true, wake());
    let timer: ReturnType<typeof setTimeout> | undefined;

    const finish = (settle: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      stopListening();
      reads.abort();
      signal?.removeEventListener("abort", onAbort);
      wake();
      settle();
    };
    const onAbort = () => finish(() => reject(abortReason(signal!)));
    signal?.addEventListener("abort", onAbort, { once: true });

    /** Takes a state if it is news; true when it was. */
    const offer = (job: Job, source: UpdateSource): boolean => {
      if (done || job.id !== jobId || (latest && !isNewer(job, latest))) return false;
      latest = job;
      onProgress?.(job, { source });
      if (isFinished(job)) finish(() => resolve(job));
      return true;
    };

    const stopListening = options.realtime
      ? io.listen(jobId, (job) => offer(job, "realtime"), (state) => {
        const was = subscribed;
        subscribed = state === "SUBSCRIBED";
        if (subscribed) poke(); // re-read now that nothing can be missed (API.md: broadcast is best effort)
        else if (was) (delay = options.pollInitialMs, poke()); // Realtime lost: poll from now on
      })
      : () => {};

    /** Reads the status once; the next pause before reading again (ms). */
    const read = async (): Promise<number> => {
      try {
        delay = nextPollDelay(delay, offer(await io.readStatus(jobId, reads.signal), "status"), options);
      } catch (err) {
        if (done) return 0;
        if (!isTransient(err)) {
          finish(() => reject(err));
          return 0;
        }
        delay = nextPollDelay(delay, false, options);
        const retryAfter = (err as Partial<RateLimitedError>).retryAfterSeconds;
        if (retryAfter !== undefined) return Math.max(retryAfter * 1000, delay);
      }
      return subscribed ? options.realtimeCheckMs : delay;
    };

    const pause = (ms: number) =>
      new Promise<void>((resume) => {
        wake = resume;
        if (Number.isFinite(ms)) timer = setTimeout(resume, ms);
      });

    (async () => {
      while (!done) {
        readNow = false;
        const next = await read();
        if (!done && !readNow) await pause(next);
        clearTimeout(timer);
      }
    })();
  });
}

/** The pause before the next poll: back to the first interval after news, else doubled up to the cap. */
export function nextPollDelay(
  delay: number,
  news: boolean,
  { pollInitialMs, pollMaxMs }: Pick<FollowOptions, "pollInitialMs" | "pollMaxMs">,
): number {
  return news ? pollInitialMs : Math.min(delay * 2, pollMaxMs);
}

/**
 * Is `job` a newer state than `latest`? Later `updated_at` (to the microsecond) is newer; at the same
 * `updated_at`, a different position, estimate or wait reason (which change without touching the row) is
 * news, and the same state again is a repeat.
 */
export function isNewer(job: Job, latest: Job): boolean {
  const byTime = compareTimes(job.updated_at, latest.updated_at);
  return byTime > 0 || (byTime === 0 && fingerprint(job) !== fingerprint(latest));
}

const fingerprint = (j: Job) =>
  JSON.stringify([
    j.status,
    j.progress,
    j.stage,
    j.queue_position,
    j.estimated_wait_seconds,
    j.wait_reason,
    j.estimate_basis,
    j.retry_count,
    j.next_attempt_at,
    j.error_message,
  ]);

/** Compares two ISO times to the microsecond (Postgres sends six digits; Date keeps three). */
function compareTimes(a: string, b: string): number {
  return Math.sign(epochMicros(a) - epochMicros(b));
}

function epochMicros(iso: string): number {
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? "";
  return Date.parse(iso) * 1000 + Number(fraction.padEnd(6, "0").slice(3, 6));
}

/** Errors that waiting can outlast: no answer, an unexpected answer, 429, 5xx. */
function isTransient(err: unknown): boolean {
  return err instanceof QueueError &&
    (err.status === 0 || err.status >= 500 || err.code === "rate_limited" || err.code === "invalid_response");
}

export function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new DOMException("The operation was aborted.", "AbortError");
}
