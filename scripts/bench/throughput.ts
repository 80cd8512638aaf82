// Throughput side by side: ours, pg-boss and graphile-worker with the same workload on the same Postgres
// (contenders.ts). Each of --runs runs measures every contender from a fresh state, in an order rotated by
// one each run; the table gives medians, and each ratio is the median of the ratios within one run. A run is
// not started when the runs so far say it would end past the time budget, and a phase stops after 90 s (the
// rate is then of the jobs it did); the notes under the table say when either happened.
import { type BenchContext, type Figure, repeatWithin, type Row } from "./context.ts";
import { type Contender, OURS_AS_SERVICE, OURS_AS_USERS, oursContender } from "./contenders.ts";
import { describeWaits, sampleWaitEvents, topWaits, type WaitSamples } from "./diagnose.ts";
import { graphileWorkerContender } from "./graphile_worker.ts";
import { fmtRate, fmtRatio, median, perSecond, type Phase } from "./measure.ts";
import { asUser, createUsers } from "./ours.ts";
import { pgBossContender } from "./pg_boss.ts";

export const CALLERS = 10;
export const CONSUMERS = 10;
const DRAIN = "claim + complete";
const BUDGET_SECONDS = 360;
/** A phase not done by then stops, and its rate is of the jobs it did (a note says so). */
const PHASE_SECONDS = 90;

/** jobs/s of one contender in one run: per enqueue mode, and its drain. */
type Rates = Record<string, number>;

