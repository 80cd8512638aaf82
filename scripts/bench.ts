// `deno task bench`: starts a throw-away stack, measures every figure of FIGURES on it, prints one table (each
// figure beside its target, PASS/MISS, its ratio to the anchors) and writes the figures as JSON.
//
//   --n 10000               jobs per throughput phase (10 callers enqueue them, 10 consumers drain them)
//   --runs 3                repetitions of the side-by-side phases (medians are reported)
//   --out <file>            the JSON (default bench-results.json in the project root, git-ignored)
//   --only throughput,http  these figure modules only (names below)
//   --diagnose              sample pg_stat_activity's wait events during the drains; printed under the table
//   --stack <name>          use the running stack of that name instead (its queue data is overwritten)
//
// Benchmarks measure; they assert nothing. Tests stay deterministic and untimed.
import { parseArgs } from "node:util";
import postgres from "postgres";
import { PROJECT_ROOT, readEnvFile, stackDir, startStack, stopStack } from "./stack/stack.ts";
import type { BenchContext, Figure, Row } from "./bench/context.ts";
import { decompose } from "./bench/decompose.ts";
import { estimateError } from "./bench/estimate.ts";
import { http } from "./bench/http.ts";
import { OurQueue } from "./bench/ours.ts";
import { positions } from "./bench/positions.ts";
import { queueStats } from "./bench/queue_stats.ts";
import { machineFacts, table } from "./bench/report.ts";
import { scaling } from "./bench/scaling.ts";
import { throughput } from "./bench/throughput.ts";

/** The figures, in the order of the table. */
const FIGURES: Figure[] = [throughput, decompose, scaling, positions, queueStats, http, estimateError];

const { values: args } = parseArgs({
  args: Deno.args,
  options: {
    n: { type: "string", default: "10000" },
    runs: { type: "string", default: "3" },
    out: { type: "string", default: `${PROJECT_ROOT}/bench-results.json` },
    only: { type: "string" },
    diagnose: { type: "boolean", default: false },
    stack: { type: "string" },
  },
});
const only = args.only?.split(",");
const figures = FIGURES.filter((f) => !only || only.includes(f.name));
if (only && figures.length !== only.length) {
  console.error(`--only takes some of: ${FIGURES.map((f) => f.name).join(", ")}`);
  Deno.exit(2);
}
const log = (line: string) => console.error(`[bench] ${line}`);

const ownStack = args.stack ? undefined : `bench-${Deno.pid}`;
/** Stops the bench's own stack and removes its directory (a --stack one is left as it was). */
async function removeOwnStack() {
  if (!ownStack) return;
  await stopStack(ownStack);
  await Deno.remove(stackDir(ownStack), { recursive: true }).catch(() => {});
}
Deno.addSignalListener("SIGINT", async () => {
  await removeOwnStack();
  Deno.exit(130);
});
let failed = false;
try {
  const env = ownStack
    ? await startStack({ name: ownStack, exitWithParent: Deno.pid, log: (l) => log(`stack: ${l}`) })
    : readEnvFile(`${stackDir(args.stack)}/env`);
  const admin = postgres(env.DB_URL, { max: 4, onnotice: () => {} });
  const ours = new OurQueue(env.DB_URL);
  const ctx: BenchContext = {
    n: Number(args.n),
    runs: Number(args.runs),
    diagnose: args.diagnose,
    env,
    admin,
    ours,
    log,
    notes: [],
  };
  // The queue's own pg_cron passes would claim jobs in the middle of a measurement: off while the bench runs.
  const cron = await admin<{ jobid: number; active: boolean }[]>`
    select jobid, active from cron.job where jobname like 'video-queue%'`;
  await admin`update cron.job set active = false where jobid in ${admin(cron.map((c) => c.jobid))}`;
  const [{ version }] = await admin`select version()`;
  const machine = await machineFacts(version);
  log(`${machine.cores} cores, ${version}; N = ${ctx.n}, ${ctx.runs} runs`);

  const rows: Row[] = [];
  const started = performance.now();
  try {
    for (const figure of figures) {
      log(`measuring: ${figure.name}`);
      try {
        rows.push(...await figure.run(ctx));
      } catch (err) {
        failed = true;
        log(`${figure.name} failed: ${(err as Error).stack ?? err}`);
        rows.push({
          figure: `${figure.name} (failed)`,
          measured: String((err as Error).message ?? err).slice(0, 120),
          target: "",
          verdict: "not measured",
        });
      }
    }
  } finally {
    for (const c of cron) await admin`update cron.job set active = ${c.active} where jobid = ${c.jobid}`;
    await ours.close();
    await admin.end({ timeout: 5 });
  }
  const minutes = (performance.now() - started) / 60_000;

  console.log(
    `\nVideo queue benchmark: N = ${
      ctx.n.toLocaleString("en")
    }, medians of up to ${ctx.runs} runs (the notes say where fewer), ${machine.cores} cores, ${
      String(version).split(" on ")[0]
    }; ${minutes.toFixed(1)} min\n`,
  );
  console.log(table(rows));
  if (ctx.notes.length > 0) console.log(`\n${ctx.notes.join("\n")}`);
  const results = {
    date: new Date().toISOString(),
    machine,
    params: { n: ctx.n, runs: ctx.runs, callers: 10, consumers: 10, figures: figures.map((f) => f.name) },
    minutes,
    figures: rows,
    notes: ctx.notes,
  };
  await Deno.writeTextFile(args.out, JSON.stringify(results, null, 2) + "\n");
  console.log(`\nfigures written to ${args.out}`);
} finally {
  await removeOwnStack();
}
Deno.exit(failed ? 1 : 0);
