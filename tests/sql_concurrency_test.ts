// Concurrency tests of the SQL queue with real connections (postgres.js), against SUPABASE_DB_URL.
//
// 1. 20 connections claim and finish jobs concurrently for thousands of rounds while a 21st changes the
//    caps at random and a 22nd cancels jobs at random. An audit trigger (installed for the test) samples
//    the processing counts inside every claim, after the claim's own update, and records any sample over
//    the global or a renderer cap. Asserts: no cap ever exceeded, no job claimed twice, no job lost.
// 2. cancel racing complete, and cancel racing claim, each many times: exactly one side wins.
//
// The test resets the queue as the pgTAP files do (tests/support/reset_queue.ts) and puts the configuration
// back when done: run it against a local / test database only.
import { seededRandom } from "./support/seeded_random.ts";
import postgres from "postgres";
import assert from "node:assert/strict";
import { resetQueue } from "./support/reset_queue.ts";

const url = Deno.env.get("SUPABASE_DB_URL") ?? (() => {
  throw new Error("set SUPABASE_DB_URL to a local test database");
})();

type Sql = ReturnType<typeof postgres>;
const connect = (max = 1): Sql => postgres(url, { max, prepare: false, onnotice: () => {} });

const vqCode = (e: unknown) => (e as { code?: string }).code;

async function setUp(admin: Sql) {
  await admin.begin(async (tx) => {
    await tx`create schema if not exists vq_test`;
    await tx`drop table if exists vq_test.saved_config, vq_test.saved_renderers, vq_test.saved_endpoints,
                                  vq_test.saved_windows, vq_test.samples`;
    await tx`create table vq_test.saved_config as table public.job_queue_config`;
    await tx`create table vq_test.saved_renderers as table public.renderers`;
    await tx`create table vq_test.saved_endpoints as table public.render_endpoints`;
    await tx`create table vq_test.saved_windows as table public.peak_windows`;
    await tx`create table vq_test.samples (
               renderer text, global_processing int, global_cap int, renderer_processing int, renderer_cap int,
               user_processing int, user_cap int, queue_paused boolean, renderer_paused boolean)`;
    await tx.unsafe(`
      create or replace function vq_test.audit_claim() returns trigger language plpgsql as $$
      declare g int; r int; gc int; rc int; u int; uc int; qp boolean; rp boolean;
      begin
        select count(*) into g from public.jobs where status = 'processing';
        select count(*) into r from public.jobs where status = 'processing' and renderer = new.renderer;
        select q.effective into gc from private.queue_capacity(now()) q;
        select c.max_concurrent into rc from private.renderer_caps() c where c.renderer = new.renderer;
        select count(*) into u from public.jobs where status = 'processing' and user_id = new.user_id;
        select c.max_processing_per_user, c.paused into uc, qp from public.job_queue_config c;
        select x.paused into rp from public.renderers x where x.name = new.renderer;
        insert into vq_test.samples values (new.renderer, g, gc, r, rc, case when new.user_id is not null then u end,
                                            uc, qp, rp);
        return null;
      end $$`);
    await tx`drop trigger if exists vq_test_audit_claim on public.jobs`;
    await tx.unsafe(`create trigger vq_test_audit_claim after update on public.jobs for each row
                     when (old.status = 'queued' and new.status = 'processing')
                     execute function vq_test.audit_claim()`);
    // The pgTAP files' clean queue, plus a second Manim endpoint (claims spread over both).
    await resetQueue(tx);
    await tx`insert into public.render_endpoints (renderer, url) values ('manim', 'http://manim-2.test:5000')`;
  });
}

async function tearDown(admin: Sql) {
  await admin.begin(async (tx) => {
    await tx`drop trigger if exists vq_test_audit_claim on public.jobs`;
    await tx`truncate public.jobs cascade`;
    await tx`delete from public.render_endpoints`;
    await tx`delete from public.peak_windows`;
    await tx`insert into public.render_endpoints select * from vq_test.saved_endpoints`;
    await tx`insert into public.peak_windows select * from vq_test.saved_windows`;
    await tx`update public.renderers r set max_concurrent = s.max_concurrent
               from vq_test.saved_renderers s where s.name = r.name`;
    await tx`update public.job_queue_config c set
               max_concurrent_renders = s.max_concurrent_renders, max_manim_renders = s.max_manim_renders,
               retry_interval_minutes = s.retry_interval_minutes, peak_hour_start = s.peak_hour_start,
               peak_hour_end = s.peak_hour_end, peak_worker_multiplier = s.peak_worker_multiplier,
               peak_time_zone = s.peak_time_zone, job_timeout_minutes = s.job_timeout_minutes,
               max_queued_per_user = s.max_queued_per_user, max_enqueues_per_minute = s.max_enqueues_per_minute,
               finished_job_retention_days = s.finished_job_retention_days,
               default_processing_seconds = s.default_processing_seconds, paused = s.paused,
               max_processing_per_user = s.max_processing_per_user
               from vq_test.saved_config s where s.id = c.id`;
    await tx`update public.renderers r set paused = s.paused from vq_test.saved_renderers s where s.name = r.name`;
    await tx`drop schema vq_test cascade`;
  });
}

