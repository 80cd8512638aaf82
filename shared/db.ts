// The database client: postgres.js on SUPABASE_DB_URL. Each call is one transaction that first takes on
// the caller's identity (role + request.jwt.claims), so RLS and auth.uid() hold as a second fence.
import postgres from "postgres";
import type { Caller } from "./auth.ts";

export type Sql = postgres.Sql;
export type Tx = postgres.TransactionSql;

let pool: Sql | undefined;

/** The shared pool, opened on first use. `prepare: false` because Supabase's pooler runs in transaction mode. */
export function db(): Sql {
  if (!pool) {
    const url = Deno.env.get("SUPABASE_DB_URL");
    if (!url) throw new Error("SUPABASE_DB_URL is not set");
    pool = postgres(url, {
      prepare: false,
      max: 4, // an Edge Function instance serves few requests at once
      idle_timeout: 20,
      connect_timeout: 5,
      onnotice: () => {},
      connection: { application_name: "video-queue-functions" },
    });
  }
  return pool;
}

/** Closes the pool (tests and scripts; an Edge Function just ends). */
export async function closeDb(): Promise<void> {
  const open = pool;
  pool = undefined;
  await open?.end({ timeout: 1 });
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
  return await db().begin(async (tx) => {
    await tx`select set_config('role', ${role}, true), set_config('request.jwt.claims', ${
      JSON.stringify(claims)
    }, true)`;
    const [row] = await query(tx);
    return row.result as T;
  }) as T;
}
