// The render pipeline: one dispatched attempt → title card → video → stored file, with a progress callback
// at each stage, heartbeats in between, and one outcome callback at the end. It never throws: every way a
// render ends becomes the record's final state, and its temp files are gone when `run` returns.
import { type CallbackPolicy, sendCallback } from "./callbacks.ts";
import { cardTextForJob } from "./card_text.ts";
import {
  CallbackRejectedError,
  CallbackUndeliveredError,
  HangExpiredError,
  PermanentRenderError,
  RenderStoppedError,
  RetryableRenderError,
  sleep,
} from "./errors.ts";
import { composeVideo, type MediaTools, probeVideo, renderTitleCard } from "./ffmpeg.ts";
import { type Heartbeat, startHeartbeat } from "./heartbeat.ts";
import type { Log } from "./log.ts";
import type { RenderReport, RenderResult } from "../shared/render_protocol.ts";
import type { Stage } from "./protocol.ts";
import type { RenderRecord } from "./renders.ts";
import type { VideoStorage } from "./storage.ts";

const SHUTDOWN_CALLBACK_TIMEOUT_MS = 2_000;
const DEFAULT_HANG_WITHOUT_DEADLINE_MS = 30 * 60_000;

export interface PipelineConfig {
  /** The renderer's name: in temp dir names and in each result. */
  name: string;
  tools: MediaTools;
  storage: VideoStorage;
  /** Parent of the per-render temp dirs; undefined = the OS temp dir. */
  tempRoot?: string;
  clipSeconds: number;
  fps: number;
  /** How long a hung render (fault) lingers past its deadline before it quietly drops its slot. */
  hangGraceMs: number;
  /** Time between heartbeat callbacks while a render runs; 0 = none. */
  heartbeatMs: number;
  /** A render takes at least this long (held in the video stage), so long renders can be tried out. */
  minRenderMs: number;
  callbackPolicy: CallbackPolicy;
  /** Where a stored video can be downloaded (the server's public URL is known once it listens). */
  downloadUrl: (filename: string) => string;
  log: Log;
}

export class RenderPipeline {
  constructor(private readonly config: PipelineConfig) {}

  /** Renders the attempt to its end (whatever that is) and removes its temp files. */
  async run(record: RenderRecord): Promise<void> {
    const heartbeat = this.#startHeartbeat(record);
    try {
      await this.#render(record, heartbeat);
    } catch (err) {
      await heartbeat.stop(); // the outcome (if any) is the last word: no heartbeat after it
      await this.#settleFailure(record, err);
    } finally {
      await heartbeat.stop();
      if (record.temp_dir) await Deno.remove(record.temp_dir, { recursive: true }).catch(() => {});
    }
  }

