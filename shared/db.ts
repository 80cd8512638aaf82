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
//   - a call is one message (callAs below): nothing is ever written after it, so no rollback can go down a
//     dead connection; `inTransaction` wraps sql.begin() for the few callers that need a real transaction,
//     so that after a failure of the connection (not of the SQL) nothing more is written to it: the caller
//     gets the failure at once and begin() never sends its rollback (the server rolls back by itself);
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
export async function asCaller<T>(caller: Caller, query: (sql: CallSql) => Statement): Promise<T> {
  const [role, claims] = caller.kind === "user"
    ? ["authenticated" as const, caller.claims]
    : ["service_role" as const, { role: "service_role" }];
  const used = currentPool();
  used.inFlight++;
  try {
    return await callAs<T>(used.sql, role, claims, query);
  } catch (err) {
    if (isConnectionFailure(err)) discard(used, err);
    throw err;
  } finally {
    used.inFlight--;
    endIfDone(used);
  }
}

/** The roles a call runs as (PostgREST's names for a signed-in user and a secret-key holder). */
export type CallerRole = "authenticated" | "service_role";

/** One SQL statement as text, its values written in as constants (see `callSql`). */
export type Statement = { readonly text: string };

/** Builds a Statement: `sql\`select queue.f(p_x => ${x}::uuid) as result\``; `sql.json(v)` is a jsonb value. */
export type CallSql = ((strings: TemplateStringsArray, ...values: unknown[]) => Statement) & {
  json(value: unknown): JsonValue;
};
type JsonValue = { readonly json: unknown };

export const callSql: CallSql = Object.assign(
  (strings: TemplateStringsArray, ...values: unknown[]): Statement => ({
    text: values.reduce<string>((text, value, i) => text + constant(value) + strings[i + 1], strings[0]),
  }),
  { json: (value: unknown): JsonValue => ({ json: value }) },
);

/**
 * Makes the one call `query` selects `as result`, as `role` with `claims` (request.jwt.claims, what auth.uid()
 * reads), in ONE round trip: the three statements go in one simple-protocol message, which Postgres runs as one
 * transaction (SET LOCAL holds for it; an error rolls all of it back). With bound parameters it took six:
 * postgres.js describes each unprepared statement before binding it, and BEGIN and COMMIT are one each
 * (prepared statements are out: Supabase's pooler runs in transaction mode).
 */
export async function callAs<T>(
  sql: Sql,
  role: CallerRole,
  claims: Record<string, unknown>,
  query: (sql: CallSql) => Statement,
): Promise<T> {
  if (role !== "authenticated" && role !== "service_role") throw new TypeError(`unknown role ${role}`);
  const results = await sql.unsafe(
    `set local role ${role};
     select set_config('request.jwt.claims', ${constant(JSON.stringify(claims))}, true);
     ${query(callSql).text}`,
  ).simple() as unknown as postgres.Row[][];
  return results[2][0].result as T;
}

/**
 * A value as an SQL constant. Text is dollar-quoted with a random tag it does not contain, so nothing inside
 * it is special (whatever standard_conforming_strings says); numbers and booleans are written as such.
 */
function constant(value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return String(value);
  if (typeof value === "number" && Number.isFinite(value)) return `(${value})`;
  if (typeof value === "bigint") return `(${value})`;
  if (value instanceof Date) return quoted(value.toISOString());
  if (typeof value === "string") return quoted(value);
  if (typeof value === "object" && "json" in value) {
    return `${quoted(JSON.stringify((value as JsonValue).json))}::jsonb`;
  }
  throw new TypeError(`a ${typeof value} cannot be sent as an SQL constant`);
}

function quoted(text: string): string {
  // Postgres text holds no NUL, and a NUL would end the message early: refused as Postgres refuses it.
  if (text.includes("\0")) {
    throw Object.assign(new Error('invalid byte sequence for encoding "UTF8": 0x00'), { code: "22021" });
  }
  let tag: string;
  // the closing tag must be the first place the tag appears after the opening one
  do tag = `$v${crypto.randomUUID().replaceAll("-", "")}$`; while ((text + tag).indexOf(tag) !== text.length);
  return tag + text + tag;
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
