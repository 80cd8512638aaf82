// LOCAL-ONLY: what Supabase's platform runs around the database, in one Deno process.
//   - the functions gateway: /functions/v1/<name>/... → supabase/functions/<name>/handler.ts, with the
//     path rewritten to /<name>/... as Supabase's edge runtime does, and the env Supabase injects
//   - the pg_net sender: sends what net.http_post() queued, after the queuing transaction committed
//   - /auth/v1/.well-known/jwks.json, as Supabase Auth serves it
//   - /realtime/v1/websocket: Realtime's Broadcast on private channels (realtime.ts)
//   - /dashboard/: the operator's dashboard (dashboard/dist/, built when missing; host it anywhere in production)
// That process is supervised, as Supabase restarts a failed function runtime: this file, started as
// `deno run -A platform.ts <stack dir> [parent pid]`, is the supervisor. It runs the platform as a child
// (`platform.ts --serve <stack dir> <supervisor pid>`), records the child's pid in <stack dir>/platform.pid
// (its own in supervisor.pid), and starts a new child whenever one dies. SIGTERM/SIGINT stop both; when
// the parent pid exits (a test run that died), it stops the stack's Postgres too.
import postgres from "postgres";
import { startRealtime } from "./realtime.ts";
import { PROJECT_ROOT, readEnvFile, stopCluster } from "./stack.ts";

const log = (event: string, fields: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ ts: new Date().toISOString(), event, ...fields }));

/** True while process `pid` exists. */
function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

// Supervisor -----------------------------------------------------------------------------------------------

/** A child that lived shorter than this is restarted after RESTART_DELAY_MS, so a failing start cannot spin. */
const QUICK_EXIT_MS = 5_000;
const RESTART_DELAY_MS = 1_000;

async function supervise(dir: string, parentPid: number): Promise<void> {
  Deno.writeTextFileSync(`${dir}/supervisor.pid`, String(Deno.pid));
  let child: Deno.ChildProcess | undefined;
  let stopping = false;
  let wake = () => {};

  const stop = async (stopDatabase: boolean) => {
    if (stopping) return;
    stopping = true;
    clearInterval(parentWatch);
    wake();
    const running = child;
    if (running) {
      try {
        running.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          running.kill("SIGKILL");
        } catch { /* already gone */ }
      }, 10_000);
      await running.status;
      clearTimeout(timer);
    }
    if (stopDatabase) await stopCluster(dir);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => void stop(false));
  Deno.addSignalListener("SIGINT", () => void stop(false));
  // A test run that dies without stopping its stack must not leave Postgres and these processes behind.
  const parentWatch = setInterval(() => {
    if (parentPid && !alive(parentPid)) {
      log("parent_exited", { pid: parentPid });
      void stop(true);
    }
  }, 1000);

  while (!stopping) {
    const started = Date.now();
    child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL(import.meta.url).pathname, "--serve", dir, String(Deno.pid)],
      stdin: "null",
      stdout: "inherit",
      stderr: "inherit",
    }).spawn();
    Deno.writeTextFileSync(`${dir}/platform.pid`, String(child.pid));
    const status = await child.status;
    if (stopping) break;
    log("platform_exited", { pid: child.pid, code: status.code, signal: status.signal });
    if (Date.now() - started < QUICK_EXIT_MS) {
      // a start that fails at once (its port still taken, say): try again shortly, not in a busy loop
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, RESTART_DELAY_MS);
        wake = () => (clearTimeout(timer), resolve());
      });
    }
  }
}

// The platform ---------------------------------------------------------------------------------------------

