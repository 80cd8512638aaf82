// The worker's HTTP face for supervisors and load balancers:
//   GET /health  200 {"status": "ok", "database": "up", ...status} or 503 {"status": "unavailable",
//                "database": "down", ...status} when a `select 1` fails or takes over 2 s
//   GET /status  200 the worker's status (seed 004's getStatus()), without touching the database
import type { QueueWorker } from "./worker.ts";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

/** Answers /health and /status for `worker`. */
export function healthHandler(worker: QueueWorker): (req: Request) => Promise<Response> {
  return async (req) => {
    const path = new URL(req.url).pathname;
    if (req.method !== "GET") {
      return json(405, { error: { code: "method_not_allowed", message: "Use GET." } });
    }
    if (path === "/status") return json(200, worker.getStatus());
    if (path !== "/health") {
      return json(404, { error: { code: "not_found", message: "GET /health or /status." } });
    }
    const up = await worker.databaseReachable();
    return json(up ? 200 : 503, {
      status: up ? "ok" : "unavailable",
      database: up ? "up" : "down",
      ...worker.getStatus(),
    });
  };
}