Deno.test({
  name:
    "20 connections claim/finish concurrently under random caps, pauses and per-user caps: caps hold, no double claim, no loss",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const seed = Number(Deno.env.get("VQ_SEED") ?? 20261122);
    const rand = seededRandom(seed);
    const JOBS = 3000;
    const WORKERS = 20;
    const admin = connect(2);
    await setUp(admin);
    // Retries come back at once (0-minute backoff) so retried jobs are claimed again within the run.
    await admin`update public.job_queue_config set retry_interval_minutes = 0`;
    try {
      // Ten users own most jobs (every 11th is a service job), so the per-user cap has work to do.
      const users = Array.from({ length: 10 }, () => crypto.randomUUID());
      await admin`insert into auth.users (id) select unnest(${users}::uuid[])`;
      await admin`insert into public.jobs (job_type, status, payload, created_at, user_id)
                  select (array['doubt', 'topic_short', 'daily_ca'])[1 + (g % 3)], 'queued', '{}',
                         now() - interval '1 hour' + g * interval '1 ms',
                         case when g % 11 <> 0 then (${users}::uuid[])[1 + (g % 10)] end
                    from generate_series(1, ${JOBS}) g`;

      const active = new Map<string, number>(); // job_id -> attempt currently held by some worker
      const seenAttempts = new Set<string>();
      const problems: string[] = [];
      let rounds = 0;
      let claims = 0;
      let capChanges = 0;
      let stopChanging = false;
      let finished = false;
      const outcomes = { completed: 0, retried: 0, failed: 0, released: 0, refused: 0 };

      const worker = async (w: number) => {
        const sql = connect();
        const r = seededRandom(seed + w + 1);
        try {
          while (!finished) {
            rounds++;
            const [{ claims: got }] = await sql`select queue.claim_jobs(${"w" + w}, ${
              1 + Math.floor(r() * 3)
            }) as claims`;
            if (got.length === 0) {
              const [{ open }] = await sql`select count(*)::int as open from public.jobs
                                            where status in ('queued', 'processing')`;
              if (open === 0) finished = true;
              continue;
            }
            for (const c of got) {
              claims++;
              const key = `${c.job_id}/${c.attempt}`;
              if (seenAttempts.has(key)) problems.push(`attempt handed out twice: ${key}`);
              seenAttempts.add(key);
              if (active.has(c.job_id)) {
                problems.push(`job ${c.job_id} claimed while held (attempt ${active.get(c.job_id)})`);
              }
              active.set(c.job_id, c.attempt);
            }
            for (const c of got) {
              active.delete(c.job_id); // before the outcome: once it commits the job may be claimed again
              const p = r();
              try {
                if (p < 0.75) {
                  await sql`select queue.complete_job(${c.job_id}::uuid, ${c.attempt}::int, ${c.callback_token},
                                                       ${sql.json({ video_url: "v" })}::jsonb)`;
                  outcomes.completed++;
                } else if (p < 0.88) {
                  const [{ j }] = await sql`select queue.fail_job(${c.job_id}::uuid, ${c.attempt}::int,
                                              ${c.callback_token}, 'flaky', true) as j`;
                  if (j.status === "queued") outcomes.retried++;
                  else outcomes.failed++;
                } else if (p < 0.93) {
                  await sql`select queue.fail_job(${c.job_id}::uuid, ${c.attempt}::int, ${c.callback_token}, 'bad', false)`;
                  outcomes.failed++;
                } else {
                  await sql`select queue.release_job(${c.job_id}::uuid, ${c.attempt}::int)`;
                  outcomes.released++;
                }
              } catch (e) {
                if (vqCode(e) !== "VQ409") throw e; // cancelled meanwhile: refused, and nothing changed
                outcomes.refused++;
              }
            }
          }
        } finally {
          await sql.end();
        }
      };

      // Changes caps at random (under the claim lock), then leaves generous caps so the run drains.
      const capChanger = async () => {
        const sql = connect();
        try {
          while (!finished && !stopChanging) {
            await sql.begin(async (tx) => {
              // Exclusive: claims hold it shared, so a claim never sees caps change between its own read and the audit's.
              await tx`select pg_advisory_xact_lock(private.claim_lock_key())`;
              const peak = rand() < 0.5;
              // A window around the current local time (peak) or far from it (off-peak); may cross midnight.
              await tx`update public.job_queue_config set
                         max_concurrent_renders = ${1 + Math.floor(rand() * 12)},
                         max_manim_renders = ${Math.floor(rand() * 5)},
                         peak_worker_multiplier = ${(1 + rand() * 1.5).toFixed(2)}::numeric,
                         peak_hour_start = case when ${peak} then (now() at time zone peak_time_zone)::time - interval '2 hours'
                                                else (now() at time zone peak_time_zone)::time + interval '2 hours' end,
                         peak_hour_end = case when ${peak} then (now() at time zone peak_time_zone)::time + interval '2 hours'
                                              else (now() at time zone peak_time_zone)::time + interval '3 hours' end`;
              await tx`update public.renderers set max_concurrent = ${
                rand() < 0.5 ? null : Math.floor(rand() * 6)
              }
                        where name = 'revideo'`;
              await tx`update public.renderers set max_concurrent = ${
                rand() < 0.5 ? null : 1 + Math.floor(rand() * 6)
              }
                        where name = 'orchestrator'`;
              // Pauses and the per-user cap change under load too.
              await tx`update public.job_queue_config set paused = ${rand() < 0.15},
                         max_processing_per_user = ${rand() < 0.4 ? null : 1 + Math.floor(rand() * 3)}`;
              await tx`update public.renderers set paused = ${rand() < 0.2} where name = 'revideo'`;
            });
            capChanges++;
            if (capChanges >= 300) stopChanging = true;
            await new Promise((res) => setTimeout(res, 5)); // pacing only, not synchronisation
          }
          await sql`update public.job_queue_config set max_concurrent_renders = 12, max_manim_renders = 4,
                      paused = false, max_processing_per_user = null`;
          await sql`update public.renderers set max_concurrent = null, paused = false where name <> 'manim'`;
        } finally {
          await sql.end();
        }
      };

      // Cancels random jobs while everything runs; each cancel either wins or gets 409 (finished).
      const cancelled = new Set<string>();
      const canceller = async () => {
        const sql = connect();
        const r = seededRandom(seed * 7);
        try {
          for (let i = 0; i < 150 && !finished; i++) {
            const [row] = await sql`select id from public.jobs order by created_at offset ${
              Math.floor(r() * JOBS)
            } limit 1`;
            try {
              await sql`select queue.cancel_job(${row.id}::uuid, 'race')`;
              cancelled.add(row.id);
            } catch (e) {
              if (vqCode(e) !== "VQ409") throw e;
            }
          }
        } finally {
          await sql.end();
        }
      };

      await Promise.all([
        ...Array.from({ length: WORKERS }, (_, w) => worker(w)),
        capChanger(),
        canceller(),
      ]);

      assert.deepEqual(problems, [], "no job claimed twice");
      const [v] = await admin`select
          count(*)::int as samples,
          count(*) filter (where global_processing > global_cap)::int as global_over,
          count(*) filter (where renderer_cap is not null and renderer_processing > renderer_cap)::int as renderer_over,
          count(*) filter (where global_processing = global_cap)::int as at_global_cap,
          count(*) filter (where renderer = 'manim' and renderer_processing = renderer_cap)::int as at_manim_cap,
          count(*) filter (where user_cap is not null and user_processing > user_cap)::int as user_over,
          count(*) filter (where user_cap is not null and user_processing = user_cap)::int as at_user_cap,
          count(*) filter (where queue_paused or renderer_paused)::int as claimed_while_paused
        from vq_test.samples`;
      console.log({ seed, rounds, claims, capChanges, cancelled: cancelled.size, outcomes, audit: v });
      assert.equal(v.samples, claims, "the audit saw every claim");
      assert.equal(v.global_over, 0, "global cap never exceeded");
      assert.equal(v.renderer_over, 0, "no renderer cap ever exceeded");
      assert.equal(v.user_over, 0, "no user ever ran more than max_processing_per_user at once");
      assert.equal(v.claimed_while_paused, 0, "nothing claimed while its queue or renderer was paused");
      assert.ok(v.at_user_cap > 0, "the run actually ran into the per-user cap");
      assert.ok(v.at_global_cap > 0 && v.at_manim_cap > 0, "the run actually ran into the caps");
      assert.ok(
        rounds >= 1000 && claims >= JOBS - cancelled.size,
        `thousands of rounds (${rounds}, ${claims} claims)`,
      );

      const [s] = await admin`select count(*)::int as total,
          count(*) filter (where status not in ('completed', 'failed', 'cancelled'))::int as open,
          count(*) filter (where status = 'completed')::int as completed,
          count(*) filter (where status = 'cancelled')::int as cancelled
        from public.jobs`;
      assert.equal(s.total, JOBS, "no job lost");
      assert.equal(s.open, 0, "every job finished");
      assert.equal(s.completed, outcomes.completed, "every accepted completion is a completed job, once");
      assert.equal(s.cancelled, cancelled.size, "every accepted cancel is a cancelled job");
      const [{ held }] = await admin`select count(*)::int as held from private.capacity_slots where job_id is not null`;
      assert.equal(held, 0, "no capacity slot is left held once every job finished");
      const [a] = await admin`select
          count(*) filter (where a.outcome is null)::int as open_attempts,
          count(*) filter (where a.outcome = 'completed' and j.status <> 'completed')::int as bad_completed,
          (select count(*)::int from public.jobs j2 where j2.status = 'completed'
             and (select count(*) from public.job_attempts a2 where a2.job_id = j2.id and a2.outcome = 'completed') <> 1) as completed_not_once
        from public.job_attempts a join public.jobs j on j.id = a.job_id`;
      assert.deepEqual(
        a,
        { open_attempts: 0, bad_completed: 0, completed_not_once: 0 },
        "attempt history consistent",
      );
      const [d] = await admin`select coalesce(sum(n), 0)::int as depth from public.queue_depth_slots`;
      assert.equal(d.depth, 0, "queued depth counters back to 0");
    } finally {
      await tearDown(admin);
      await admin.end();
    }
  },
});

