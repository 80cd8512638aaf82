// The reference render service: speaks the render protocol of API.md, renders real MP4s with ffmpeg,
// stores them with a TTL and serves them over HTTP. See renderer/README.md for the protocol.
//
// This file is its lifecycle: start (serve, expiry cleanup), the running renders, stop. The parts:
//   protocol.ts  what the worker sends and the callbacks carry     pipeline.ts  one render, stage by stage
//   heartbeat.ts a sign of life every heartbeatSeconds             faults.ts    injected failures
//   routes.ts    dispatch, cancel, files, health                   renders.ts   running and recent renders
//   http.ts      JSON answers; the one place errors become one     storage.ts   stored videos with a TTL
import { type CallbackPolicy, defaultCallbackPolicy } from "./callbacks.ts";
import { RenderStoppedError } from "./errors.ts";
import { createFaultPicker, type FaultConfig } from "./faults.ts";
import { findFontFile, type MediaTools } from "./ffmpeg.ts";
import { type Log, type LogEntry, rendererLog } from "./log.ts";
import { RenderPipeline } from "./pipeline.ts";
import type { DispatchRequest } from "./protocol.ts";
import { type RenderRecord, Renders, type RenderSnapshot } from "./renders.ts";
import { rendererRoutes } from "./routes.ts";
import { VideoStorage } from "./storage.ts";

export { parseFaultConfig } from "./faults.ts";
export type { FaultConfig, FaultKind } from "./faults.ts";
export type { LogEntry } from "./log.ts";
export type { Stage } from "./protocol.ts";
export type { RenderSnapshot, RenderState } from "./renders.ts";

export interface RendererOptions {
  /** Shown in logs and /health, e.g. "manim-1". */
  name?: string;
  hostname?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Where finished videos and their sidecars live. */
  storageDir: string;
  /** Base of download URLs; defaults to http://<hostname>:<port>. */
  publicUrl?: string;
  /** Parent of the per-render temp dirs; defaults to the OS temp dir. */
  tempRoot?: string;
  clipSeconds?: number;
  fps?: number;
  ttlHours?: number;
  /** How often expired files are deleted; 0 turns the timer off (call cleanupExpiredFiles yourself). */
  cleanupIntervalMs?: number;
  maxConcurrentRenders?: number;
  faults?: FaultConfig;
  /** Font for the card; undefined = find one, null = no text. */
  fontFile?: string | null;
  ffmpegPath?: string;
  ffprobePath?: string;
  callbackPolicy?: Partial<CallbackPolicy>;
  /** How long a hung render (fault) lingers past its deadline before it quietly drops its slot. */
  hangGraceMs?: number;
  /**
   * Seconds between heartbeat callbacks while a render runs (default 30; 0 = none). Keep it well under the
   * queue's `job_timeout_minutes`: the lease runs that long after the latest callback.
   */
  heartbeatSeconds?: number;
  /** Every render takes at least this many seconds, held in its video stage (default 0): long renders on demand. */
  minRenderSeconds?: number;
  /** Clock for file expiry (tests move it forward instead of sleeping). */
  now?: () => Date;
  /** Receives one object per event; defaults to one JSON line on stdout. */
  log?: (entry: LogEntry) => void;
}

/** A running render service; `await using` closes it. */
export interface RendererHandle extends AsyncDisposable {
  name: string;
  /** Base URL of the server (also the base of download URLs unless publicUrl was given). */
  url: string;
  /** What to register in render_endpoints: `${url}/render`. */
  endpointUrl: string;
  port: number;
  storageDir: string;
  activeRenders(): number;
  getRender(jobId: string, attempt: number): RenderSnapshot | undefined;
  /** Resolves once the render has reached a final state. */
  waitForRender(jobId: string, attempt: number): Promise<RenderSnapshot>;
  /** Deletes expired videos now; returns their names. */
  cleanupExpiredFiles(at?: Date): Promise<string[]>;
  /** Stops every render (cleaning up), the cleanup timer and the HTTP server. */
  close(): Promise<void>;
}

const DEFAULT_HEARTBEAT_SECONDS = 30;

function nonNegative(value: number, label: string): number {
  if (!Number.isFinite(value) || value < 0) {
    throw new Error(`${label} must be a non-negative number, got ${value}`);
  }
  return value;
}

