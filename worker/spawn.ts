// Starts the long-running worker as a process of its own (worker/main.ts, what `deno task worker` runs) and
// reads its JSON log lines: resolves once it logs `worker_started`; `await using` stops it (SIGTERM).
//   await using worker = await spawnWorker({ workerId: "w1", env: { SUPABASE_DB_URL } });
//   await fetch(`${worker.healthUrl}/health`);
import { fileURLToPath } from "node:url";
import { readLines } from "../renderer/spawn.ts";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

export type WorkerLogEntry = { event: string } & Record<string, unknown>;

export interface SpawnWorkerOptions {
  workerId: string;
  /** Added to this process's environment (SUPABASE_DB_URL at least, unless `args` has --db-url). */
  env?: Record<string, string>;
  /** More flags of worker/main.ts, e.g. `["--interval-ms", "500", "--grace-ms", "1000"]`. */
  args?: string[];
}

export interface SpawnedWorker extends AsyncDisposable {
  workerId: string;
  pid: number;
  /** `http://host:port` of GET /health and GET /status. */
  healthUrl: string;
  /** Every entry logged so far, in order. */
  readonly logs: WorkerLogEntry[];
  /** Sends a signal (SIGTERM: a graceful stop). */
  kill(signal: Deno.Signal): void;
  /** Resolves with the exit status (once the log is read to the end). */
  readonly exited: Promise<Deno.CommandStatus>;
  /** SIGTERM, then the exit status. Repeated calls share the first. */
  close(): Promise<Deno.CommandStatus>;
}

/** Starts worker/main.ts with a free health port; resolves once it logs `worker_started`. */
export async function spawnWorker(options: SpawnWorkerOptions): Promise<SpawnedWorker> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      CONFIG,
      MAIN,
      "--worker-id",
      options.workerId,
      "--health-port",
      "0",
      ...options.args ?? [],
    ],
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const logs: WorkerLogEntry[] = [];
  const lines = readLines(child.stdout);
  const read = async (until?: (entry: WorkerLogEntry) => boolean) => {
    for (let next = await lines.next(); !next.done; next = await lines.next()) {
      const entry = parseEntry(next.value);
      if (!entry) continue;
      logs.push(entry);
      if (until?.(entry)) return entry;
    }
  };
  const started = await read((entry) => entry.event === "worker_started");
  if (!started) {
    const status = await child.status;
    throw new Error(`worker ${options.workerId} exited before starting (exit code ${status.code})`);
  }
  const drained = read(); // keep reading, so the worker never blocks on a full pipe
  const exited = Promise.all([child.status, drained]).then(([status]) => status);
  const kill = (signal: Deno.Signal) => {
    try {
      child.kill(signal);
    } catch { /* already gone */ }
  };
  let closing: Promise<Deno.CommandStatus> | undefined;
  const close = () => closing ??= (kill("SIGTERM"), exited);
  return {
    workerId: options.workerId,
    pid: child.pid,
    healthUrl: String(started.health_url),
    logs,
    kill,
    exited,
    close,
    [Symbol.asyncDispose]: async () => {
      await close();
    },
  };
}

/** A log line as an entry; null for anything that is not a JSON object with an event. */
function parseEntry(line: string): WorkerLogEntry | null {
  try {
    const entry = JSON.parse(line);
    return typeof entry === "object" && entry !== null && typeof entry.event === "string" ? entry : null;
  } catch {
    return null;
  }
}
