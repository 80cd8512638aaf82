// `deno task worker`: the long-running worker (worker.ts) with its health endpoint (health.ts). SIGTERM or
// SIGINT stops it gracefully (QueueWorker.stop) and it exits 0. Logs one JSON line per event; the first is
// `worker_started` with the health endpoint's address.
import { log } from "../shared/mod.ts";
import { readConfig, USAGE } from "./config.ts";
import { healthHandler } from "./health.ts";
import { QueueWorker } from "./worker.ts";

const config = (() => {
  try {
    return readConfig(Deno.args, (name) => Deno.env.get(name));
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    Deno.exit(2);
  }
})();
// shared/ reads both from the environment (db.ts: the pool; dispatch.ts: the callback URL).
Deno.env.set("SUPABASE_DB_URL", config.dbUrl);
Deno.env.set("SUPABASE_URL", config.supabaseUrl);

const worker = new QueueWorker(config);
const health = Deno.serve(
  { hostname: config.healthHostname, port: config.healthPort, onListen: () => {} },
  healthHandler(worker),
);
worker.start();
log("worker_started", {
  worker_id: config.workerId,
  health_url: `http://${config.healthHostname}:${health.addr.port}`,
  interval_ms: config.intervalMs,
  grace_ms: config.graceMs,
});

const shutDown = async (signal: Deno.Signal) => {
  log("worker_signal", { worker_id: config.workerId, signal });
  await worker.stop();
  await health.shutdown();
  Deno.exit(0);
};
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => void shutDown(signal));
}
