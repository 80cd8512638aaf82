// pg-boss, an anchor: send() by 10 callers; drain by 10 consumers, each fetch({ batchSize: 1 }) then
// complete(). A pool of 10 connections (its default), no supervision or cron scheduling running meanwhile.
import type postgres from "postgres";
import { PgBoss } from "pg-boss";
import { type Contender, dropDatabase, freshDatabase, pinnedVersion } from "./contenders.ts";
import { drainConcurrently, phase, shareCalls } from "./measure.ts";

const QUEUE = "bench";
const DATABASE = "bench_pg_boss";
const APPLICATION_NAME = "bench-pg-boss";

export function pgBossContender(admin: postgres.Sql, dbUrl: string, log: (line: string) => void): Contender {
  let boss: PgBoss | undefined;
  const started = () => {
    if (!boss) throw new Error("pg-boss is not started: reset() first");
    return boss;
  };
  const stop = async () => {
    await boss?.stop({ graceful: false, close: true });
    boss = undefined;
  };
  return {
    name: `pg-boss ${pinnedVersion("pg-boss")}`,
    applicationName: APPLICATION_NAME,
    enqueueModes: ["enqueue"],
    async reset() {
      await stop();
      const connectionString = await freshDatabase(admin, dbUrl, DATABASE);
      boss = new PgBoss({
        connectionString,
        application_name: APPLICATION_NAME,
        max: 10,
        supervise: false,
        schedule: false,
      });
      boss.on("error", (err) => log(`pg-boss error: ${err}`));
      await boss.start();
      await boss.createQueue(QUEUE);
    },
    enqueue(_mode, callers, n, maxSeconds) {
      const b = started();
      return phase(
        (deadline) =>
          shareCalls(callers, n, (i) => b.send(QUEUE, { question: `Benchmark question ${i}` }), deadline),
        maxSeconds,
      );
    },
    drain(consumers, n, maxSeconds) {
      const b = started();
      const takeOne = async () => {
        const [job] = await b.fetch(QUEUE, { batchSize: 1 });
        if (!job) return false;
        await b.complete(QUEUE, job.id);
        return true;
      };
      return phase((deadline) => drainConcurrently(consumers, n, takeOne, deadline), maxSeconds);
    },
    async close() {
      await stop();
      await dropDatabase(admin, DATABASE);
    },
  };
}