function servePlatform(dir: string, supervisorPid: number): void {
  const env = readEnvFile(`${dir}/env`);
  for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);

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
    onListen: () => log("gateway_listening", { url: env.API_URL, pid: Deno.pid }),
  }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/health") return json(200, { ok: true, pid: Deno.pid });
    if (url.pathname === "/auth/v1/.well-known/jwks.json") return json(200, JSON.parse(env.SUPABASE_JWKS));
    if (url.pathname === "/realtime/v1/websocket") return await realtime.connect(req);
    if (url.pathname === "/dashboard") return Response.redirect(`${url.origin}/dashboard/`, 301);
    if (url.pathname.startsWith("/dashboard/")) {
      const { dashboardFile } = await import("../../dashboard/server.ts");
      // No Auth server here: tokens come from `deno task stack token`. Realtime: the stand-in above.
      return await dashboardFile(url.pathname.slice("/dashboard/".length), {
        supabaseUrl: env.SUPABASE_URL,
        publishableKey: env.PUBLISHABLE_KEY,
        signIn: "token",
        realtime: true,
      });
    }
    const match = url.pathname.match(/^\/functions\/v1\/([^/]+)(\/.*)?$/);
    const handler = match ? await loadHandler(match[1]) : undefined;
    if (!match || !handler) return json(404, { error: { code: "not_found", message: "No such function." } });
    const inner = new URL(`/${match[1]}${match[2] ?? ""}${url.search}`, url.origin);
    return await handler(new Request(inner, req));
  });

  const sender = startNetSender(env.SUPABASE_DB_URL);
  const realtime = startRealtime(env.SUPABASE_DB_URL);

  let stopping = false;
  async function shutdown() {
    if (stopping) return;
    stopping = true;
    clearInterval(supervisorWatch);
    await realtime.stop(); // closes its sockets, which the server would otherwise wait for
    await server.shutdown().catch(() => {});
    await sender.stop();
    Deno.exit(0);
  }
  Deno.addSignalListener("SIGTERM", () => void shutdown());
  Deno.addSignalListener("SIGINT", () => void shutdown());
  // Without its supervisor (killed), this process would be an orphan nobody stops.
  const supervisorWatch = setInterval(() => {
    if (supervisorPid && !alive(supervisorPid)) {
      log("supervisor_exited", { pid: supervisorPid });
      void shutdown();
    }
  }, 1000);
}

// pg_net sender ----------------------------------------------------------------------------------------------

/**
 * Drains net.http_request_queue: on each NOTIFY pg_net_request (sent at commit) and every second (which also
 * catches what was queued while the database or this process restarted). The database going away is
 * expected: each kind of failure is logged once (`net_sender_error`), then `net_sender_recovered`, and the
 * LISTEN is set up again, since postgres.js gives up re-listening if the database is still down.
 */
function startNetSender(dbUrl: string): { stop(): Promise<void> } {
  const sql = postgres(dbUrl, {
    max: 2,
    prepare: false,
    // postgres.js fetches array types on each new connection in a promise nobody awaits: a connection that
    // dies meanwhile (a restart) would end this process with an unhandled rejection. No arrays are used.
    fetch_types: false,
    // postgres.js's default backoff grows to 10-20 s while the database is down (it polls every second),
    // which would delay the first sends after the database is back by as much.
    backoff: () => 0.5,
    onnotice: () => {},
    connection: { application_name: "video-queue-pg-net-sender" },
  });
  let draining: Promise<void> | undefined;
  let drainAgain = false;
  let failure: { message: string; polls: number } | undefined;
  let listener: { unlisten(): Promise<void> } | undefined;
  let listening: Promise<void> | undefined;

  type Request = {
    id: string;
    url: string;
    headers: Record<string, string>;
    body: Uint8Array | null;
    timeout_milliseconds: number;
  };

  async function sendOne(r: Request) {
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

  function listen(): void {
    listening ??= (async () => {
      const previous = listener;
      listener = undefined;
      await previous?.unlisten().catch(() => {});
      listener = await sql.listen("pg_net_request", () => void drain());
    })().catch(() => {/* the next successful poll tries again */}).finally(() => listening = undefined);
  }

  function drain(): Promise<void> {
    if (draining) {
      drainAgain = true;
      return draining;
    }
    draining = (async () => {
      do {
        drainAgain = false;
        const batch = await sql<Request[]>`delete from net.http_request_queue
          where id in (select id from net.http_request_queue order by id limit 100 for update skip locked)
          returning id, url, headers, body, timeout_milliseconds`;
        await Promise.all(batch.map(sendOne));
        if (batch.length === 100) drainAgain = true;
      } while (drainAgain);
      if (failure) {
        log("net_sender_recovered", { failed_polls: failure.polls });
        failure = undefined;
        listen();
      } else if (!listener) listen();
    })().catch((err) => {
      const message = String((err as Error)?.message ?? err);
      if (failure?.message !== message) log("net_sender_error", { error: message });
      failure = { message, polls: (failure?.polls ?? 0) + 1 };
    }).finally(() => draining = undefined);
    return draining;
  }

  listen();
  const poll = setInterval(() => void drain(), 1000);
  return {
    async stop() {
      clearInterval(poll);
      await sql.end({ timeout: 2 }).catch(() => {});
    },
  };
}

if (Deno.args[0] === "--serve") servePlatform(Deno.args[1], Number(Deno.args[2]) || 0);
else await supervise(Deno.args[0], Number(Deno.args[1]) || 0);
