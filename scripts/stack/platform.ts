// LOCAL-ONLY: what Supabase's platform runs around the database, in one Deno process.
//   - the functions gateway: /functions/v1/<name>/... → supabase/functions/<name>/handler.ts, with the
//     path rewritten to /<name>/... as Supabase's edge runtime does, and the env Supabase injects
//   - the pg_net sender: sends what net.http_post() queued, after the queuing transaction committed
//   - /auth/v1/.well-known/jwks.json, as Supabase Auth serves it
//   - /dashboard/: the static admin dashboard (dashboard/index.html; host it anywhere in production)
// Usage: deno run -A platform.ts <stack dir> [parent pid: stop the stack when it exits]
import postgres from "postgres";
import { PROJECT_ROOT, readEnvFile, stopCluster } from "./stack.ts";

const [dir, parentArg] = Deno.args;
const env = readEnvFile(`${dir}/env`);
for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);
Deno.writeTextFileSync(`${dir}/platform.pid`, String(Deno.pid));

const log = (event: string, fields: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ ts: new Date().toISOString(), event, ...fields }));

// Supabase's edge runtime offers EdgeRuntime.waitUntil for background work after the response.
(globalThis as Record<string, unknown>).EdgeRuntime = {
  waitUntil(promise: Promise<unknown>) {
    promise.catch((err) => log("wait_until_rejected", { error: String(err) }));
  },
};

type Handler = (req: Request) => Promise<Response> | Response;
const handlers = new Map<string, Promise<Handler | undefined>>();

function loadHandler(name: string): Promise<Handler | undefined> {
  if (!/^[a-z0-9-]+$/.test(name)) return Promise.resolve(undefined);
  if (!handlers.has(name)) {
    const path = `${PROJECT_ROOT}/supabase/functions/${name}/handler.ts`;
    handlers.set(name, import(path).then((m) => m.handler as Handler).catch(() => undefined));
  }
  return handlers.get(name)!;
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

const server = Deno.serve({
  hostname: "127.0.0.1",
  port: Number(new URL(env.API_URL).port),
  onListen: () => log("gateway_listening", { url: env.API_URL }),
}, async (req) => {
  const url = new URL(req.url);
  if (url.pathname === "/health") return json(200, { ok: true });
  if (url.pathname === "/auth/v1/.well-known/jwks.json") return json(200, JSON.parse(env.SUPABASE_JWKS));
  if (url.pathname === "/dashboard/" || url.pathname === "/dashboard") {
    const page = await Deno.readFile(`${PROJECT_ROOT}/dashboard/index.html`);
    return new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } });
  }
  const match = url.pathname.match(/^\/functions\/v1\/([^/]+)(\/.*)?$/);
  const handler = match ? await loadHandler(match[1]) : undefined;
  if (!match || !handler) return json(404, { error: { code: "not_found", message: "No such function." } });
  const inner = new URL(`/${match[1]}${match[2] ?? ""}${url.search}`, url.origin);
  return await handler(new Request(inner, req));
});

// pg_net sender ----------------------------------------------------------------
const sql = postgres(env.SUPABASE_DB_URL, { max: 2, prepare: false, onnotice: () => {} });
let draining: Promise<void> | undefined;
let drainAgain = false;

async function sendOne(
  r: {
    id: string;
    url: string;
    headers: Record<string, string>;
    body: Uint8Array | null;
    timeout_milliseconds: number;
  },
) {
  try {
    const res = await fetch(r.url, {
      method: "POST",
      headers: r.headers,
      body: r.body ? new Uint8Array(r.body) : null,
      signal: AbortSignal.timeout(r.timeout_milliseconds),
    });
    const content = await res.text();
    await sql`insert into net._http_response (id, status_code, content_type, headers, content, timed_out)
              values (${r.id}, ${res.status}, ${res.headers.get("content-type")},
                      ${sql.json(Object.fromEntries(res.headers))}, ${content}, false)`;
  } catch (err) {
    const timedOut = err instanceof DOMException && err.name === "TimeoutError";
    await sql`insert into net._http_response (id, timed_out, error_msg)
              values (${r.id}, ${timedOut}, ${String(err)})`;
  }
}

function drain(): Promise<void> {
  if (draining) {
    drainAgain = true;
    return draining;
  }
  draining = (async () => {
    do {
      drainAgain = false;
      const batch = await sql`delete from net.http_request_queue
        where id in (select id from net.http_request_queue order by id limit 100 for update skip locked)
        returning id, url, headers, body, timeout_milliseconds`;
      await Promise.all(batch.map((r) => sendOne(r as never)));
      if (batch.length === 100) drainAgain = true;
    } while (drainAgain);
  })().catch((err) => log("net_sender_error", { error: String(err) })).finally(() => draining = undefined);
  return draining;
}

await sql.listen("pg_net_request", () => void drain());
const poll = setInterval(() => void drain(), 1000); // also catches requests queued while we were starting

// Lifecycle ------------------------------------------------------------------------
let stopping = false;
async function shutdown(stopDatabase: boolean) {
  if (stopping) return;
  stopping = true;
  clearInterval(poll);
  clearInterval(parentWatch);
  await server.shutdown().catch(() => {});
  await sql.end({ timeout: 2 }).catch(() => {});
  if (stopDatabase) await stopCluster(dir);
  Deno.exit(0);
}

Deno.addSignalListener("SIGTERM", () => void shutdown(false));
Deno.addSignalListener("SIGINT", () => void shutdown(false));

const parentPid = Number(parentArg) || 0;
// A test run that dies without stopping its stack must not leave Postgres and this process behind.
const parentWatch = setInterval(() => {
  if (!parentPid) return;
  try {
    Deno.kill(parentPid, "SIGCONT");
  } catch {
    log("parent_exited", { pid: parentPid });
    void shutdown(true);
  }
}, 1000);
