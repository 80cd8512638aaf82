// shared/db.ts's one-message call (callAs): values travel as SQL constants, so every value must come back
// exactly as sent, whatever it holds; the caller's role and claims hold for the call; a failed call leaves
// nothing behind (its transaction rolled back, the connection clean for the next call).
import assert from "node:assert/strict";
import postgres from "postgres";
import { callAs } from "../shared/db.ts";
import { db, env, resetData, test } from "./harness.ts";

const sql = postgres(env.SUPABASE_DB_URL, { max: 1, prepare: false, fetch_types: false, onnotice: () => {} });
const SERVICE = { role: "service_role" } as const;

test("callAs: hostile text, numbers, booleans, dates and JSON come back exactly as sent", async () => {
  const texts = [
    "",
    "it's",
    "''; drop table public.jobs; --",
    "back\\slash \\' and E'\\x41'",
    "$$ dollar $$",
    "$v$ $v0123456789abcdef0123456789abcdef$ $tag$",
    "ends with a dollar $",
    "$v",
    "multi\nline\ttext\r\n",
    "ünïcödé 🎬 ☃",
  ];
  for (const text of texts) {
    const back = await callAs<string>(sql, "service_role", SERVICE, (q) => q`select ${text}::text as result`);
    assert.equal(back, text);
  }
  const payload = { question: "a 'quoted' $$ question $v$", nested: { n: -1.5, ok: true, none: null } };
  assert.deepEqual(
    await callAs(sql, "service_role", SERVICE, (q) => q`select ${q.json(payload)} as result`),
    payload,
  );
  const row = await callAs<Record<string, unknown>>(
    sql,
    "service_role",
    SERVICE,
    (q) =>
      q`select jsonb_build_object('n', ${-42}::int, 'x', ${2.5}::float8, 'b', ${false}, 'nil', ${null}::text,
                                 't', ${new Date(
        "2026-12-02T10:00:00.123Z",
      )}::timestamptz = '2026-12-02T10:00:00.123Z') as result`,
  );
  assert.deepEqual(row, { n: -42, x: 2.5, b: false, nil: null, t: true });
});

test("callAs: a NUL is refused before anything is sent, as Postgres refuses it", async () => {
  await assert.rejects(
    callAs(sql, "service_role", SERVICE, (q) => q`select ${"a\0b"}::text as result`),
    (err: { code?: string }) => err.code === "22021",
  );
});

test("callAs: the call runs as the role with the claims; a failed call rolls back and leaves the connection clean", async () => {
  await resetData();
  const user = crypto.randomUUID();
  const who = await callAs<{ role: string; uid: string }>(
    sql,
    "authenticated",
    { sub: user, role: "authenticated" },
    (q) => q`select jsonb_build_object('role', current_user, 'uid', auth.uid()) as result`,
  );
  assert.deepEqual(who, { role: "authenticated", uid: user });
  // authenticated may not call the worker's functions: the grant is checked as that role
  await assert.rejects(
    callAs(
      sql,
      "authenticated",
      { sub: user, role: "authenticated" },
      (q) => q`select queue.claim_jobs(p_worker_id => ${"w"}) as result`,
    ),
    (err: { code?: string }) => err.code === "42501",
  );
  // a write followed by an error in the same call: nothing stays
  await assert.rejects(
    callAs(
      sql,
      "service_role",
      SERVICE,
      (q) =>
        q`with i as (insert into public.peak_windows (starts_at, ends_at, label)
                   values ('01:00', '02:00', ${"rolled back"}) returning 1)
        select (select count(*) from i) / 0 as result`,
    ),
  );
  // the same connection (max: 1) afterwards: no transaction left open, the session's role is its own again
  // (one simple-protocol statement: outside a transaction block its transaction starts with it)
  const after = await sql.unsafe("select current_user as role, now() = statement_timestamp() as fresh")
    .simple();
  assert.deepEqual([...after], [{ role: "postgres", fresh: true }]);
  assert.equal(
    (await db`select count(*)::int as n from public.peak_windows where label = 'rolled back'`)[0].n,
    0,
  );
  await sql.end();
});
