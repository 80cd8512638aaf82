// Heartbeats: while an attempt renders, one `{"type":"heartbeat"}` callback every interval, so the queue's
// lease (API.md "Scheduling": `job_timeout_minutes` after the latest sign of life) keeps running however
// long a stage takes. The queue refusing one (a 4xx: the attempt is no longer current) ends the render.
import { CallbackRejectedError, sleep } from "./errors.ts";

export interface HeartbeatOptions {
  /** Time between heartbeats (the first one comes this long after the start); 0 or less: none at all. */
  intervalMs: number;
  /** The render's signal: once it aborts, no further heartbeat is sent. */
  signal: AbortSignal;
  /** Sends one heartbeat; rejects as `sendCallback` does. `signal` aborts it when the heartbeat stops. */
  beat: (signal: AbortSignal) => Promise<void>;
  /** The queue refused a heartbeat: the last one sent; the render should stop. */
  onRefused: (err: CallbackRejectedError) => void;
  /** A heartbeat could not be delivered (queue briefly unreachable, tries spent): heartbeats go on. */
  onUndelivered: (err: unknown) => void;
}

export interface Heartbeat {
  /** Sends no further heartbeat, aborts one in flight, and resolves once the loop has ended. Idempotent. */
  stop(): Promise<void>;
}

/** Starts sending heartbeats in the background until `stop()`, the render's abort, or a refusal. */
export function startHeartbeat(options: HeartbeatOptions): Heartbeat {
  const stopper = new AbortController();
  const signal = AbortSignal.any([options.signal, stopper.signal]);
  const loop = options.intervalMs > 0 ? beatUntilStopped(options, signal) : Promise.resolve();
  return {
    stop: async () => {
      stopper.abort();
      await loop;
    },
  };
}

async function beatUntilStopped(options: HeartbeatOptions, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    try {
      await sleep(options.intervalMs, signal);
      await options.beat(signal);
    } catch (err) {
      if (signal.aborted) return;
      if (err instanceof CallbackRejectedError) return options.onRefused(err);
      options.onUndelivered(err);
    }
  }
}