  async #render(record: RenderRecord, heartbeat: Heartbeat): Promise<void> {
    const { name, tools, storage, clipSeconds, fps } = this.config;
    const signal = record.controller.signal;
    record.temp_dir = await Deno.makeTempDir({ dir: this.config.tempRoot, prefix: `render-${name}-` });
    await this.#enterStage(record, "generating_screenshot", 20);
    const card = await renderTitleCard(
      tools,
      record.temp_dir,
      cardTextForJob(record.job_type, record.payload),
      signal,
    );
    await this.#injectFault(record, heartbeat);
    await this.#enterStage(record, "composing_video", 60);
    const video = await composeVideo(tools, record.temp_dir, card, clipSeconds, fps, signal);
    // A render made to last (minRenderSeconds) holds here, in its longest stage, heartbeats going on.
    await sleep(Math.max(0, record.startedAt + this.config.minRenderMs - performance.now()), signal);
    await this.#enterStage(record, "saving_file", 80);
    const probe = await probeVideo(tools, video, signal);
    record.video = await storage.save(video, record);
    signal.throwIfAborted();
    const downloadUrl = this.config.downloadUrl(record.video.filename);
    const result: RenderResult = {
      video_url: downloadUrl,
      download_url: downloadUrl,
      filename: record.video.filename,
      file_size: record.video.file_size,
      duration_seconds: Math.round(probe.durationSeconds * 1000) / 1000,
      resolution: `${probe.width}x${probe.height}`,
      expires_at: record.video.expires_at,
      renderer: name,
    };
    record.result = result;
    record.progress = 100;
    await heartbeat.stop();
    signal.throwIfAborted(); // the last heartbeat may have been refused
    const deliveries = record.fault === "duplicate" ? 2 : 1;
    for (let i = 0; i < deliveries; i++) {
      await this.#deliver(record, { type: "completed", result });
    }
    record.state = "completed";
  }

  async #enterStage(record: RenderRecord, stage: Stage, progress: number): Promise<void> {
    record.stage = stage;
    record.progress = progress;
    this.config.log("render_stage", { job_id: record.job_id, attempt: record.attempt, stage, progress });
    try {
      await this.#deliver(record, { type: "progress", stage, progress });
    } catch (err) {
      // Progress is advisory: if the queue is briefly unreachable, keep rendering.
      if (!(err instanceof CallbackUndeliveredError)) throw err;
      this.config.log("callback_undelivered", {
        job_id: record.job_id,
        attempt: record.attempt,
        stage,
        error: err.message,
      });
    }
  }

  /** Fault injection, after the card step: fail either way, or hang until stopped or past the deadline. */
  async #injectFault(record: RenderRecord, heartbeat: Heartbeat): Promise<void> {
    if (record.fault === "retryable") {
      throw new RetryableRenderError("injected fault: retryable render failure");
    }
    if (record.fault === "permanent") {
      throw new PermanentRenderError("injected fault: permanent render failure");
    }
    if (record.fault === "hang") {
      record.state = "hung";
      await heartbeat.stop(); // hung means silent: the queue must see the lease run out
      this.config.log("render_hung", { job_id: record.job_id, attempt: record.attempt, stage: record.stage });
      const until = (record.deadline?.getTime() ?? Date.now() + DEFAULT_HANG_WITHOUT_DEADLINE_MS) +
        this.config.hangGraceMs;
      await sleep(Math.max(0, until - Date.now()), record.controller.signal);
      throw new HangExpiredError("hung render gave up after its deadline");
    }
  }

  /** Decides the final state after a render threw, tells the queue where it should hear, drops the output. */
  async #settleFailure(record: RenderRecord, thrown: unknown): Promise<void> {
    const signal = record.controller.signal;
    // Once the render was stopped from outside (cancel, shutdown, a refused heartbeat), that is why it ended.
    const err = signal.aborted ? signal.reason : thrown;
    const keepVideo = err instanceof CallbackUndeliveredError; // the queue may have recorded it before the network broke
    if (record.video && !keepVideo) {
      await this.config.storage.remove(record.video.filename).catch(() => {});
      record.video = null;
    }
    if (signal.aborted && signal.reason instanceof RenderStoppedError) {
      const wasHung = record.state === "hung";
      record.state = signal.reason.kind === "cancel" ? "cancelled" : "stopped";
      record.error = signal.reason.message;
      // On shutdown, tell the queue at once so it retries now instead of waiting out the lease.
      if (signal.reason.kind === "shutdown" && !wasHung) {
        const body = callbackBody(record, {
          type: "failed",
          error: "renderer shutting down",
          retryable: true,
        });
        const policy = { attempts: 1, retryDelayMs: 0, timeoutMs: SHUTDOWN_CALLBACK_TIMEOUT_MS };
        await sendCallback(record.callback, body, policy).then(() => record.callbacks_sent++).catch(() => {});
      }
    } else if (err instanceof CallbackRejectedError) {
      record.state = "superseded";
      record.error = err.message;
    } else if (err instanceof HangExpiredError) {
      record.state = "abandoned";
      record.error = err.message;
    } else if (keepVideo) {
      record.state = "undelivered";
      record.error = err.message;
    } else {
      const retryable = !(err instanceof PermanentRenderError);
      record.state = "failed";
      record.error = err instanceof Error ? err.message : String(err);
      try {
        await this.#deliver(record, { type: "failed", error: record.error, retryable });
      } catch (deliveryErr) {
        this.config.log("callback_undelivered", {
          job_id: record.job_id,
          attempt: record.attempt,
          error: String(deliveryErr),
        });
      }
    }
  }

  /** Heartbeats for the whole render; a refused one stops the render as a refused progress callback does. */
  #startHeartbeat(record: RenderRecord): Heartbeat {
    const ids = { job_id: record.job_id, attempt: record.attempt };
    return startHeartbeat({
      intervalMs: this.config.heartbeatMs,
      signal: record.controller.signal,
      beat: async (signal) => {
        await sendCallback(
          record.callback,
          callbackBody(record, { type: "heartbeat" }),
          this.config.callbackPolicy,
          signal,
        );
        record.callbacks_sent++;
        record.heartbeats_sent++;
        this.config.log("render_heartbeat", { ...ids, stage: record.stage, n: record.heartbeats_sent });
      },
      onRefused: (err) => record.controller.abort(err),
      onUndelivered: (err) =>
        this.config.log("callback_undelivered", {
          ...ids,
          type: "heartbeat",
          error: err instanceof Error ? err.message : String(err),
        }),
    });
  }

  async #deliver(record: RenderRecord, event: RenderReport): Promise<void> {
    await sendCallback(
      record.callback,
      callbackBody(record, event),
      this.config.callbackPolicy,
      record.controller.signal,
    );
    record.callbacks_sent++;
  }
}

function callbackBody(record: RenderRecord, event: RenderReport): Record<string, unknown> {
  return { job_id: record.job_id, attempt: record.attempt, ...event };
}
