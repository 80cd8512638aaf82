// The systems measured side by side with the same workload: N single-job enqueues by 10 concurrent callers,
// then a drain by 10 concurrent consumers that each claim ONE job and complete it. Ours is one of them; the
// anchors (pg-boss, graphile-worker: pg_boss.ts, graphile_worker.ts) run in databases of their own on the
// same Postgres cluster, created afresh by reset().
import type postgres from "postgres";
import { PROJECT_ROOT } from "../stack/stack.ts";
import { delay, drainConcurrently, type Phase, phase, shareCalls } from "./measure.ts";
import { cleanQueue, type Identity, OurQueue, SERVICE_ROLE } from "./ours.ts";

export interface Contender {
  /** Name and version, as printed. */
  name: string;
  /** The application_name of its database sessions (for --diagnose). */
  applicationName: string;
  /** Its enqueue phases, each measured from a fresh state; the last one's jobs are then drained. */
  enqueueModes: string[];
  /** Fresh, empty state. */
  reset(): Promise<void>;
  /** `callers` concurrent callers enqueue n jobs, starting none after `maxSeconds`. */
  enqueue(mode: string, callers: number, n: number, maxSeconds: number): Promise<Phase>;
  /** `consumers` concurrent consumers take n jobs, or what they can in `maxSeconds`. */
  drain(consumers: number, n: number, maxSeconds: number): Promise<Phase>;
  close(): Promise<void>;
}

/** The version of an npm package as deno.json pins it (`"pg-boss": "npm:pg-boss@12.38.0"`). */
export function pinnedVersion(pkg: string): string {
  const { imports } = JSON.parse(Deno.readTextFileSync(`${PROJECT_ROOT}/deno.json`));
  return String(imports[pkg]).split("@").pop()!;
}

/** Drops and creates database `name` on the stack's cluster; returns its URL. */
export async function freshDatabase(admin: postgres.Sql, dbUrl: string, name: string): Promise<string> {
  await dropDatabase(admin, name);
  await admin.unsafe(`create database ${name}`);
  const url = new URL(dbUrl);
  url.pathname = `/${name}`;
  return url.href;
}

/**
 * Drops database `name` once the sessions of its last user have closed: a session a client still holds and
 * `with (force)` terminates errors in that client (node-postgres closes its pools a little after stop()).
 */
export async function dropDatabase(admin: postgres.Sql, name: string): Promise<void> {
  for (let tries = 0; tries < 200; tries++) {
    const [{ n }] = await admin`select count(*)::int as n from pg_stat_activity where datname = ${name}`;
    if (n === 0) break;
    await delay(50);
  }
  await admin.unsafe(`drop database if exists ${name} with (force)`);
}

export const OURS_AS_SERVICE = "as the service role";
export const OURS_AS_USERS = "as users";

/**
 * Ours: enqueues as the service role (a secret-key holder) and as users; the users' jobs are drained. Users
 * enqueue round-robin, job i by user i mod |users|, with the seed's per-user limits in force (20 unfinished
 * jobs, 10 a minute), so there must be at least N / 10 of them.
 */
export function oursContender(ours: OurQueue, admin: postgres.Sql, users: Identity[]): Contender {
  return {
    name: "ours",
    applicationName: OurQueue.APPLICATION_NAME,
    enqueueModes: [OURS_AS_SERVICE, OURS_AS_USERS],
    reset: () => cleanQueue(admin),
    enqueue(mode, callers, n, maxSeconds) {
      if (mode === OURS_AS_USERS && users.length * 10 < n) throw new Error(`${n} jobs need ${n / 10} users`);
      const who = (i: number) => mode === OURS_AS_USERS ? users[i % users.length] : SERVICE_ROLE;
      return phase(
        (deadline) => shareCalls(callers, n, (i) => ours.enqueue(who(i), i), deadline),
        maxSeconds,
      );
    },
    drain: (consumers, n, maxSeconds) =>
      phase((deadline) => drainOurs(ours, consumers, n, deadline), maxSeconds),
    close: () => Promise.resolve(), // the bench closes our pool at its end
  };
}

/**
 * `consumers` workers each claim one job (queue.claim_jobs, limit 1) and complete it, until n are done or
 * `deadline` has passed; returns how many were done.
 */
export function drainOurs(ours: OurQueue, consumers: number, n: number, deadline?: number): Promise<number> {
  return drainConcurrently(consumers, n, async (consumer) => {
    const claim = await ours.claimOne(`bench-consumer-${consumer}`);
    if (!claim) return false;
    await ours.complete(claim);
    return true;
  }, deadline);
}
