// The long-running worker: the Edge Function's worker pass (shared/worker_pass.ts), run by one process on an
// interval and at once when Postgres notifies, one pass at a time (a request during a pass runs one more pass
// after it, however many arrive). Several instances run side by side: SQL serializes their claims.
import {
  asCaller,
  claimsInHand,
  closeDb,
  log,
  type PassSummary,
  releaseClaimsInHand,
  workerPass,
} from "../shared/mod.ts";
import type { WorkerConfig } from "./config.ts";
import { listenForWakeups, type WakeupListener } from "./listener.ts";

/** What GET /status answers, after seed 004's getStatus() (isRunning, currentJobCount, processingJobs). */
export type WorkerStatus = {
  worker_id: string;
  /** False once stopping: it claims nothing more. */
  running: boolean;
  /** Claims held whose dispatch has not been answered yet (they are released if the worker stops). */
  in_flight: number;
  in_flight_jobs: string[];
  /** Whether the LISTEN connection is up (else only the interval starts passes). */
  listening: boolean;
  /** Whether a pass is running now; `passes` have ended. */
  passing: boolean;
  passes: number;
  /** When the last pass ended, and what it did (or why it failed). */
  last_pass_at: string | null;
  last_pass: PassSummary | null;
  last_error: string | null;
  started_at: string;
};

/** How a stop ended: claims released because their dispatch outlived the grace period. */
export type StopSummary = { released_after_grace: number; finished_in_grace: boolean };

/** How long the health check's `select 1` may take before the database counts as down. */
const DATABASE_PROBE_MS = 2_000;

export class QueueWorker {
  readonly #config: WorkerConfig;
  readonly #stop = new AbortController();
  readonly #startedAt = new Date();
  #listener?: WakeupListener;
  #interval?: ReturnType<typeof setInterval>;
  #passing?: Promise<void>;
  #passAgain = false;
  #passes = 0;
  #lastPassAt: Date | null = null;
  #lastPass: PassSummary | null = null;
  #lastError: string | null = null;
  #stopping?: Promise<StopSummary>;

  constructor(config: WorkerConfig) {
    this.#config = config;
  }

  /** Listens for wake-ups, passes every interval, and passes once now. */
  start(): void {
    this.#listener = listenForWakeups(this.#config.dbUrl, (reason) => this.requestPass(reason));
    this.#interval = setInterval(() => this.requestPass("interval"), this.#config.intervalMs);
    this.requestPass("start");
  }

  /** Runs a pass now, or once more after the current one; nothing once stopping. */
  requestPass(_reason: string): void {
    if (this.#stop.signal.aborted) return;
    if (this.#passing) {
      this.#passAgain = true;
      return;
    }
    this.#passing = this.#passUntilQuiet().finally(() => this.#passing = undefined);
  }

  async #passUntilQuiet(): Promise<void> {
    do {
      this.#passAgain = false;
      try {
        this.#lastPass = await workerPass({
          workerId: this.#config.workerId,
          stop: this.#stop.signal,
          onSlotsFreed: (reason) => this.requestPass(reason),
        });
        this.#lastError = null;
      } catch (err) {
        // The database is away, most likely: the next interval or wake-up tries again.
        const error = String((err as Error)?.message ?? err);
        if (error !== this.#lastError) log("worker_pass_failed", { worker_id: this.#config.workerId, error });
        this.#lastError = error;
      }
      this.#passes++;
      this.#lastPassAt = new Date();
    } while (this.#passAgain && !this.#stop.signal.aborted);
  }

  getStatus(): WorkerStatus {
    const inHand = claimsInHand();
    return {
      worker_id: this.#config.workerId,
      running: !this.#stop.signal.aborted,
      in_flight: inHand.length,
      in_flight_jobs: inHand.map((c) => c.job_id),
      listening: this.#listener?.listening ?? false,
      passing: this.#passing !== undefined,
      passes: this.#passes,
      last_pass_at: this.#lastPassAt?.toISOString() ?? null,
      last_pass: this.#lastPass,
      last_error: this.#lastError,
      started_at: this.#startedAt.toISOString(),
    };
  }

  /** Whether a `select 1` answers within DATABASE_PROBE_MS. */
  async databaseReachable(): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<false>((resolve) =>
      timer = setTimeout(() => resolve(false), DATABASE_PROBE_MS)
    );
    const probe = asCaller<number>({ kind: "service" }, (tx) => tx`select 1 as result`).then(
      (one) => one === 1,
      () => false,
    );
    try {
      return await Promise.race([probe, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stops claiming (the current pass releases at once what it has not started dispatching), stops listening,
   * lets dispatches in flight finish within `graceMs`, releases the claims still without an answer after
   * that, and closes the database pool. Repeated calls share the first.
   */
  stop(graceMs = this.#config.graceMs): Promise<StopSummary> {
    return this.#stopping ??= this.#shutDown(graceMs);
  }

  async #shutDown(graceMs: number): Promise<StopSummary> {
    clearInterval(this.#interval);
    this.#stop.abort();
    log("worker_stopping", { worker_id: this.#config.workerId, in_flight: claimsInHand().length });
    await this.#listener?.close();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finishedInGrace = await Promise.race([
      (this.#passing ?? Promise.resolve()).then(() => true),
      new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), graceMs)),
    ]);
    clearTimeout(timer);
    const releasedAfterGrace = await releaseClaimsInHand();
    await closeDb();
    log("worker_stopped", {
      worker_id: this.#config.workerId,
      finished_in_grace: finishedInGrace,
      released_after_grace: releasedAfterGrace,
    });
    return { released_after_grace: releasedAfterGrace, finished_in_grace: finishedInGrace };
  }
}