Deno.test({
  name: "cancel racing complete, and cancel racing claim: exactly one side wins, late callbacks refused",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const admin = connect(2);
    const a = connect();
    const b = connect();
    await setUp(admin);
    try {
      const ROUNDS = 150;
      let completeWon = 0;
      let cancelWon = 0;
      for (let i = 0; i < ROUNDS; i++) {
        const [{ id }] =
          await admin`insert into public.jobs (job_type, status, payload) values ('doubt', 'queued', '{}')
                                     returning id`;
        const [{ c }] = await admin`select queue.claim_jobs('racer', 1) -> 0 as c`;
        assert.equal(c.job_id, id);
        const [done, cancel] = await Promise.allSettled([
          a`select queue.complete_job(${id}::uuid, ${c.attempt}::int, ${c.callback_token}, ${
            a.json({ video_url: "v" })
          }::jsonb) as j`,
          b`select queue.cancel_job(${id}::uuid, 'race') as r`,
        ]);
        const [{ status }] = await admin`select status from public.jobs where id = ${id}`;
        if (done.status === "fulfilled") {
          assert.equal(cancel.status, "rejected");
          assert.equal(vqCode((cancel as PromiseRejectedResult).reason), "VQ409");
          assert.equal(status, "completed");
          completeWon++;
        } else {
          assert.equal(vqCode(done.reason), "VQ409");
          assert.equal(cancel.status, "fulfilled");
          assert.equal(status, "cancelled");
          cancelWon++;
        }
      }
      console.log({ completeWon, cancelWon });

      let claimedFirst = 0;
      let cancelledFirst = 0;
      for (let i = 0; i < ROUNDS; i++) {
        const [{ id }] =
          await admin`insert into public.jobs (job_type, status, payload) values ('daily_ca', 'queued', '{}')
                                     returning id`;
        const [claim, cancel] = await Promise.all([
          a`select queue.claim_jobs('racer', 1) as c`,
          b`select queue.cancel_job(${id}::uuid, 'race') as r`,
        ]);
        const got = claim[0].c as { job_id: string; attempt: number; callback_token: string }[];
        const ca = cancel[0].r.cancelled_attempt;
        assert.equal(
          cancel[0].r.job.status,
          "cancelled",
          "the cancel always wins over a queued/processing job",
        );
        if (got.length === 1) {
          assert.equal(got[0].job_id, id);
          assert.deepEqual(ca?.attempt, 1, "claimed first: the cancel fences attempt 1");
          await assert.rejects(
            a`select queue.complete_job(${id}::uuid, 1, ${got[0].callback_token}, ${
              a.json({ video_url: "v" })
            }::jsonb)`,
            (e) => vqCode(e) === "VQ409",
          );
          claimedFirst++;
        } else {
          assert.equal(ca, null, "cancelled first: never started");
          const [{ n }] =
            await admin`select count(*)::int as n from public.job_attempts where job_id = ${id}`;
          assert.equal(n, 0);
          cancelledFirst++;
        }
      }
      console.log({ claimedFirst, cancelledFirst });
      const [{ open }] =
        await admin`select count(*)::int as open from public.jobs where status <> 'completed' and status <> 'cancelled'`;
      assert.equal(open, 0);
    } finally {
      await tearDown(admin);
      await Promise.all([admin.end(), a.end(), b.end()]);
    }
  },
});
