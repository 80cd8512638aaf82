// Scheduling over HTTP (API.md "Scheduling"): pause and resume, heartbeats and the lease as a fence,
// expiry, and the Job's wait_reason / estimate_basis / expires_at. The rules themselves are in
// supabase/tests/10_scheduling.sql with an injected clock; these check the endpoints and the worker.
import assert from "node:assert/strict";
import type { Job } from "../shared/mod.ts";
import { db, env, fnUrl, mintUser, resetData, setQueueCronActive, test } from "./harness.ts";
import { fakeRenderService } from "./support/render_service.ts";

// deno-lint-ignore no-explicit-any -- JSON bodies are checked field by field
type Answer = { status: number; body: any };

async function call(
  path: string,
  init: RequestInit & { token?: string; json?: unknown } = {},
): Promise<Answer> {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  else headers.apikey = env.SECRET_KEY;
  const res = await fetch(fnUrl(path), {
    method: init.method ?? (init.json === undefined ? "GET" : "POST"),
    headers,
    body: init.json === undefined ? undefined : JSON.stringify(init.json),
  });
  return { status: res.status, body: await res.json() };
}

const workerPass = () => call("video-queue-worker", { json: {} });
const jobState = async (id: string): Promise<Job> => (await call(`status?job_id=${id}`)).body.job;

async function setup() {
  await resetData();
  await setQueueCronActive(false);
  await db`delete from render_endpoints`;
}

test("pause and resume: admins only; a paused queue starts nothing, keeps order, and resuming starts at once", async () => {
  await setup();
  await using service = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  const user = await mintUser();
  const admin = await mintUser({ admin: true });

  const refused = await call("status/pause", { token: user.token, json: {} });
  assert.equal(refused.status, 403);
  assert.equal(refused.body.error.code, "forbidden");
  const unknown = await call("status/pause", { token: admin.token, json: { renderer: "blender" } });
  assert.equal(unknown.status, 400);

  const paused = await call("status/pause", { token: admin.token, json: {} });
  assert.equal(paused.status, 200);
  assert.equal(paused.body.stats.paused, true);

  const a =
    (await call("enqueue", { token: user.token, json: { job_type: "doubt", payload: { question: "a" } } }))
      .body.job as Job;
  const b =
    (await call("enqueue", { token: user.token, json: { job_type: "doubt", payload: { question: "b" } } }))
      .body.job as Job;
  assert.equal((await workerPass()).body.claimed, 0, "a paused queue claims nothing");
  const [sa, sb] = [await jobState(a.id), await jobState(b.id)];
  assert.deepEqual([sa.wait_reason, sa.queue_position, sb.queue_position], ["paused", 1, 2]);
  assert.equal(service.dispatches.length, 0);

  const resumed = await call("status/resume", { token: admin.token, json: {} });
  assert.equal(resumed.status, 200);
  assert.equal(resumed.body.stats.paused, false);
  // No worker call here: resuming kicks a pass itself.
  await service.until("both dispatches after the resume", () => service.dispatches.length === 2);
  assert.deepEqual(service.dispatches.map((d) => d.job_id), [a.id, b.id], "in their order");
});

test("a renderer paused by an admin holds only its own jobs; the stats show it", async () => {
  await setup();
  await using service = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url}), ('manim', ${service.url})`;
  const admin = await mintUser({ admin: true });
  const paused = await call("status/pause", { token: admin.token, json: { renderer: "orchestrator" } });
  assert.equal(paused.body.stats.by_renderer.orchestrator.paused, true);
  assert.equal(paused.body.stats.by_renderer.manim.paused, false);
  const doubt = (await call("enqueue", { json: { job_type: "doubt", payload: { question: "q" } } })).body.job;
  const short =
    (await call("enqueue", { json: { job_type: "topic_short", payload: { topic: "t" } } })).body.job;
  await service.until(
    "the topic short's dispatch",
    () => service.dispatches.some((d) => d.job_id === short.id),
  );
  assert.equal((await jobState(doubt.id)).wait_reason, "paused");
  await call("status/resume", { token: admin.token, json: { renderer: "orchestrator" } });
  await service.until("the doubt's dispatch", () => service.dispatches.some((d) => d.job_id === doubt.id));
});

test("heartbeats extend the lease; a callback past the lease is refused even before recovery runs", async () => {
  await setup();
  await using service = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  const job =
    (await call("enqueue", { json: { job_type: "doubt", payload: { question: "long" } } })).body.job;
  const d = await service.until("the dispatch", () => service.dispatches[0]);
  const callback = (event: Record<string, unknown>) =>
    fetch(d.callback.url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${d.callback.token}` },
      body: JSON.stringify({ job_id: d.job_id, attempt: d.attempt, ...event }),
    });

  // Pretend the attempt started 9 minutes ago with its lease almost over; a heartbeat moves it.
  await db`update jobs set started_at = now() - interval '9 min', lease_expires_at = now() + interval '1 min'
            where id = ${job.id}`;
  const beat = await callback({ type: "heartbeat" });
  assert.equal(beat.status, 200);
  assert.equal((await beat.json()).job.status, "processing");
  const [{ lease_left }] = await db`select extract(epoch from lease_expires_at - now())::int as lease_left
                                      from jobs where id = ${job.id}`;
  assert.ok(
    lease_left >= 9 * 60,
    `the lease runs job_timeout_minutes from the heartbeat (${lease_left} s left)`,
  );

  // The lease passes with no recovery run: the attempt's callbacks are over.
  await db`update jobs set lease_expires_at = now() - interval '1 s' where id = ${job.id}`;
  const late = await callback({ type: "completed", result: { video_url: "https://cdn.example/late.mp4" } });
  assert.equal(late.status, 409);
  assert.equal((await late.json()).error.code, "conflict");
  const [row] = await db`select status, result from jobs where id = ${job.id}`;
  assert.deepEqual({ ...row }, { status: "processing", result: null }, "the late completion changed nothing");
});

test("expires_at: a job not started by then ends cancelled as expired; one already past is refused", async () => {
  await setup();
  const user = await mintUser();
  const past = await call("enqueue", {
    token: user.token,
    json: {
      job_type: "doubt",
      payload: { question: "q" },
      expires_at: new Date(Date.now() - 1000).toISOString(),
    },
  });
  assert.equal(past.status, 400);

  const expiresAt = new Date(Date.now() + 3_600_000).toISOString();
  const created = await call("enqueue", {
    token: user.token,
    json: { job_type: "doubt", payload: { question: "q" }, expires_at: expiresAt },
  });
  assert.equal(created.status, 201, JSON.stringify(created.body));
  const job = created.body.job as Job;
  assert.equal(Date.parse(job.expires_at!), Date.parse(expiresAt));
  assert.equal(job.wait_reason, "no_endpoint", "no render endpoint is registered");
  assert.equal(job.estimate_basis, "default");

  await db`update jobs set expires_at = now() - interval '1 s' where id = ${job.id}`; // its time has come
  await workerPass();
  const after = await call(`status?job_id=${job.id}`, { token: user.token });
  assert.equal(after.body.job.status, "cancelled");
  assert.match(after.body.job.error_message, /^expired/);
  assert.equal((await call("status")).body.stats.expired_today, 1);
});
