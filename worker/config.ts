// The long-running worker's settings: flags win over environment variables, which win over the defaults.
import { parseArgs } from "node:util";

export type WorkerConfig = {
  /** Postgres URL: a direct connection or the session pooler (LISTEN does not pass the transaction pooler). */
  dbUrl: string;
  /** The project URL: render services call back to `<it>/functions/v1/video-queue-worker/events`. */
  supabaseUrl: string;
  /** Recorded on every claim (job_attempts.worker_id); one per instance. */
  workerId: string;
  /** A pass at least this often, besides the ones NOTIFY asks for. */
  intervalMs: number;
  /** On SIGTERM/SIGINT, how long in-flight dispatches may take before their claims are released anyway. */
  graceMs: number;
  /** Where GET /health and GET /status listen (port 0: any free port, logged in `worker_started`). */
  healthHostname: string;
  healthPort: number;
};

export const USAGE = `deno task worker [--db-url URL] [--supabase-url URL] [--worker-id ID] [--interval-ms N]
                  [--grace-ms N] [--health-hostname HOST] [--health-port N]
env: SUPABASE_DB_URL, SUPABASE_URL, WORKER_ID, WORKER_INTERVAL_MS, WORKER_GRACE_MS, WORKER_HEALTH_HOSTNAME,
     WORKER_HEALTH_PORT`;

/** Reads the settings from `args` and `env`; throws a sentence naming the bad setting. */
export function readConfig(args: string[], env: (name: string) => string | undefined): WorkerConfig {
  const { values: flags } = parseArgs({
    args,
    options: {
      "db-url": { type: "string" },
      "supabase-url": { type: "string" },
      "worker-id": { type: "string" },
      "interval-ms": { type: "string" },
      "grace-ms": { type: "string" },
      "health-hostname": { type: "string" },
      "health-port": { type: "string" },
    },
  });
  const setting = (flag: keyof typeof flags, name: string) => flags[flag] ?? (env(name) || undefined);
  const dbUrl = setting("db-url", "SUPABASE_DB_URL");
  if (!dbUrl) throw new Error("Set the database URL: --db-url or SUPABASE_DB_URL.");
  const supabaseUrl = setting("supabase-url", "SUPABASE_URL");
  if (!supabaseUrl) {
    throw new Error("Set the project URL, where render services call back: --supabase-url or SUPABASE_URL.");
  }
  return {
    dbUrl,
    supabaseUrl,
    workerId: setting("worker-id", "WORKER_ID") ?? `${Deno.hostname()}-${Deno.pid}`,
    intervalMs: count(setting("interval-ms", "WORKER_INTERVAL_MS"), "interval-ms", 5_000, 1),
    graceMs: count(setting("grace-ms", "WORKER_GRACE_MS"), "grace-ms", 20_000, 0),
    healthHostname: setting("health-hostname", "WORKER_HEALTH_HOSTNAME") ?? "127.0.0.1",
    healthPort: count(setting("health-port", "WORKER_HEALTH_PORT"), "health-port", 8787, 0),
  };
}

function count(value: string | undefined, name: string, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`--${name} must be an integer ≥ ${min}, got "${value}".`);
  }
  return n;
}
