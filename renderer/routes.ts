// The render service's HTTP routes: dispatch, cancel, files and health (README "Protocol").
import { RendererHttpError, RenderStoppedError } from "./errors.ts";
import { errorResponse, json, readJson } from "./http.ts";
import type { Log } from "./log.ts";
import { type DispatchRequest, parseCancel, parseDispatch } from "./protocol.ts";
import type { Renders } from "./renders.ts";
import type { VideoStorage } from "./storage.ts";

const CANCEL_WAIT_MS = 10_000;
/** Seconds a full renderer asks the worker to wait before dispatching to it again. */
const BUSY_RETRY_AFTER_SECONDS = 5;

export interface RouteDeps {
  name: string;
  maxConcurrent: number;
  renders: Renders;
  storage: VideoStorage;
  /** Starts rendering a dispatched attempt in the background (the slot is known to be free). */
  startRender: (request: DispatchRequest) => void;
  log: Log;
}

/** The request handler: every route, and the one place a thrown error becomes a response. */
export function rendererRoutes(deps: RouteDeps): (req: Request) => Promise<Response> {
  const unexpected = (req: Request) => (err: unknown) =>
    deps.log("request_failed", { path: new URL(req.url).pathname, error: String(err) });
  return async (req) => {
    try {
      return await route(deps, req);
    } catch (err) {
      return errorResponse(err, unexpected(req));
    }
  };
}

async function route(deps: RouteDeps, req: Request): Promise<Response> {
  const { pathname } = new URL(req.url);
  // The endpoint may be registered as `<base>/render` (documented) or as the bare `<base>`.
  const path = pathname.replace(/^\/render(?=\/|$)/, "") || "/";
  if (path === "/health" && req.method === "GET") return health(deps);
  if (pathname.startsWith("/files/") && (req.method === "GET" || req.method === "HEAD")) {
    return await file(deps, req, fileName(pathname));
  }
  if (path === "/" || path === "/cancel") {
    if (req.method !== "POST") throw new RendererHttpError(405, "method_not_allowed", "Use POST.");
    return path === "/" ? await dispatch(deps, req) : await cancel(deps, req);
  }
  throw new RendererHttpError(404, "not_found", "Unknown path.");
}

/** `POST /render`: start the attempt (202), or say what became of it, or that there is no room (429). */
async function dispatch(deps: RouteDeps, req: Request): Promise<Response> {
  const request = parseDispatch(await readJson(req));
  const { renders, maxConcurrent } = deps;
  const existing = renders.find(request.job_id, request.attempt);
  // A repeated dispatch of the same attempt (the worker retried after a lost answer) starts nothing new.
  if (existing && renders.isRunning(existing)) return json({ accepted: true, duplicate: true }, 202);
  if (existing?.state === "completed") return json({ result: existing.result }, 200);
  if (renders.running >= maxConcurrent) {
    deps.log("render_refused", { job_id: request.job_id, attempt: request.attempt, active: renders.running });
    throw new RendererHttpError(
      429,
      "rate_limited",
      `This renderer is busy (${renders.running} of ${maxConcurrent}).`,
      undefined,
      { "retry-after": String(BUSY_RETRY_AFTER_SECONDS) },
    );
  }
  deps.startRender(request);
  return json({ accepted: true }, 202);
}

/** `POST /render/cancel`: stop the render and answer once it is stopped and clean. */
async function cancel(deps: RouteDeps, req: Request): Promise<Response> {
  const { job_id, attempt } = parseCancel(await readJson(req));
  const record = deps.renders.find(job_id, attempt);
  if (!record) {
    throw new RendererHttpError(404, "not_found", "This renderer has no render for that job and attempt.");
  }
  const wasRunning = deps.renders.isRunning(record);
  // Answer once ffmpeg is dead and temp files are gone, so "200" means "stopped and clean".
  if (wasRunning) await deps.renders.stop(record, new RenderStoppedError("cancel"), CANCEL_WAIT_MS);
  return json({ cancelled: wasRunning, job_id, attempt: record.attempt, state: record.state }, 200);
}

/** `GET`/`HEAD /files/<name>`: a stored video that has not expired. */
async function file(deps: RouteDeps, req: Request, filename: string): Promise<Response> {
  const video = await deps.storage.lookup(filename);
  if (!video) throw noSuchVideo();
  const headers = {
    "content-type": "video/mp4",
    "content-length": String(video.file_size),
    "cache-control": "private, max-age=3600",
    "expires": new Date(video.expires_at).toUTCString(),
  };
  if (req.method === "HEAD") return new Response(null, { headers });
  try {
    const opened = await Deno.open(deps.storage.pathOf(filename), { read: true });
    return new Response(opened.readable, { headers });
  } catch {
    throw noSuchVideo(); // removed since the lookup
  }
}

/** `GET /health` */
function health({ name, renders, maxConcurrent }: RouteDeps): Response {
  return json({ ok: true, name, active: renders.running, max_concurrent: maxConcurrent }, 200);
}

function fileName(pathname: string): string {
  try {
    return decodeURIComponent(pathname.slice("/files/".length));
  } catch {
    throw new RendererHttpError(404, "not_found", "No such video.");
  }
}

const noSuchVideo = () => new RendererHttpError(404, "not_found", "No such video, or it has expired.");