/** Starts a render service and resolves once it is listening. */
export async function startRenderer(options: RendererOptions): Promise<RendererHandle> {
  const name = options.name ?? "renderer";
  const hostname = options.hostname ?? "127.0.0.1";
  const maxConcurrent = options.maxConcurrentRenders ?? 2;
  const heartbeatSeconds = nonNegative(
    options.heartbeatSeconds ?? DEFAULT_HEARTBEAT_SECONDS,
    "heartbeatSeconds",
  );
  const minRenderSeconds = nonNegative(options.minRenderSeconds ?? 0, "minRenderSeconds");
  const log = rendererLog(name, options.log);
  const tools: MediaTools = {
    ffmpeg: options.ffmpegPath ?? "ffmpeg",
    ffprobe: options.ffprobePath ?? "ffprobe",
    fontFile: options.fontFile === undefined ? findFontFile() : options.fontFile,
  };
  if (!tools.fontFile) {
    log("font_missing", { message: "no TrueType font found: cards are rendered without text" });
  }
  const storage = new VideoStorage(options.storageDir, options.ttlHours ?? 24, options.now);
  await Deno.mkdir(options.storageDir, { recursive: true });

  let publicUrl = ""; // known once the server listens
  const pipeline = new RenderPipeline({
    name,
    tools,
    storage,
    tempRoot: options.tempRoot,
    clipSeconds: options.clipSeconds ?? 5,
    fps: options.fps ?? 15,
    hangGraceMs: options.hangGraceMs ?? 60_000,
    heartbeatMs: heartbeatSeconds * 1000,
    minRenderMs: minRenderSeconds * 1000,
    callbackPolicy: { ...defaultCallbackPolicy, ...options.callbackPolicy },
    downloadUrl: (filename) => `${publicUrl}/files/${filename}`,
    log,
  });
  const renders = new Renders();
  const pickFault = createFaultPicker(options.faults ?? {});

  /** Admits a dispatched attempt and renders it in the background; its slot is freed when it ends. */
  function startRender(request: DispatchRequest): void {
    const record = renders.admit(request, pickFault());
    log("render_accepted", {
      job_id: record.job_id,
      attempt: record.attempt,
      job_type: record.job_type,
      fault: record.fault,
    });
    record.done = pipeline.run(record).then(() => {
      renders.release(record);
      logOutcome(record);
    });
  }

  function logOutcome(record: RenderRecord): void {
    log(`render_${record.state}`, {
      job_id: record.job_id,
      attempt: record.attempt,
      stage: record.stage,
      fault: record.fault,
      duration_ms: Math.round(performance.now() - record.startedAt),
      ...(record.error ? { error: record.error } : {}),
      ...(record.video ? { filename: record.video.filename } : {}),
    });
  }

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve(
    { hostname, port: options.port ?? 0, onListen: (addr) => listening.resolve(addr as Deno.NetAddr) },
    rendererRoutes({ name, maxConcurrent, renders, storage, startRender, log }),
  );
  const addr = await listening.promise;
  const url = `http://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${addr.port}`;
  publicUrl = (options.publicUrl ?? url).replace(/\/+$/, "");

  const cleanup = expiryCleanup(storage, options.cleanupIntervalMs ?? 10 * 60_000, log);

  log("renderer_listening", {
    url,
    endpoint_url: `${url}/render`,
    public_url: publicUrl,
    storage_dir: options.storageDir,
    max_concurrent: maxConcurrent,
    clip_seconds: options.clipSeconds ?? 5,
    heartbeat_seconds: heartbeatSeconds,
    min_render_seconds: minRenderSeconds,
    faults: options.faults ?? {},
    font_file: tools.fontFile,
  });

  let closing: Promise<void> | undefined;
  const close = () =>
    closing ??= (async () => {
      const cleanupDone = cleanup.stop();
      await renders.stopAll(new RenderStoppedError("shutdown"));
      await cleanupDone;
      await server.shutdown();
      log("renderer_stopped");
    })();
  return {
    name,
    url,
    endpointUrl: `${url}/render`,
    port: addr.port,
    storageDir: options.storageDir,
    activeRenders: () => renders.running,
    getRender: (jobId, attempt) => {
      const record = renders.find(jobId, attempt);
      return record && Renders.snapshot(record);
    },
    waitForRender: async (jobId, attempt) => {
      const record = renders.find(jobId, attempt);
      if (!record) throw new Error(`no render ${jobId}#${attempt}`);
      await record.done;
      return Renders.snapshot(record);
    },
    cleanupExpiredFiles: cleanup.now,
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Deletes expired videos once now and then every `intervalMs` (0: only when `now()` is called). */
function expiryCleanup(storage: VideoStorage, intervalMs: number, log: Log) {
  const now = async (at?: Date): Promise<string[]> => {
    const removed = await storage.removeExpired(at);
    for (const filename of removed) log("file_expired", { filename });
    return removed;
  };
  let running: Promise<unknown> = Promise.resolve();
  const scheduled = () => {
    running = now().catch((err) => log("cleanup_failed", { error: String(err) }));
  };
  scheduled();
  const timer = intervalMs > 0 ? setInterval(scheduled, intervalMs) : undefined;
  return {
    now,
    /** Starts no further run; resolves when the one under way (if any) has finished. */
    stop: (): Promise<unknown> => {
      clearInterval(timer);
      return running;
    },
  };
}
