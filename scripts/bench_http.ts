// Enqueue-to-dispatch latency through HTTP: a job enqueued while capacity is free reaches its render
// service by the kick path (no cron). Also the enqueue and callback round trips.
// Run by `deno task bench` (or against the dev stack: deno run -A scripts/bench_http.ts).
import { db, env, fnUrl, mintUser, resetData } from "../tests/harness.ts";
import { fakeRenderService } from "../tests/support/render_service.ts";

const ROUNDS = Number(Deno.env.get("BENCH_ROUNDS") ?? 50);
const arrivals = new Map<string, (at: number) => void>();

const render = await fakeRenderService((dispatch) => {
  arrivals.get(dispatch.job_id)?.(performance.now());
  return new Response(JSON.stringify({ accepted: true }), { status: 202 });
});

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
const fmt = (label: string, xs: number[]) =>
  console.log(
    `${label.padEnd(34)} n=${xs.length}  p50=${pct(xs, 0.5).toFixed(1)} ms  p95=${
      pct(xs, 0.95).toFixed(1)
    } ms  max=${Math.max(...xs).toFixed(1)} ms`,
  );

try {
  await resetData();
  await db`update job_queue_config set max_concurrent_renders = 1000`;
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${render.url})`;
  const toDispatch: number[] = [];
  const enqueueRoundTrip: number[] = [];
  const callbackRoundTrip: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const user = await mintUser();
    const start = performance.now();
    const res = await fetch(fnUrl("enqueue"), {
      method: "POST",
      headers: { authorization: `Bearer ${user.token}`, "content-type": "application/json" },
      body: JSON.stringify({ job_type: "doubt", payload: { question: `Benchmark question ${i}` } }),
    });
    const { job } = await res.json();
    enqueueRoundTrip.push(performance.now() - start);
    const dispatchOf = () => render.dispatches.find((d) => d.job_id === job.id);
    const arrived = dispatchOf()
      ? performance.now()
      : await new Promise<number>((resolve) => arrivals.set(job.id, resolve));
    toDispatch.push(arrived - start);

    const d = dispatchOf()!;
    const cbStart = performance.now();
    const cb = await fetch(d.callback.url, {
      method: "POST",
      headers: { authorization: `Bearer ${d.callback.token}`, "content-type": "application/json" },
      body: JSON.stringify({
        job_id: job.id,
        attempt: d.attempt,
        type: "completed",
        result: { video_url: "http://x/v.mp4" },
      }),
    });
    await cb.body?.cancel();
    callbackRoundTrip.push(performance.now() - cbStart);
  }
  fmt("enqueue → dispatch (kick path)", toDispatch);
  fmt("POST /enqueue round trip", enqueueRoundTrip);
  fmt("completed callback round trip", callbackRoundTrip);
  console.log(`(stack ${env.API_URL}; one job at a time, capacity free)`);
} finally {
  await render.close();
  await db.end();
}
