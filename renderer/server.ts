// The reference render service: speaks the render protocol of API.md, renders real MP4s with ffmpeg,
// stores them with a TTL and serves them over HTTP. See renderer/README.md for the protocol.
import { z } from "zod";
import {
  type CallbackPolicy,
  type CallbackTarget,
  defaultCallbackPolicy,
  sendCallback,
} from "./callbacks.ts";
import { cardTextForJob, type JobType } from "./card_text.ts";
import {
  CallbackRejectedError,
  CallbackUndeliveredError,
  HangExpiredError,
  PermanentRenderError,
  RenderStoppedError,
  RetryableRenderError,
  sleep,
} from "./errors.ts";
import { createFaultPicker, type FaultConfig, type FaultKind } from "./faults.ts";
import { composeVideo, findFontFile, type MediaTools, probeVideo, renderTitleCard } from "./ffmpeg.ts";
import { type StoredVideo, VideoStorage } from "./storage.ts";

export { parseFaultConfig } from "./faults.ts";
export type { FaultConfig, FaultKind } from "./faults.ts";

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
  /** Clock for file expiry (tests move it forward instead of sleeping). */
  now?: () => Date;
  /** Receives one object per event; defaults to one JSON line on stdout. */
  log?: (entry: LogEntry) => void;
}

export type LogEntry = { event: string; renderer: string } & Record<string, unknown>;

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

export type Stage = "generating_screenshot" | "composing_video" | "saving_file";

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
  callbacks_sent: number;
}

export interface RendererHandle {
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

interface RenderRecord extends RenderSnapshot {
  callback: CallbackTarget;
  payload: Record<string, unknown>;
  deadline: Date | null;
  startedAt: number;
  controller: AbortController;
  done: Promise<void>;
}

const JOB_TYPES = ["doubt", "topic_short", "daily_ca"] as const;

const PayloadSchemas: Record<JobType, z.ZodType> = {
  doubt: z.looseObject({ question: z.string().min(1) }),
  topic_short: z.looseObject({ topic: z.string().min(1) }),
  daily_ca: z.looseObject({ date: z.string().min(1), headlines: z.array(z.string()).optional() }),
};

const DispatchSchema = z.object({
  job_id: z.string().min(1).max(200),
  attempt: z.number().int().positive(),
  job_type: z.enum(JOB_TYPES),
  payload: z.record(z.string(), z.unknown()),
  callback: z.object({ url: z.url({ protocol: /^https?$/ }), token: z.string().min(1) }),
  deadline: z.string().refine((s) => !Number.isNaN(Date.parse(s)), "not a timestamp").nullish(),
}).superRefine((body, ctx) => {
  const payload = PayloadSchemas[body.job_type].safeParse(body.payload);
  for (const issue of payload.success ? [] : payload.error.issues) {
    ctx.addIssue({ code: "custom", message: issue.message, path: ["payload", ...issue.path] });
  }
});

const CancelSchema = z.object({
  job_id: z.string().min(1),
  attempt: z.number().int().positive().optional(),
});

const FINISHED_RECORDS_KEPT = 500;
const CANCEL_WAIT_MS = 10_000;
const SHUTDOWN_CALLBACK_TIMEOUT_MS = 2_000;
const DEFAULT_HANG_WITHOUT_DEADLINE_MS = 30 * 60_000;

const json = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });

const httpError = (status: number, code: string, message: string, details?: unknown) =>
  json(status, { error: { code, message, ...(details === undefined ? {} : { details }) } });

const renderKey = (jobId: string, attempt: number) => `${jobId}#${attempt}`;

function snapshot(record: RenderRecord): RenderSnapshot {
  const { callback: _c, payload: _p, deadline: _d, startedAt: _s, controller: _ctl, done: _done, ...rest } =
    record;
  return structuredClone(rest);
}

function defaultLog(entry: LogEntry): void {
  console.log(JSON.stringify({ ts: new Date().toISOString(), ...entry }));
}

