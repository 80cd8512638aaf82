// Test harness: the running stack's env, a superuser DB client, token minting, data reset.
// `deno task test` starts a fresh stack and passes its env; a bare `deno test` uses the dev stack
// (`deno task stack start`).
import postgres from "postgres";
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { readEnvFile, stackDir } from "../scripts/stack/stack.ts";
import { createUser } from "../scripts/stack/tokens.ts";

export { eventually } from "./support/eventually.ts";

export const env: Record<string, string> = Deno.env.get("STACK_DIR")
  ? Deno.env.toObject()
  : readEnvFile(`${stackDir("dev")}/env`);

/** Superuser connection (the `postgres` role, as in Supabase's SQL editor). Lives for the whole run. */
export const db = postgres(env.SUPABASE_DB_URL, { max: 10, prepare: false, onnotice: () => {} });

/**
 * Deno.test for tests that use the shared pool: its sockets outlive any one test, which Deno's
 * resource sanitizer would otherwise report as a leak.
 */
export function test(name: string, fn: (t: Deno.TestContext) => Promise<void> | void) {
  Deno.test({ name, fn, sanitizeResources: false, sanitizeOps: false });
}

export const fnUrl = (name: string) => `${env.FUNCTIONS_URL}/${name}`;

/**
 * Restores every table in `public` to what the migrations left (snapshotted on first use), so each
 * test starts from the same data whatever the previous one did.
 */
export async function resetData(): Promise<void> {
  // A worker pass the previous test kicked may still be running: its locks and the truncate's can meet in
  // opposite orders. Postgres then aborts one of the two, and a deadlock victim is retried as Postgres advises.
  for (let attempt = 1;; attempt++) {
    try {
      return await restoreSnapshot();
    } catch (err) {
      if ((err as { code?: string }).code !== "40P01" || attempt === 5) throw err;
    }
  }
}

async function restoreSnapshot(): Promise<void> {
  await db.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtext('tests.reset_data'))`;
    const tables = await tx<{ name: string }[]>`
      select tablename as name from pg_tables where schemaname = 'public' order by tablename`;
    const [{ exists }] = await tx`select exists (select 1 from pg_namespace where nspname = 'test_snapshot')`;
    if (!exists) {
      await tx`create schema test_snapshot`;
      for (const { name } of tables) {
        await tx.unsafe(`create table test_snapshot."${name}" as table public."${name}"`);
      }
    }
    await tx.unsafe(
      `truncate ${tables.map((t) => `public."${t.name}"`).join(", ")} restart identity cascade`,
    );
    await tx`set local session_replication_role = replica`; // restore in any order: no FK or trigger
    for (const { name } of tables) {
      // generated columns are computed again, not copied
      const [{ cols }] = await tx`select string_agg(quote_ident(attname), ', ' order by attnum) as cols
        from pg_attribute where attrelid = ${`public."${name}"`}::regclass
         and attnum > 0 and not attisdropped and attgenerated = ''`;
      await tx.unsafe(`insert into public."${name}" (${cols}) overriding system value
                       select ${cols} from test_snapshot."${name}"`);
    }
    await tx`delete from auth.users`;
    await tx`delete from net.http_request_queue`;
    await tx`delete from net._http_response`;
  });
}

export type { LocalUser as TestUser } from "../scripts/stack/tokens.ts";

/** A user in auth.users with an access token signed by the stack's key, as Supabase Auth issues them. */
export function mintUser(opts: { admin?: boolean; expiresInSeconds?: number } = {}) {
  return createUser(env, db, opts);
}

/** supabase-js on the stack with the publishable key, acting as the given user when a token is given. */
export function client(token?: string): SupabaseClient {
  return createClient(env.SUPABASE_URL, env.PUBLISHABLE_KEY, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
  });
}

/** Turns the queue's own pg_cron jobs on or off (tests keep them off unless they test cron). */
export async function setQueueCronActive(active: boolean): Promise<void> {
  await db`update cron.job set active = ${active} where jobname like 'video-queue%'`;
}
