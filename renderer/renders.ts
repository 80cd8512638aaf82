// The renders this service knows of: the running ones (which hold its slots) and the last finished ones
// (so a repeated dispatch or a cancel still gets a truthful answer).
import type { CallbackTarget } from "./callbacks.ts";
import type { JobType } from "./card_text.ts";
import { type RenderStoppedError, sleep } from "./errors.ts";
import type { FaultKind } from "./faults.ts";
import type { DispatchRequest, Stage } from "./protocol.ts";
import type { StoredVideo } from "./storage.ts";

export type RenderState =
  | "rendering"
  | "hung" // fault injection: will never call back
  | "completed"
  | "undelivered" // video made, but the completed callback could not be delivered
  | "failed"
  | "cancelled"
  | "superseded" // the queue refused a callback (409 etc.): the attempt is not ours any more
  | "abandoned" // a hung render gave up after its lease
  | "stopped"; // the renderer shut down mid-render

/** What the tests and /health may see of a render; a copy, not the live record. */
export interface RenderSnapshot {
  job_id: string;
  attempt: number;
  job_type: JobType;
  fault: FaultKind | null;
  state: RenderState;
  stage: Stage | null;
  progress: number;
  temp_dir: string | null;
  video: StoredVideo | null;
  result: Record<string, unknown> | null;
  error: string | null;
  /** Callbacks the queue accepted (progress, heartbeats, outcome). */
  callbacks_sent: number;
  /** Heartbeat callbacks the queue accepted. */
  heartbeats_sent: number;
}

/** The live record of one render: its snapshot fields, plus what only the pipeline uses. */
export interface RenderRecord extends RenderSnapshot {
  callback: CallbackTarget;
  payload: Record<string, unknown>;
  deadline: Date | null;
  startedAt: number;
  controller: AbortController;
  /** Settles once the render has reached its final state and cleaned up. */
  done: Promise<void>;
}

const FINISHED_RECORDS_KEPT = 500;

const renderKey = (jobId: string, attempt: number) => `${jobId}#${attempt}`;

export class Renders {
  readonly #records = new Map<string, RenderRecord>();
  readonly #running = new Set<RenderRecord>();

  /** How many renders hold a slot now. */
  get running(): number {
    return this.#running.size;
  }

  isRunning(record: RenderRecord): boolean {
    return this.#running.has(record);
  }

  /** The render of that attempt; with no attempt, the job's latest. */
  find(jobId: string, attempt?: number): RenderRecord | undefined {
    if (attempt !== undefined) return this.#records.get(renderKey(jobId, attempt));
    return [...this.#records.values()].reverse().find((r) => r.job_id === jobId);
  }

  /**
   * Records a new render of a dispatched attempt as running (a failed or cancelled render of the same
   * attempt is replaced: it starts afresh, newest last) and forgets the oldest finished ones.
   */
  admit(request: DispatchRequest, fault: FaultKind | null): RenderRecord {
    const record: RenderRecord = {
      job_id: request.job_id,
      attempt: request.attempt,
      job_type: request.job_type,
      payload: request.payload,
      callback: request.callback,
      deadline: request.deadline ? new Date(request.deadline) : null,
      fault,
      state: "rendering",
      stage: null,
      progress: 0,
      temp_dir: null,
      video: null,
      result: null,
      error: null,
      callbacks_sent: 0,
      heartbeats_sent: 0,
      startedAt: performance.now(),
      controller: new AbortController(),
      done: Promise.resolve(),
    };
    const key = renderKey(request.job_id, request.attempt);
    this.#records.delete(key);
    this.#records.set(key, record);
    this.#running.add(record);
    this.#forgetOldest();
    return record;
  }

  /** Frees the slot of a render that has finished. */
  release(record: RenderRecord): void {
    this.#running.delete(record);
  }

  /** Stops a running render and waits (at most `waitMs`) until it is stopped and clean. */
  async stop(record: RenderRecord, reason: RenderStoppedError, waitMs: number): Promise<void> {
    record.controller.abort(reason);
    await Promise.race([record.done, sleep(waitMs)]);
  }

  /** Stops every running render and waits until every render has finished. */
  async stopAll(reason: RenderStoppedError): Promise<void> {
    for (const record of this.#running) record.controller.abort(reason);
    await Promise.allSettled([...this.#records.values()].map((r) => r.done));
  }

  /** A copy of what a render shows, without its callback token or its controller. */
  static snapshot(record: RenderRecord): RenderSnapshot {
    const { callback: _c, payload: _p, deadline: _d, startedAt: _s, controller: _ctl, done: _done, ...rest } =
      record;
    return structuredClone(rest);
  }

  #forgetOldest(): void {
    for (const [key, record] of this.#records) {
      if (this.#records.size <= FINISHED_RECORDS_KEPT) break;
      if (!this.#running.has(record)) this.#records.delete(key);
    }
  }
}
