// Work that outlives the response: kicking a worker pass, telling a render service about a cancel.
import { ownSecretKey } from "./auth.ts";
import { log } from "./log.ts";

const pending = new Set<Promise<void>>();

/**
 * Runs `task` after the response is sent, without delaying it. On Supabase, EdgeRuntime.waitUntil keeps
 * the instance alive until the task ends; elsewhere the promise is simply not awaited.
 */
export function runInBackground(name: string, task: () => Promise<unknown>): void {
  const done: Promise<void> = task()
    .then(
      () => {},
      (err) => log("background_task_failed", { task: name, error: String(err?.message ?? err) }),
    )
    .finally(() => pending.delete(done));
  pending.add(done);
  (globalThis as { EdgeRuntime?: { waitUntil(p: Promise<unknown>): void } }).EdgeRuntime?.waitUntil(done);
}

/** Resolves when every background task has ended (tests, graceful shutdown). */
export async function backgroundTasksSettled(): Promise<void> {
  while (pending.size > 0) await Promise.all([...pending]);
}

/** `${SUPABASE_URL}/functions/v1/<path>`: how this project's functions reach each other. */
export function functionUrl(path: string): string | undefined {
  const base = Deno.env.get("SUPABASE_URL");
  return base ? `${base.replace(/\/+$/, "")}/functions/v1/${path}` : undefined;
}

/** Time a kick may take; the pass it starts usually answers in well under this. */
const KICK_TIMEOUT_MS = 30_000;

/**
 * Starts a worker pass now (fast pickup) instead of waiting for the pg_cron minute. Fire-and-forget:
 * concurrent passes are harmless because SQL serializes claims.
 */
export function kickWorker(reason: string): void {
  const url = functionUrl("video-queue-worker");
  const key = ownSecretKey();
  if (!url || !key) return; // not configured (unit tests): cron remains the backstop
  runInBackground("kick_worker", async () => {
    const res = await fetch(url, {
      method: "POST",
      headers: { apikey: key, "content-type": "application/json", "x-kick-reason": reason },
      body: "{}",
      signal: AbortSignal.timeout(KICK_TIMEOUT_MS),
    });
    await res.body?.cancel();
  });
}
