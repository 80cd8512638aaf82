// SQL queue benchmark (called by `deno task bench`, or alone with SUPABASE_DB_URL set):
// the cost of one enqueue, one claim and one position lookup with 100 and with 100,000 jobs waiting,
// and of get_queue_stats() with 1,000,000 finished jobs (skip that with --quick).
// Figures are client round trips (median and p95 over many calls) over one connection, each call in its
// own transaction as the Edge Functions make them. It resets the queue tables to the pgTAP files' clean
// queue (tests/support/reset_queue.ts): use a throw-away database.
import postgres from "postgres";
import { resetQueue } from "../tests/support/reset_queue.ts";

const url = Deno.env.get("SUPABASE_DB_URL");
if (!url) throw new Error("set SUPABASE_DB_URL (a throw-away database: the benchmark truncates jobs)");
const quick = Deno.args.includes("--quick");
const sql = postgres(url, { max: 1, prepare: false, onnotice: () => {} });
const USER = "00000000-0000-0000-0000-0000000b0b01";
const claims = JSON.stringify({ sub: USER, role: "authenticated" });

async function timeIt(n: number, fn: (i: number) => Promise<unknown>) {
  for (let i = 0; i < Math.min(20, n); i++) await fn(i); // warm the plan caches
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn(i);
    ms.push(performance.now() - t);
  }
  ms.sort((a, b) => a - b);
  return { median: ms[Math.floor(n / 2)], p95: ms[Math.floor(n * 0.95)] };
}
const fmt = (r: { median: number; p95: number }) => `${r.median.toFixed(2)} ms (p95 ${r.p95.toFixed(2)})`;

async function fill(waiting: number) {
  await sql`truncate public.jobs cascade`;
  await sql`insert into public.jobs (job_type, status, payload, created_at)
            select (array['doubt', 'topic_short', 'daily_ca'])[1 + (g % 3)], 'queued', '{"question": "bench"}',
                   now() - interval '2 hours' + g * interval '1 ms'
              from generate_series(1, ${waiting}) g`;
  await sql.unsafe("vacuum analyze public.jobs");
}

const rows: string[][] = [];
await sql`create schema if not exists vq_bench`;
await sql`drop table if exists vq_bench.saved_config`;
await sql`create table vq_bench.saved_config as table public.job_queue_config`;
await sql`insert into auth.users (id, email) values (${USER}, 'bench@local') on conflict do nothing`;
await resetQueue(sql); // the pgTAP files' clean queue: one endpoint per renderer, the seed's config
await sql`update public.job_queue_config set max_concurrent_renders = 100000, max_manim_renders = 100000,
                 max_queued_per_user = 1000000, max_enqueues_per_minute = 1000000`;
try {
  for (const waiting of [100, 100_000]) {
    await fill(waiting);
    // enqueue as an end user (per-user lock, limits, idempotency lookup, position + estimate of the new job)
    const enqueue = await timeIt(300, async (i) => {
      await sql`begin`;
      await sql`select set_config('request.jwt.claims', ${claims}, true), set_config('role', 'authenticated', true)`;
      await sql`select queue.enqueue_job('doubt', ${
        sql.json({ question: "q" })
      }::jsonb, ${`k-${waiting}-${i}`})`;
      await sql`commit`;
    });
    // claim one job (rolled back, so the queue stays the same size)
    const claim = await timeIt(300, async () => {
      await sql`begin`;
      await sql`select queue.claim_jobs('bench', 1)`;
      await sql`rollback`;
    });
    const [{ last }] =
      await sql`select id as last from public.jobs where status = 'queued' and priority_rank = 2
                                  order by created_at desc, id desc limit 1`;
    const [{ mid }] =
      await sql`select id as mid from public.jobs where status = 'queued' and priority_rank = 2
                                 order by created_at, id offset ${Math.floor(waiting / 6)} limit 1`;
    const posLast = await timeIt(300, async () => {
      await sql`select queue.get_job(${last}::uuid)`;
    });
    const posMid = await timeIt(100, async () => {
      await sql`select queue.get_job(${mid}::uuid)`;
    });
    const [{ p }] = await sql`select queue.get_job(${mid}::uuid) ->> 'queue_position' as p`;
    rows.push([
      `${waiting.toLocaleString("en")} waiting`,
      fmt(enqueue),
      fmt(claim),
      fmt(posLast),
      `${fmt(posMid)} [pos ${p}]`,
    ]);
  }
  console.log("\nSQL queue, client round trip per call (median, p95):");
  console.table(rows.map(([w, e, c, pl, pm]) => ({
    jobs: w,
    "enqueue_job": e,
    "claim_jobs (1 job)": c,
    "position: get_job (newest low job)": pl,
    "position: get_job (mid-queue low job)": pm,
  })));

  if (!quick) {
    await sql`truncate public.jobs cascade`;
    const t0 = performance.now();
    await sql`insert into public.jobs (job_type, status, payload, created_at, started_at, completed_at, result, attempt)
              select 'topic_short', 'completed', '{}', now() - g * interval '2.5 s' - interval '3 min',
                     now() - g * interval '2.5 s' - interval '2 min', now() - g * interval '2.5 s',
                     '{"video_url": "v"}', 1
                from generate_series(1, 1000000) g`;
    await sql.unsafe("vacuum analyze public.jobs");
    const fillS = ((performance.now() - t0) / 1000).toFixed(0);
    const stats = await timeIt(50, async () => {
      await sql`select public.get_queue_stats()`;
    });
    console.log(
      `\nget_queue_stats() with 1,000,000 finished jobs (spread over 29 days; filled in ${fillS} s): ${
        fmt(stats)
      }`,
    );
  }
} finally {
  await sql`truncate public.jobs cascade`;
  await sql`update public.job_queue_config c set max_concurrent_renders = s.max_concurrent_renders,
              max_manim_renders = s.max_manim_renders, max_queued_per_user = s.max_queued_per_user,
              max_enqueues_per_minute = s.max_enqueues_per_minute from vq_bench.saved_config s where s.id = c.id`;
  await sql`drop schema vq_bench cascade`;
  await sql.end();
}
