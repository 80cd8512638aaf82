// The exact position and estimate of a waiting job with 100,000 waiting: queue.get_job as the job's owner
// (what the status function does), one call at a time, for jobs drawn at random from the whole queue
// (every depth and priority) plus the last job in line.
import type { BenchContext, Figure, Row } from "./context.ts";
import { fmtMs, latency, timeEach } from "./measure.ts";
import { asUser, cleanQueue, createUsers, fillWaiting } from "./ours.ts";
import { JOBS_PER_OWNER, LONG_QUEUE } from "./scaling.ts";

const CALLS = 500;

export const positions: Figure = {
  name: "positions",
  async run(ctx: BenchContext): Promise<Row[]> {
    const owners = await createUsers(ctx.admin, LONG_QUEUE / JOBS_PER_OWNER, "positions");
    await cleanQueue(ctx.admin);
    await fillWaiting(ctx.admin, LONG_QUEUE, owners);
    const jobs = await ctx.admin<{ id: string; user_id: string }[]>`
      (select id, user_id from public.jobs where status = 'queued' order by random() limit ${CALLS - 1})
      union all
      (select id, user_id from public.jobs where status = 'queued'
        order by priority_rank desc, created_at desc, id desc limit 1)`;
    let deepest = 0;
    const ms = await timeEach(CALLS, async (i) => {
      const { id, user_id } = jobs[i % jobs.length];
      const job = await ctx.ours.getJob(asUser(user_id), id);
      if (job.queue_position === null || job.estimated_wait_seconds === null) {
        throw new Error(`job ${id} has no position or estimate: ${JSON.stringify(job)}`);
      }
      deepest = Math.max(deepest, job.queue_position);
    });
    await cleanQueue(ctx.admin);
    const l = latency(ms);
    return [{
      figure: `exact position + estimate at ${LONG_QUEUE.toLocaleString("en")} waiting`,
      measured: `p99 ${fmtMs(l.p99)} (p50 ${fmtMs(l.p50)})`,
      target: "p99 ≤ 5 ms",
      verdict: l.p99 <= 5 ? "PASS" : "MISS",
      data: { ...l, deepest_position: deepest },
    }];
  },
};