export const throughput: Figure = {
  name: "throughput",
  async run(ctx: BenchContext): Promise<Row[]> {
    const users = (await createUsers(ctx.admin, Math.max(Math.ceil(ctx.n / 10), 1), "throughput")).map(
      asUser,
    );
    const ours = oursContender(ctx.ours, ctx.admin, users);
    const pgBoss = pgBossContender(ctx.admin, ctx.env.DB_URL, ctx.log);
    const graphile = graphileWorkerContender(ctx.admin, ctx.env.DB_URL);
    const contenders = [ours, pgBoss, graphile];
    const runs: Map<Contender, Rates>[] = [];
    const waits = new Map<Contender, WaitSamples[]>(contenders.map((c) => [c, []]));
    try {
      await repeatWithin(ctx, "throughput", BUDGET_SECONDS, async (run) => {
        const order = contenders.map((_, i) => contenders[(i + run) % contenders.length]);
        const rates = new Map<Contender, Rates>();
        for (const c of order) {
          const r: Rates = {};
          const cut = (what: string, p: Phase, of: number) => {
            if (p.done < of) {
              ctx.notes.push(`${c.name}, ${what}: stopped at ${PHASE_SECONDS} s, ${p.done} of ${of} jobs`);
            }
            return p;
          };
          let enqueued = 0;
          for (const mode of c.enqueueModes) {
            await c.reset();
            const p = cut(mode, await c.enqueue(mode, CALLERS, ctx.n, PHASE_SECONDS), ctx.n);
            r[mode] = perSecond(p);
            enqueued = p.done;
          }
          const stop = ctx.diagnose ? sampleWaitEvents(ctx.admin, c.applicationName) : undefined;
          r[DRAIN] = perSecond(cut(DRAIN, await c.drain(CONSUMERS, enqueued, PHASE_SECONDS), enqueued));
          if (stop) waits.get(c)!.push(await stop());
          rates.set(c, r);
          ctx.log(`throughput run ${run + 1}/${ctx.runs}, ${c.name}: ${describe(r)}`);
        }
        runs.push(rates);
      });
    } finally {
      await pgBoss.close();
      await graphile.close();
    }

    const med = (c: Contender, key: string) => median(runs.map((r) => r.get(c)![key]));
    /** Median over the runs of (a's key ÷ b's key) within each run. */
    const ratio = (a: Contender, aKey: string, b: Contender, bKey: string) =>
      median(runs.map((r) => r.get(a)![aKey] / r.get(b)![bKey]));
    const ENQ = "enqueue";
    const drainVsGraphile = ratio(ours, DRAIN, graphile, DRAIN);
    const drainVsPgBoss = ratio(ours, DRAIN, pgBoss, DRAIN);
    const serviceVsPgBoss = ratio(ours, OURS_AS_SERVICE, pgBoss, ENQ);
    const usersVsPgBoss = ratio(ours, OURS_AS_USERS, pgBoss, ENQ);
    const usersVsService = ratio(ours, OURS_AS_USERS, ours, OURS_AS_SERVICE);
    const perRun = (c: Contender) => runs.map((r) => r.get(c)!);
    const diagnosis = ctx.diagnose
      ? Object.fromEntries(contenders.map((c) => [c.name, topWaits(waits.get(c)!)]))
      : undefined;

    const rows: Row[] = [
      {
        figure: "claim + complete, 10 consumers, one job per claim",
        measured: fmtRate(med(ours, DRAIN)),
        target: "≥ 1.0× graphile-worker and ≥ 2× pg-boss",
        verdict: drainVsGraphile >= 1 && drainVsPgBoss >= 2 ? "PASS" : "MISS",
        ratios: `${fmtRatio(drainVsGraphile)} graphile-worker, ${fmtRatio(drainVsPgBoss)} pg-boss`,
        data: {
          jobs_per_s: med(ours, DRAIN),
          vs_graphile_worker: drainVsGraphile,
          vs_pg_boss: drainVsPgBoss,
          wait_events: diagnosis?.[ours.name],
        },
      },
      {
        figure: "enqueue, 10 callers, as the service role",
        measured: fmtRate(med(ours, OURS_AS_SERVICE)),
        target: "≥ 1.2× pg-boss",
        verdict: serviceVsPgBoss >= 1.2 ? "PASS" : "MISS",
        ratios: `${fmtRatio(serviceVsPgBoss)} pg-boss, ${
          fmtRatio(ratio(ours, OURS_AS_SERVICE, graphile, ENQ))
        } graphile-worker`,
        data: { jobs_per_s: med(ours, OURS_AS_SERVICE), vs_pg_boss: serviceVsPgBoss },
      },
      {
        figure: "enqueue, 10 callers, as users",
        measured: fmtRate(med(ours, OURS_AS_USERS)),
        target: "≥ 1.2× pg-boss; ≥ 0.9× as the service role",
        verdict: usersVsPgBoss >= 1.2 && usersVsService >= 0.9 ? "PASS" : "MISS",
        ratios: `${fmtRatio(usersVsPgBoss)} pg-boss, ${fmtRatio(usersVsService)} as the service role`,
        data: {
          jobs_per_s: med(ours, OURS_AS_USERS),
          vs_pg_boss: usersVsPgBoss,
          vs_service_role: usersVsService,
          users: users.length,
        },
      },
      ...[pgBoss, graphile].map((c): Row => ({
        figure: `  anchor: ${c.name}`,
        measured: `enqueue ${fmtRate(med(c, ENQ))}, claim + complete ${fmtRate(med(c, DRAIN))}`,
        target: "",
        data: {
          enqueue_jobs_per_s: med(c, ENQ),
          drain_jobs_per_s: med(c, DRAIN),
          wait_events: diagnosis?.[c.name],
        },
      })),
    ];
    rows[0].data!.runs = runs.length;
    rows[0].data!.per_run = contenders.map((c) => ({ system: c.name, jobs_per_s: perRun(c) }));
    if (diagnosis) {
      ctx.notes.push(
        "Wait events of the busy sessions during the throughput drains (pg_stat_activity, every 10 ms):",
      );
      for (const c of contenders) ctx.notes.push(`  ${c.name}: ${describeWaits(diagnosis[c.name])}`);
    }
    return rows;
  },
};

const describe = (r: Rates) => Object.entries(r).map(([k, v]) => `${k} ${fmtRate(v)}`).join(", ");
