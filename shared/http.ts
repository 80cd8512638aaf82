// HTTP plumbing shared by every function: routing by sub-path and verb, CORS, JSON bodies with a size limit.
import { errorResponse, HttpError } from "./errors.ts";

/** Largest request body accepted, in bytes (documented in the README). */
export const MAX_BODY_BYTES = 64 * 1024;

/** Supabase's recommended CORS headers for browser callers; every response carries them. */
export const corsHeaders: Record<string, string> = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
};

export type RouteHandler = (req: Request, url: URL) => Promise<Response>;
type Method = "GET" | "POST";
/** Sub-path after the function's name ("" for the function itself, "metrics", "events") → verb → handler. */
export type Routes = Record<string, Partial<Record<Method, RouteHandler>>>;

/**
 * Builds a function's `handler(req)`: answers CORS preflight, picks the route by the path after the
 * function's name (the gateway, like Supabase, passes `/<name>/...`), answers 404/405 for unknown
 * paths and verbs, and turns anything thrown into the contract's error body.
 */
export function router(functionName: string, routes: Routes): (req: Request) => Promise<Response> {
  return async (req) => {
    const response = await route(functionName, routes, req).catch(errorResponse);
    return withCors(response);
  };
}

async function route(functionName: string, routes: Routes, req: Request): Promise<Response> {
  if (req.method === "OPTIONS") return new Response("ok", { status: 200 });
  const url = new URL(req.url);
  const verbs = routes[subPath(url.pathname, functionName)];
  if (!verbs) throw new HttpError(404, `There is no ${url.pathname}; see the API documentation for paths.`);
  const handle = verbs[req.method as Method];
  if (!handle) {
    const allowed = Object.keys(verbs).join(", ");
    throw new HttpError(405, `Use ${allowed} for this path.`, undefined, { Allow: `${allowed}, OPTIONS` });
  }
  return await handle(req, url);
}

/** "/functions/v1/status/metrics" or "/status/metrics" → "metrics"; "/status" → "". */
function subPath(pathname: string, functionName: string): string {
  const parts = pathname.split("/").filter(Boolean);
  const at = parts.indexOf(functionName);
  return at < 0 ? "" : parts.slice(at + 1).join("/");
}

function withCors(response: Response): Response {
  for (const [name, value] of Object.entries(corsHeaders)) response.headers.set(name, value);
  return response;
}

/** A JSON response. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return Response.json(body, { status, headers });
}

/**
 * Reads a JSON request body: 415 unless it is declared JSON, 413 when it is over MAX_BODY_BYTES
 * (by Content-Length, and while reading, since a chunked body has none), 400 when it is not UTF-8 JSON
 * or breaks off before its end.
 */
export async function readJson(req: Request): Promise<unknown> {
  const type = req.headers.get("content-type") ?? "";
  if (!/^application\/([\w.+-]+\+)?json\b/i.test(type.trim())) {
    throw new HttpError(415, "Send the body as JSON with Content-Type: application/json.");
  }
  if (Number(req.headers.get("content-length") ?? 0) > MAX_BODY_BYTES) throw tooLarge();
  const bytes = await readLimited(req.body);
  try {
    // fatal: bytes that are not UTF-8 are refused, not silently replaced with U+FFFD
    return JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    throw new HttpError(400, "The body is not valid UTF-8 JSON.");
  }
}

async function readLimited(body: ReadableStream<Uint8Array> | null): Promise<Uint8Array> {
  if (!body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += chunk.byteLength;
      if (size > MAX_BODY_BYTES) throw tooLarge(); // leaving the loop cancels the stream
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    // The client broke the framing: fewer bytes than its Content-Length, a bad chunk, a dropped connection.
    throw new HttpError(400, "The body could not be read in full; send the whole body again.");
  }
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

function tooLarge(): HttpError {
  return new HttpError(413, `The body is larger than ${MAX_BODY_BYTES / 1024} KiB; send less.`);
}
