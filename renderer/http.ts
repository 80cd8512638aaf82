// HTTP plumbing of the render service: JSON answers, JSON bodies, and the one place an error becomes a response.
import { RendererHttpError } from "./errors.ts";

/** A JSON response; the argument order of `shared/http.ts`: body first, then status. */
export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

/** The request body as JSON; 400 when it is not JSON at all (its shape is the protocol's business). */
export async function readJson(req: Request): Promise<unknown> {
  try {
    return await req.json();
  } catch {
    throw new RendererHttpError(400, "invalid_request", "The body must be a JSON object.");
  }
}

/**
 * Turns anything a request handler threw into the contract's error answer: a RendererHttpError as it says,
 * anything else (after `unexpected` has logged it) as a 500 that reveals nothing.
 */
export function errorResponse(err: unknown, unexpected: (err: unknown) => void): Response {
  if (!(err instanceof RendererHttpError)) {
    unexpected(err);
    return errorResponse(
      new RendererHttpError(500, "internal", "The renderer failed unexpectedly."),
      unexpected,
    );
  }
  const { status, code, message, details, headers } = err;
  return json({ error: { code, message, ...(details === undefined ? {} : { details }) } }, status, headers);
}
