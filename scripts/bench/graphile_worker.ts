// graphile-worker, an anchor: addJob() by 10 callers (worker utils, a pool of 10); drain by its real worker
// runner, ONE runner with concurrency 10 (10 workers, each getting and completing one job at a time; no
// local queue or batching: its defaults), timed from run() until the N-th task has finished.
import type postgres from "postgres";
import { Logger, makeWorkerUtils, run, runMigrations, type WorkerUtils } from "graphile-worker";
import { type Contender, dropDatabase, freshDatabase, pinnedVersion } from "./contenders.ts";
import { phase, shareCalls } from "./measure.ts";

const TASK = "bench";
const DATABASE = "bench_graphile_worker";
const APPLICATION_NAME = "bench-graphile-worker";
const silent = new Logger(() => () => {});

export function graphileWorkerContender(admin: postgres.Sql, dbUrl: string): Contender {
  let connectionString = "";
  let utils: WorkerUtils | undefined;
  const release = async () => {
    await utils?.release();
    utils = undefined;
  };
  return {
    name: `graphile-worker ${pinnedVersion("graphile-worker")}`,
    applicationName: APPLICATION_NAME,
    enqueueModes: ["enqueue"],
    async reset() {
      await release();
      const url = new URL(await freshDatabase(admin, dbUrl, DATABASE));
      url.searchParams.set("application_name", APPLICATION_NAME);
      connectionString = url.href;
      await runMigrations({ connectionString, logger: silent });
      utils = await makeWorkerUtils({ connectionString, logger: silent, maxPoolSize: 10 });
    },
    enqueue(_mode, callers, n, maxSeconds) {
      const u = utils;
      if (!u) throw new Error("graphile-worker is not set up: reset() first");
      return phase(
        (deadline) =>
          shareCalls(callers, n, (i) => u.addJob(TASK, { question: `Benchmark question ${i}` }), deadline),
        maxSeconds,
      );
    },
    async drain(consumers, n, maxSeconds) {
      let done = 0;
      let allDone!: () => void;
      const finished = new Promise<void>((resolve) => allDone = resolve);
      const timer = setTimeout(() => allDone(), maxSeconds * 1000);
      const start = performance.now();
      const runner = await run({
        connectionString,
        logger: silent,
        concurrency: consumers,
        maxPoolSize: consumers + 1, // its workers plus the LISTEN connection
        noHandleSignals: true,
        pollInterval: 1000,
        taskList: {
          [TASK]: () => {
            if (++done === n) allDone();
          },
        },
      });
      try {
        await finished;
        return { done, seconds: (performance.now() - start) / 1000 }; // its shutdown is not timed
      } finally {
        clearTimeout(timer);
        await runner.stop();
      }
    },
    async close() {
      await release();
      await dropDatabase(admin, DATABASE);
    },
  };
}