/** Starts a render service and resolves once it is listening. */
export async function startRenderer(options: RendererOptions): Promise<RendererHandle> {
  const name = options.name ?? "renderer";
  const hostname = options.hostname ?? "127.0.0.1";
  const clipSeconds = options.clipSeconds ?? 5;
  const fps = options.fps ?? 15;
  const maxConcurrent = options.maxConcurrentRenders ?? 2;
  const hangGraceMs = options.hangGraceMs ?? 60_000;
  const callbackPolicy = { ...defaultCallbackPolicy, ...options.callbackPolicy };
  const now = options.now ?? (() => new Date());
  const writeLog = options.log ?? defaultLog;
  const log = (event: string, fields: Record<string, unknown> = {}) =>
    writeLog({ event, renderer: name, ...fields });
  const tools: MediaTools = {
    ffmpeg: options.ffmpegPath ?? "ffmpeg",
    ffprobe: options.ffprobePath ?? "ffprobe",
    fontFile: options.fontFile === undefined ? findFontFile() : options.fontFile,
  };
  if (!tools.fontFile) {
    log("font_missing", { message: "no TrueType font found: cards are rendered without text" });
  }
  const storage = new VideoStorage(options.storageDir, options.ttlHours ?? 24, now);
  await Deno.mkdir(options.storageDir, { recursive: true });
  const pickFault = createFaultPicker(options.faults ?? {});

  const records = new Map<string, RenderRecord>();
  const active = new Set<RenderRecord>();
  let publicUrl = "";

  // ---- the render itself -------------------------------------------------------------------------

  const callbackBody = (record: RenderRecord, event: Record<string, unknown>) => ({
    job_id: record.job_id,
    attempt: record.attempt,
    ...event,
  });

  async function deliver(record: RenderRecord, event: Record<string, unknown>): Promise<void> {
    await sendCallback(
      record.callback,
      callbackBody(record, event),
      callbackPolicy,
      record.controller.signal,
    );
    record.callbacks_sent++;
  }

  async function enterStage(record: RenderRecord, stage: Stage, progress: number): Promise<void> {
    record.stage = stage;
    record.progress = progress;
    log("render_stage", { job_id: record.job_id, attempt: record.attempt, stage, progress });
    try {
      await deliver(record, { type: "progress", stage, progress });
    } catch (err) {
      // Progress is advisory: if the queue is briefly unreachable, keep rendering.
      if (!(err instanceof CallbackUndeliveredError)) throw err;
      log("callback_undelivered", {
        job_id: record.job_id,
        attempt: record.attempt,
        stage,
        error: err.message,
      });
    }
  }

  async function injectFault(record: RenderRecord): Promise<void> {
    if (record.fault === "retryable") {
      throw new RetryableRenderError("injected fault: retryable render failure");
    }
    if (record.fault === "permanent") {
      throw new PermanentRenderError("injected fault: permanent render failure");
    }
    if (record.fault === "hang") {
      record.state = "hung";
      log("render_hung", { job_id: record.job_id, attempt: record.attempt, stage: record.stage });
      const until = (record.deadline?.getTime() ?? Date.now() + DEFAULT_HANG_WITHOUT_DEADLINE_MS) +
        hangGraceMs;
      await sleep(Math.max(0, until - Date.now()), record.controller.signal);
      throw new HangExpiredError("hung render gave up after its deadline");
    }
  }

  async function render(record: RenderRecord): Promise<void> {
    const signal = record.controller.signal;
    record.temp_dir = await Deno.makeTempDir({ dir: options.tempRoot, prefix: `render-${name}-` });
    await enterStage(record, "generating_screenshot", 20);
    const card = await renderTitleCard(
      tools,
      record.temp_dir,
      cardTextForJob(record.job_type, record.payload),
      signal,
    );
    await injectFault(record);
    await enterStage(record, "composing_video", 60);
    const video = await composeVideo(tools, record.temp_dir, card, clipSeconds, fps, signal);
    await enterStage(record, "saving_file", 80);
    const probe = await probeVideo(tools, video, signal);
    record.video = await storage.save(video, record);
    signal.throwIfAborted();
    const downloadUrl = `${publicUrl}/files/${record.video.filename}`;
    record.result = {
      video_url: downloadUrl,
      download_url: downloadUrl,
      filename: record.video.filename,
      file_size: record.video.file_size,
      duration_seconds: Math.round(probe.durationSeconds * 1000) / 1000,
      resolution: `${probe.width}x${probe.height}`,
      expires_at: record.video.expires_at,
      renderer: name,
    };
    record.progress = 100;
    const deliveries = record.fault === "duplicate" ? 2 : 1;
    for (let i = 0; i < deliveries; i++) await deliver(record, { type: "completed", result: record.result });
    record.state = "completed";
  }

  /** Decides the final state after a render threw, tells the queue where it should hear, drops the output. */
  async function settleFailure(record: RenderRecord, err: unknown): Promise<void> {
    const ids = { job_id: record.job_id, attempt: record.attempt };
    const signal = record.controller.signal;
    const keepVideo = err instanceof CallbackUndeliveredError; // the queue may have recorded it before the network broke
    if (record.video && !keepVideo) {
      await storage.remove(record.video.filename).catch(() => {});
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
        await deliver(record, { type: "failed", error: record.error, retryable });
      } catch (deliveryErr) {
        log("callback_undelivered", { ...ids, error: String(deliveryErr) });
      }
    }
  }

  async function runRender(record: RenderRecord): Promise<void> {
    try {
      await render(record);
    } catch (err) {
      await settleFailure(record, err);
    } finally {
      if (record.temp_dir) await Deno.remove(record.temp_dir, { recursive: true }).catch(() => {});
      active.delete(record);
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
  }

  function forgetOldRecords(): void {
    for (const [key, record] of records) {
      if (records.size <= FINISHED_RECORDS_KEPT) break;
      if (!active.has(record)) records.delete(key);
    }
  }

  // ---- HTTP --------------------------------------------------------------------------------------

  async function readJson(req: Request): Promise<unknown> {
    try {
      return await req.json();
    } catch {
      throw httpError(400, "invalid_request", "The body must be a JSON object.");
    }
  }

  async function handleDispatch(req: Request): Promise<Response> {
    const parsed = DispatchSchema.safeParse(await readJson(req));
    if (!parsed.success) {
      const details = parsed.error.issues.map((i) => ({ field: i.path.join("."), message: i.message }));
      return httpError(
        400,
        "invalid_request",
        "The dispatch body does not match the render protocol.",
        details,
      );
    }
    const body = parsed.data;
    const key = renderKey(body.job_id, body.attempt);
    const existing = records.get(key);
    // A repeated dispatch of the same attempt (the worker retried after a lost answer) starts nothing new.
    if (existing && active.has(existing)) return json(202, { accepted: true, duplicate: true });
    if (existing?.state === "completed") return json(200, { result: existing.result });
    if (active.size >= maxConcurrent) {
      log("render_refused", { job_id: body.job_id, attempt: body.attempt, active: active.size });
      return json(
        429,
        {
          error: {
            code: "rate_limited",
            message: `This renderer is busy (${active.size} of ${maxConcurrent}).`,
          },
        },
        { "retry-after": "5" },
      );
    }
    const record: RenderRecord = {
      job_id: body.job_id,
      attempt: body.attempt,
      job_type: body.job_type,
      payload: body.payload,
      callback: body.callback,
      deadline: body.deadline ? new Date(body.deadline) : null,
      fault: pickFault(),
      state: "rendering",
      stage: null,
      progress: 0,
      temp_dir: null,
      video: null,
      result: null,
      error: null,
      callbacks_sent: 0,
      startedAt: performance.now(),
      controller: new AbortController(),
      done: Promise.resolve(),
    };
    records.delete(key); // a failed/cancelled attempt re-dispatched: start afresh, newest last
    records.set(key, record);
    active.add(record);
    forgetOldRecords();
    log("render_accepted", {
      job_id: record.job_id,
      attempt: record.attempt,
      job_type: record.job_type,
      fault: record.fault,
    });
    record.done = runRender(record);
    return json(202, { accepted: true });
  }

  async function handleCancel(req: Request): Promise<Response> {
    const parsed = CancelSchema.safeParse(await readJson(req));
    if (!parsed.success) return httpError(400, "invalid_request", 'Send {"job_id", "attempt"}.');
    const { job_id, attempt } = parsed.data;
    const record = attempt !== undefined
      ? records.get(renderKey(job_id, attempt))
      : [...records.values()].reverse().find((r) => r.job_id === job_id);
    if (!record) return httpError(404, "not_found", "This renderer has no render for that job and attempt.");
    const wasActive = active.has(record);
    if (wasActive) {
      record.controller.abort(new RenderStoppedError("cancel"));
      // Answer once ffmpeg is dead and temp files are gone, so "200" means "stopped and clean".
      await Promise.race([record.done, sleep(CANCEL_WAIT_MS)]);
    }
    return json(200, { cancelled: wasActive, job_id, attempt: record.attempt, state: record.state });
  }

  async function handleFile(req: Request, filename: string): Promise<Response> {
    const video = await storage.lookup(filename);
    if (!video) return httpError(404, "not_found", "No such video, or it has expired.");
    const headers = {
      "content-type": "video/mp4",
      "content-length": String(video.file_size),
      "cache-control": "private, max-age=3600",
      "expires": new Date(video.expires_at).toUTCString(),
    };
    if (req.method === "HEAD") return new Response(null, { headers });
    try {
      const file = await Deno.open(storage.pathOf(filename), { read: true });
      return new Response(file.readable, { headers });
    } catch {
      return httpError(404, "not_found", "No such video, or it has expired."); // removed since the lookup
    }
  }

  async function route(req: Request): Promise<Response> {
    const { pathname } = new URL(req.url);
    // The endpoint may be registered as `<base>/render` (documented) or as the bare `<base>`.
    const path = pathname.replace(/^\/render(?=\/|$)/, "") || "/";
    if (path === "/health" && req.method === "GET") {
      return json(200, { ok: true, name, active: active.size, max_concurrent: maxConcurrent });
    }
    if (pathname.startsWith("/files/") && (req.method === "GET" || req.method === "HEAD")) {
      let filename: string;
      try {
        filename = decodeURIComponent(pathname.slice("/files/".length));
      } catch {
        return httpError(404, "not_found", "No such video.");
      }
      return await handleFile(req, filename);
    }
    if (path === "/" || path === "/cancel") {
      if (req.method !== "POST") return httpError(405, "method_not_allowed", "Use POST.");
      return path === "/" ? await handleDispatch(req) : await handleCancel(req);
    }
    return httpError(404, "not_found", "Unknown path.");
  }

  async function handler(req: Request): Promise<Response> {
    try {
      return await route(req);
    } catch (err) {
      if (err instanceof Response) return err;
      log("request_failed", { path: new URL(req.url).pathname, error: String(err) });
      return httpError(500, "internal", "The renderer failed unexpectedly.");
    }
  }

  // ---- lifecycle ---------------------------------------------------------------------------------

  const listening = Promise.withResolvers<Deno.NetAddr>();
  const server = Deno.serve({
    hostname,
    port: options.port ?? 0,
    onListen: (addr) => listening.resolve(addr as Deno.NetAddr),
  }, handler);
  const addr = await listening.promise;
  const url = `http://${hostname === "0.0.0.0" ? "127.0.0.1" : hostname}:${addr.port}`;
  publicUrl = (options.publicUrl ?? url).replace(/\/+$/, "");

  let cleanupRunning: Promise<unknown> = Promise.resolve();
  const cleanupExpiredFiles = async (at?: Date): Promise<string[]> => {
    const removed = await storage.removeExpired(at);
    for (const filename of removed) log("file_expired", { filename });
    return removed;
  };
  const runScheduledCleanup = () => {
    cleanupRunning = cleanupExpiredFiles().catch((err) => log("cleanup_failed", { error: String(err) }));
  };
  runScheduledCleanup();
  const cleanupInterval = options.cleanupIntervalMs ?? 10 * 60_000;
  const cleanupTimer = cleanupInterval > 0 ? setInterval(runScheduledCleanup, cleanupInterval) : undefined;

  log("renderer_listening", {
    url,
    endpoint_url: `${url}/render`,
    public_url: publicUrl,
    storage_dir: options.storageDir,
    max_concurrent: maxConcurrent,
    clip_seconds: clipSeconds,
    faults: options.faults ?? {},
    font_file: tools.fontFile,
  });

  let closing: Promise<void> | undefined;
  return {
    name,
    url,
    endpointUrl: `${url}/render`,
    port: addr.port,
    storageDir: options.storageDir,
    activeRenders: () => active.size,
    getRender: (jobId, attempt) => {
      const record = records.get(renderKey(jobId, attempt));
      return record && snapshot(record);
    },
    waitForRender: async (jobId, attempt) => {
      const record = records.get(renderKey(jobId, attempt));
      if (!record) throw new Error(`no render ${renderKey(jobId, attempt)}`);
      await record.done;
      return snapshot(record);
    },
    cleanupExpiredFiles,
    close: () =>
      closing ??= (async () => {
        clearInterval(cleanupTimer);
        for (const record of active) record.controller.abort(new RenderStoppedError("shutdown"));
        await Promise.allSettled([...records.values()].map((r) => r.done));
        await cleanupRunning;
        await server.shutdown();
        log("renderer_stopped");
      })(),
  };
}
