// Waiting for what another process produces (pg_cron, the pg_net sender, a worker pass), without sleeping.

/**
 * Resolves once `check` returns a value other than undefined/false; for outcomes another process
 * produces (pg_cron, the pg_net sender). Fails after `timeoutMs`; never a fixed sleep.
 */
export async function eventually<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
