// get_queue_stats() with 1,000,000 finished jobs and 10,000 waiting, as the worker calls it after each pass
// (queue.get_queue_stats() as the service role), one call at a time:
//   fresh: the table analyzed while empty, then filled, autovacuum held off (hint bits unset, visibility map
//          empty, the planner's statistics those of an empty table);
//   analyzed: the same rows after VACUUM ANALYZE;
// both late in the local day of peak_time_zone, when "today" holds the most finished jobs.
import type { BenchContext, Figure, Row } from "./context.ts";
import { fmtMs, type Latency, latency, seconds, timeEach } from "./measure.ts";
import { cleanQueue, createUsers, fillFinished, vacuumAnalyze } from "./ours.ts";
import { JOBS_PER_OWNER } from "./scaling.ts";

const FINISHED = 1_000_000;
const WAITING = 10_000;
const CALLS = 300;
/** A slow plan takes seconds a call: then fewer calls are timed. */
const TIMING = { warmup: 5, maxSeconds: 30 };

/** An Etc/GMT zone (fixed offset, -12 to +11 h) where the local time at `at` is between 22:30 and 23:30. */
export function lateEveningZone(at: Date): string {
  const target = at.getUTCMinutes() >= 30 ? 22 : 23;
  const offset = ((target - at.getUTCHours() + 36) % 24) - 12; // hours east of UTC
  return `Etc/GMT${offset > 0 ? "-" : "+"}${Math.abs(offset)}`; // Etc/GMT signs are inverted
}

export const queueStats: Figure = {
  name: "stats",
  async run(ctx: BenchContext): Promise<Row[]> {
    const { admin } = ctx;
    const owners = await createUsers(admin, WAITING / JOBS_PER_OWNER, "stats");
    await cleanQueue(admin);
    // Late in the local day, whatever the hour of the run: "today" (the calendar day of peak_time_zone) then
    // holds 22.5 to 23.5 hours of finished jobs, and the day does not end during the run. peak_time_zone is
    // the fixed offset where it is now between 22:30 and 23:30.
    await admin`update public.job_queue_config set peak_time_zone = ${lateEveningZone(new Date())}`;
    await admin.unsafe("analyze public.jobs");
    await admin.unsafe("alter table public.jobs set (autovacuum_enabled = false)");
    const results: Record<string, Latency> = {};
    try {
      const fill = await seconds(async () => {
        await fillFinished(admin, FINISHED);
        await admin`insert into public.jobs (job_type, status, payload, user_id)
          select 'doubt', 'queued', '{"question": "waiting"}', (${owners}::uuid[])[1 + g % ${owners.length}]
            from generate_series(0, ${WAITING - 1}) g`;
      });
      ctx.log(
        `stats: ${FINISHED.toLocaleString("en")} finished and ${
          WAITING.toLocaleString("en")
        } waiting filled in ${fill.toFixed(0)} s`,
      );
      const measure = async () => latency(await timeEach(CALLS, () => ctx.ours.stats(), TIMING));
      results.fresh = await measure();
      await vacuumAnalyze(admin);
      results.analyzed = await measure();
    } finally {
      await admin.unsafe("alter table public.jobs reset (autovacuum_enabled)");
      await cleanQueue(admin);
    }
    return Object.entries(results).map(([state, l]): Row => ({
      figure: `get_queue_stats(), 1,000,000 finished + 10,000 waiting, ${state} table`,
      measured: `p99 ${fmtMs(l.p99)} (p50 ${fmtMs(l.p50)}, ${l.n} calls)`,
      target: "p99 ≤ 10 ms",
      verdict: l.p99 <= 10 ? "PASS" : "MISS",
      data: { ...l },
    }));
  },
};
