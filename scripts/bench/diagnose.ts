// --diagnose: what the measured sessions wait on. Samples pg_stat_activity every few milliseconds while a
// drain runs and counts the busy sessions of one application_name by wait event: "CPU" when an active one
// waits on nothing, "Client:idle in transaction" when a transaction waits for the client's next statement
// (round trips).
import type postgres from "postgres";
import { delay } from "./measure.ts";

/** Samples taken, and how many busy sessions were seen waiting on each event in all. */
export type WaitSamples = { samples: number; counts: Record<string, number> };

const INTERVAL_MS = 10;

/** Samples the sessions named `applicationName` until the returned stop() is called, which gives the tally. */
export function sampleWaitEvents(admin: postgres.Sql, applicationName: string): () => Promise<WaitSamples> {
  const tally: WaitSamples = { samples: 0, counts: {} };
  let running = true;
  const loop = (async () => {
    while (running) {
      const rows = await admin<{ event: string; n: number }[]>`
        select case when state = 'active' then coalesce(wait_event_type || ':' || wait_event, 'CPU')
                    else 'Client:idle in transaction' end as event,
               count(*)::int as n
          from pg_stat_activity
         where application_name = ${applicationName} and state in ('active', 'idle in transaction')
           and pid <> pg_backend_pid()
         group by 1`;
      tally.samples++;
      for (const { event, n } of rows) tally.counts[event] = (tally.counts[event] ?? 0) + n;
      await delay(INTERVAL_MS);
    }
  })();
  return async () => {
    running = false;
    await loop;
    return tally;
  };
}

/** Several tallies as one: each event's share of all busy-session observations, largest first. */
export function topWaits(tallies: WaitSamples[]) {
  const samples = tallies.reduce((a, t) => a + t.samples, 0);
  const counts: Record<string, number> = {};
  for (const t of tallies) for (const [e, n] of Object.entries(t.counts)) counts[e] = (counts[e] ?? 0) + n;
  const total = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
  return {
    samples,
    mean_busy_sessions: total / Math.max(samples, 1),
    top: Object.entries(counts).sort((a, b) => b[1] - a[1]).map(([event, n]) => ({
      event,
      share: n / total,
    })),
  };
}

/** "Lock:advisory 61%, CPU 20%, … (N samples, 9.1 sessions busy on average)", the first `k` events. */
export function describeWaits(w: ReturnType<typeof topWaits>, k = 6): string {
  return w.top.slice(0, k).map((t) => `${t.event} ${(t.share * 100).toFixed(0)}%`).join(", ") +
    ` (${w.samples} samples, ${w.mean_busy_sessions.toFixed(1)} sessions busy on average)`;
}
