// Does a long queue slow ours down? Enqueue (as users) and claim + complete with 100,000 jobs waiting against
// the same with none: M = N / 10 jobs enqueued by 10 callers, then M claimed and completed by 10 consumers
// (the waiting jobs are older, so those are what the consumers take and the queue stays at 100,000); each
// phase stops after 20 s if not done by then. The waiting jobs are of all three types (and so renderers and
// priorities), owned by 5,000 users with 20 each.
// Each of --runs runs measures both, alternating which comes first; ratios are medians of per-run ratios.
import { type BenchContext, type Figure, repeatWithin, type Row } from "./context.ts";
import { drainOurs } from "./contenders.ts";
import { fmtRate, fmtRatio, median, perSecond, phase, shareCalls } from "./measure.ts";
import { asUser, cleanQueue, createUsers, fillWaiting } from "./ours.ts";
import { CALLERS, CONSUMERS } from "./throughput.ts";

export const LONG_QUEUE = 100_000;
/** A phase stops after this long even when its M jobs are not done (the rate is of the jobs done). */
const PHASE_SECONDS = 20;
const BUDGET_SECONDS = 150;
/** Waiting jobs per background user: the seed's max_queued_per_user. */
export const JOBS_PER_OWNER = 20;

export const scaling: Figure = {
  name: "scaling",
  async run(ctx: BenchContext): Promise<Row[]> {
    const m = Math.max(100, Math.round(ctx.n / 10));
    const users = (await createUsers(ctx.admin, Math.ceil(m / 10), "scaling")).map(asUser);
    const owners = await createUsers(ctx.admin, LONG_QUEUE / JOBS_PER_OWNER, "background");
    const byWaiting = new Map<number, { enqueue: number; drain: number }[]>([[0, []], [LONG_QUEUE, []]]);
    await repeatWithin(ctx, "scaling", BUDGET_SECONDS, async (run) => {
      for (const waiting of run % 2 === 0 ? [0, LONG_QUEUE] : [LONG_QUEUE, 0]) {
        await cleanQueue(ctx.admin);
        await fillWaiting(ctx.admin, waiting, owners);
        const enqueue = perSecond(
          await phase(
            (deadline) =>
              shareCalls(CALLERS, m, (i) => ctx.ours.enqueue(users[i % users.length], i), deadline),
            PHASE_SECONDS,
          ),
        );
        const drain = perSecond(
          await phase((deadline) => drainOurs(ctx.ours, CONSUMERS, m, deadline), PHASE_SECONDS),
        );
        byWaiting.get(waiting)!.push({ enqueue, drain });
        ctx.log(
          `scaling run ${run + 1}/${ctx.runs}, ${waiting.toLocaleString("en")} waiting: enqueue ${
            fmtRate(enqueue)
          }, claim + complete ${fmtRate(drain)}`,
        );
      }
    });
    const at0 = byWaiting.get(0)!;
    const atLong = byWaiting.get(LONG_QUEUE)!;
    const row = (figure: string, key: "enqueue" | "drain"): Row => {
      const ratio = median(atLong.map((r, i) => r[key] / at0[i][key]));
      const [long, zero] = [median(atLong.map((r) => r[key])), median(at0.map((r) => r[key]))];
      return {
        figure,
        measured: `${fmtRate(long)} (at 0: ${fmtRate(zero)})`,
        target: "≥ 0.9× the figure at 0",
        verdict: ratio >= 0.9 ? "PASS" : "MISS",
        ratios: `${fmtRatio(ratio)} at 0`,
        data: { jobs_per_s: long, jobs_per_s_at_0: zero, vs_at_0: ratio, jobs: m },
      };
    };
    await cleanQueue(ctx.admin);
    return [
      row(`enqueue (as users) at ${LONG_QUEUE.toLocaleString("en")} waiting`, "enqueue"),
      row(`claim + complete at ${LONG_QUEUE.toLocaleString("en")} waiting`, "drain"),
    ];
  },
};
