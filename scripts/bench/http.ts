// Latency through the whole path: the stack's functions gateway, the real enqueue function and worker, and a
// fake render service on a free port (tests/support/render_service.ts) that notes when each dispatch arrives.
// pg_cron's passes are off (bench.ts), so every dispatch here comes from a kick.
//   enqueue → dispatch: POST /enqueue with a user token while capacity is free, until its dispatch arrives;
//                       each job is then completed by callback, so capacity stays free.
//   slot refill: all slots busy and jobs waiting; a `completed` callback is sent, until the next job's
//                dispatch arrives (the callback's kick → a worker pass → claim → dispatch).
import type { DispatchBody } from "../../shared/render_protocol.ts";
import { fakeRenderService } from "../../tests/support/render_service.ts";
import { createUser } from "../stack/tokens.ts";
import type { BenchContext, Figure, Row } from "./context.ts";
import { fmtMs, latency } from "./measure.ts";
import { cleanQueue, SERVICE_ROLE } from "./ours.ts";

const ROUNDS = 100;
const WARMUP = 10;
/** Render slots in the refill measurement (max_concurrent_renders, no peak multiplier). */
const SLOTS = 4;

export const http: Figure = {
  name: "http",
  async run(ctx: BenchContext): Promise<Row[]> {
    const { admin, env } = ctx;
    const arrivedAt = new Map<string, number>();
    const attemptKey = (d: { job_id: string; attempt: number }) => `${d.job_id}/${d.attempt}`;
    await using render = await fakeRenderService((d) => {
      arrivedAt.set(attemptKey(d), performance.now());
      return new Response(null, { status: 202 });
    });
    const arrival = (d: DispatchBody) => arrivedAt.get(attemptKey(d))!;
    const cleanQueueServedBy = async (url: string) => {
      await cleanQueue(admin);
      await admin`delete from public.render_endpoints`;
      await admin`insert into public.render_endpoints (renderer, url) select name, ${url} from public.renderers`;
    };
    const complete = async (d: DispatchBody) => {
      const res = await fetch(d.callback.url, {
        method: "POST",
        headers: { authorization: `Bearer ${d.callback.token}`, "content-type": "application/json" },
        body: JSON.stringify({
          job_id: d.job_id,
          attempt: d.attempt,
          type: "completed",
          result: { video_url: `https://cdn.example.test/${d.job_id}.mp4` },
        }),
      });
      await res.body?.cancel();
      if (!res.ok) throw new Error(`completed callback for ${d.job_id}: HTTP ${res.status}`);
    };

    // Enqueue → dispatch, capacity free. Users take turns (the seed's limit: 10 enqueues a minute each).
    await cleanQueueServedBy(render.url);
    const users = await Promise.all(
      Array.from({ length: Math.ceil((WARMUP + ROUNDS) / 10) }, () => createUser(env, admin)),
    );
    const toDispatch: number[] = [];
    const enqueueRoundTrip: number[] = [];
    for (let i = 0; i < WARMUP + ROUNDS; i++) {
      const start = performance.now();
      const res = await fetch(`${env.FUNCTIONS_URL}/enqueue`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${users[i % users.length].token}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ job_type: "doubt", payload: { question: `Benchmark question ${i}` } }),
      });
      if (res.status !== 201) throw new Error(`POST /enqueue: HTTP ${res.status} ${await res.text()}`);
      const { job } = await res.json();
      const answered = performance.now();
      const d = await render.until(
        `the dispatch of ${job.id}`,
        () => render.dispatches.find((x) => x.job_id === job.id),
      );
      if (i >= WARMUP) {
        toDispatch.push(arrival(d) - start);
        enqueueRoundTrip.push(answered - start);
      }
      await complete(d);
    }

    // Slot refill: SLOTS jobs rendering, the rest waiting (enqueued in SQL, so that no enqueue kicks a pass).
    await cleanQueueServedBy(render.url);
    await admin`update public.job_queue_config set max_concurrent_renders = ${SLOTS}, peak_worker_multiplier = 1`;
    for (let i = 0; i < SLOTS + WARMUP + ROUNDS; i++) await ctx.ours.enqueue(SERVICE_ROLE, i);
    const first = render.dispatches.length;
    const kick = await fetch(`${env.FUNCTIONS_URL}/video-queue-worker`, {
      method: "POST",
      headers: { apikey: env.SECRET_KEY, "content-type": "application/json" },
      body: "{}",
    });
    await kick.body?.cancel();
    const running = await render.until(
      `${SLOTS} dispatches`,
      () => render.dispatches.length >= first + SLOTS && render.dispatches.slice(first, first + SLOTS),
    );
    const refill: number[] = [];
    for (let i = 0; i < WARMUP + ROUNDS; i++) {
      const seen = render.dispatches.length;
      const start = performance.now();
      const sent = complete(running.shift()!);
      const next = await render.until("the next dispatch", () => render.dispatches[seen]);
      await sent;
      if (i >= WARMUP) refill.push(arrival(next) - start);
      running.push(next);
    }
    await cleanQueue(admin);

    const dispatch = latency(toDispatch);
    const roundTrip = latency(enqueueRoundTrip);
    const slot = latency(refill);
    return [
      {
        figure: "enqueue → dispatch through HTTP, capacity free",
        measured: `p50 ${fmtMs(dispatch.p50)}, p99 ${fmtMs(dispatch.p99)}`,
        target: "p50 ≤ 20 ms, p99 ≤ 100 ms",
        verdict: dispatch.p50 <= 20 && dispatch.p99 <= 100 ? "PASS" : "MISS",
        ratios: `(201 answered: p50 ${fmtMs(roundTrip.p50)})`,
        data: { ...dispatch, enqueue_round_trip: roundTrip },
      },
      {
        figure: "slot refill (completion callback → next dispatch), jobs waiting",
        measured: `p50 ${fmtMs(slot.p50)} (p99 ${fmtMs(slot.p99)})`,
        target: "p50 ≤ 50 ms",
        verdict: slot.p50 <= 50 ? "PASS" : "MISS",
        data: { ...slot, slots: SLOTS },
      },
    ];
  },
};
