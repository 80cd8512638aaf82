// The database client: postgres.js on SUPABASE_DB_URL. Each call is one transaction that first takes on
// the caller's identity (role + request.jwt.claims), so RLS and auth.uid() hold as a second fence.
//
// Surviving a database restart. postgres.js 3.4.9 (porsager/postgres #1154, #1208; fixes unmerged) crashes
// the whole process with an uncaught `TypeError: Cannot read properties of null (reading 'write')` from a
// setImmediate callback (connection.js:255, nextWrite) when anything is written to a connection after its
// socket closed: it buffers the write, schedules the flush, and the flush finds `socket === null`. Nothing
// can catch that throw; on Supabase the isolate, and here the one process that hosts every function, dies
// with every request in flight. Its `sql.begin()` does exactly that: when a query inside the transaction
// fails because the connection died, begin() answers the caller and then sends `rollback` on the dead
// connection. A closed connection also keeps its unflushed bytes and a stale flush timer, so once it
// reconnects it can hang until connect_timeout. And each new connection fetches array types in a promise
// nobody awaits, so a connection that dies during that fetch is an unhandled rejection, equally fatal.
// So, here:
//   - `inTransaction` wraps sql.begin() so that after a failure of the connection (not of the SQL) nothing
//     more is written to it: the caller gets the failure at once and begin() never sends its rollback
//     (the server rolls back an interrupted transaction by itself);
//   - the pool such a failure came from is discarded (new calls get a fresh pool; the old one is ended
//     once its calls have settled), which also drops any connection left in that half-closed state;
//   - `fetch_types: false` (the SQL API takes and returns json, never arrays);
//   - the failure itself reaches the caller as the connection error it is, which toHttpError (errors.ts)
//     answers with 503 `unavailable` and Retry-After.
// tests/degradation_test.ts restarts Postgres repeatedly under load and checks the process survives.
import postgres from "postgres";
import type { Caller } from "./auth.ts";
import { isConnectionFailure } from "./errors.ts";
import { log } from "./log.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

type Pool = { sql: Sql; inFlight: number; discarded: boolean; ended?: Promise<void> };

let pool: Pool | undefined;
/** Discarded pools still ending (closeDb waits for them). */
const ending = new Set<Promise<void>>();

function openPool(): Pool {
  const url = Deno.env.get("SUPABASE_DB_URL");
  if (!url) throw new Error("SUPABASE_DB_URL is not set");
  const sql = postgres(url, {
    prepare: false, // Supabase's pooler runs in transaction mode
    max: 4, // an Edge Function instance serves few requests at once
    idle_timeout: 20,
    connect_timeout: 5,
    fetch_types: false, // see the top of this file
    onnotice: () => {},
    connection: { application_name: "video-queue-functions" },
  });
  return { sql, inFlight: 0, discarded: false };
}

function currentPool(): Pool {
  return pool ??= openPool();
}

/** The shared pool, opened on first use. `prepare: false` because Supabase's pooler runs in transaction mode. */
export function db(): Sql {
  return currentPool().sql;
}

/** Closes the pool (tests and scripts; an Edge Function just ends), and waits for discarded ones. */
export async function closeDb(): Promise<void> {
  const open = pool;
  pool = undefined;
  if (open) {
    open.discarded = true;
    endIfDone(open, true);
  }
  while (ending.size > 0) await Promise.all([...ending]);
}

/**
 * Runs `query` (one SQL function call selected `as result`) in a transaction as `caller` and returns
 * its result: users as `authenticated` with their verified claims, secret-key holders as `service_role`.
 */
export async function asCaller<T>(
  caller: Caller,
  query: (tx: Tx) => postgres.PendingQuery<postgres.Row[]>,
): Promise<T> {
  const [role, claims] = caller.kind === "user"
    ? ["authenticated", caller.claims]
    : ["service_role", { role: "service_role" }];
  const used = currentPool();
  used.inFlight++;
  try {
    return await inTransaction(used.sql, (tx) => callAs<T>(tx, role, claims, query));
  } catch (err) {
    if (isConnectionFailure(err)) discard(used, err);
    throw err;
  } finally {
    used.inFlight--;
    endIfDone(used);
  }
}

/**
 * In transaction `tx`, takes on `role` and `claims` (request.jwt.claims, what auth.uid() reads), then makes
 * the one call `query` selects `as result`. Both statements go out at once (pipelined): one round trip fewer.
 */
export async function callAs<T>(
  tx: Tx,
  role: string,
  claims: Record<string, unknown>,
  query: (tx: Tx) => postgres.PendingQuery<postgres.Row[]>,
): Promise<T> {
  const [, [row]] = await Promise.all([
    tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${
      JSON.stringify(claims)
    }, true)`,
    query(tx),
  ]);
  return row.result as T;
}

/**
 * sql.begin(fn), except that when fn fails because the connection failed, the caller gets that failure
 * at once and begin() never gets to send its `rollback` down the dead connection (see the top of this
 * file): fn's promise is left pending, and postgres.js's close handling releases the connection.
 */
export async function inTransaction<T>(sql: Sql, fn: (tx: Tx) => Promise<T>): Promise<T> {
  let connectionFailed!: (err: unknown) => void;
  const failed = new Promise<never>((_, reject) => connectionFailed = reject);
  const transaction = sql.begin(async (tx) => {
    try {
      return await fn(tx);
    } catch (err) {
      if (!isConnectionFailure(err)) throw err; // an SQL error: begin() rolls back on the live connection
      connectionFailed(err);
      return await new Promise<never>(() => {}); // settles never: nothing more is written to it
    }
  });
  return await Promise.race([transaction, failed]) as T;
}

/** Stops handing out `broken` and ends it once its calls have settled; the next call opens a new pool. */
function discard(broken: Pool, err: unknown): void {
  if (pool === broken) pool = undefined;
  if (broken.discarded) return;
  broken.discarded = true;
  log("db_pool_discarded", { reason: describeFailure(err) });
  endIfDone(broken);
}

/** Ends a discarded pool once no call uses it (`now`: closeDb, whatever is still running). */
function endIfDone(p: Pool, now = false): void {
  if (!p.discarded || p.ended || p === pool || (p.inFlight > 0 && !now)) return;
  // A connection that died mid-write never finishes ending by itself: the time-out destroys it.
  const done: Promise<void> = p.sql.end({ timeout: 1 })
    .catch(() => {})
    .finally(() => ending.delete(done));
  p.ended = done;
  ending.add(done);
}

function describeFailure(err: unknown): Record<string, unknown> {
  const e = err as { code?: unknown; message?: unknown };
  return { code: e?.code, message: String(e?.message ?? err) };
}
