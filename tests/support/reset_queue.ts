// A clean queue, the one every pgTAP file starts from: supabase/tests/_clean_queue.psql, run as it is (no jobs,
// no peak windows, no renderer caps or pauses, one endpoint per renderer, the seed's defaults in the config).
// For tests and benchmarks on a throw-away database, as a superuser (or inside their own transaction).
import type postgres from "postgres";

const CLEAN_QUEUE = Deno.readTextFileSync(new URL("../../supabase/tests/_clean_queue.psql", import.meta.url));

/** Resets the queue's tables to the clean queue, in one round trip (one implicit transaction, or the caller's). */
export async function resetQueue(sql: postgres.Sql | postgres.TransactionSql): Promise<void> {
  await sql.unsafe(CLEAN_QUEUE).simple();
}
