// The four Edge Functions through HTTP on the local stack: users call them with supabase-js
// (functions.invoke), the worker and the render protocol with plain fetch, and a fake render service
// (tests/support, a real server on port 0) receives dispatches. Waits are on events or polled state, never sleeps.
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { DispatchBody, type Job } from "../shared/mod.ts";
import {
  client,
  db,
  env,
  eventually,
  fnUrl,
  mintUser,
  resetData,
  setQueueCronActive,
  test,
} from "./harness.ts";
import { type FakeRenderService, fakeRenderService } from "./support/render_service.ts";

// Helpers ---------------------------------------------------------------------------------------------------

/** Every test starts from the migrations' data, with pg_cron's worker off: passes come from kicks or the test. */
async function setup(): Promise<void> {
  await resetData();
  await setQueueCronActive(false);
}

// deno-lint-ignore no-explicit-any -- JSON bodies are checked field by field
type Answer = { status: number; body: any; headers: Headers };

/** A user-facing call through supabase-js, as a client app makes it. */
async function invoke(
  name: string,
  token: string | undefined,
  options: { method?: "GET" | "POST"; body?: unknown } = {},
): Promise<Answer> {
  const { data, error, response } = await client(token).functions.invoke(name, options as never);
  if (!error) return { status: response!.status, body: data, headers: response!.headers };
  const res = (error as { context: Response }).context;
  return { status: res.status, body: await res.json(), headers: res.headers };
}

/** A raw HTTP call, for what supabase-js would not send (wrong verbs, odd bodies, secret keys). */
async function http(path: string, init: RequestInit = {}): Promise<Answer> {
  const res = await fetch(fnUrl(path), init);
  const text = await res.text();
  const body = res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
  return { status: res.status, body, headers: res.headers };
}
const asSecretKey = (key = env.SECRET_KEY) => ({ apikey: key });
const jsonPost = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

function assertError(answer: Answer, status: number, code: string) {
  assert.equal(answer.status, status, JSON.stringify(answer.body));
  assert.deepEqual(Object.keys(answer.body), ["error"]);
  assert.equal(answer.body.error.code, code);
  assert.equal(typeof answer.body.error.message, "string");
  assert.ok(answer.body.error.message.length > 0);
  assert.equal(answer.headers.get("access-control-allow-origin"), "*");
}

const JOB_FIELDS = [
  "completed_at",
  "created_at",
  "error_message",
  "estimate_basis",
  "estimated_wait_seconds",
  "expires_at",
  "id",
  "job_type",
  "max_retries",
  "next_attempt_at",
  "payload",
  "priority",
  "progress",
  "queue_position",
  "renderer",
  "result",
  "retry_count",
  "stage",
  "started_at",
  "status",
  "updated_at",
  "wait_reason",
];

const doubt = (question = "What is Article 370?") => ({ job_type: "doubt", payload: { question } });

async function enqueueAs(token: string, body: unknown = doubt()): Promise<Job> {
  const answer = await invoke("enqueue", token, { body });
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return answer.body.job;
}

/** The job as an admin sees it (secret key), through the status endpoint. */
async function jobState(id: string): Promise<Job> {
  const answer = await http(`status?job_id=${id}`, { headers: asSecretKey() });
  assert.equal(answer.status, 200);
  return answer.body.job;
}

const workerPass = (key = env.SECRET_KEY) =>
  http("video-queue-worker", { method: "POST", headers: asSecretKey(key) });

/** Registers a render endpoint the way an operator does (API.md). */
async function register(url: string, renderer = "orchestrator"): Promise<string> {
  const [{ id }] =
    await db`insert into render_endpoints (renderer, url) values (${renderer}, ${url}) returning id`;
  return id;
}

const dispatchOf = (service: FakeRenderService, jobId: string, attempt = 1) =>
  service.until(
    `dispatch of ${jobId}/${attempt}`,
    () => service.dispatches.find((d) => d.job_id === jobId && d.attempt === attempt),
  );

/** A render service's callback for the attempt `d` (its token unless another is given). */
async function callback(
  d: DispatchBody,
  event: Record<string, unknown>,
  token = d.callback.token,
): Promise<Answer> {
  const res = await fetch(
    d.callback.url,
    jsonPost({ job_id: d.job_id, attempt: d.attempt, ...event }, {
      authorization: `Bearer ${token}`,
    }),
  );
  return { status: res.status, body: await res.json(), headers: res.headers };
}

// Enqueue -----------------------------------------------------------------------------------------------------

test("enqueue: 201 with the contract's Job, 200 and the same job for a repeated idempotency_key", async () => {
  await setup();
  // A render endpoint, as a deployment has: without one a queued job has no estimate (null, no_endpoint).
  await using service = await fakeRenderService();
  await register(service.url);
  const user = await mintUser();
  const first = await invoke("enqueue", user.token, { body: { ...doubt(), idempotency_key: "k-1" } });
  assert.equal(first.status, 201);
  const job = first.body.job;
  assert.deepEqual(Object.keys(job).sort(), JOB_FIELDS);
  assert.equal(job.status, "queued");
  assert.equal(job.priority, "high");
  assert.equal(job.job_type, "doubt");
  assert.deepEqual(job.payload, doubt().payload);
  assert.equal(job.queue_position, 1);
  assert.equal(typeof job.estimated_wait_seconds, "number");
  assert.match(job.created_at, /[+-]\d\d:\d\d$|Z$/);

  const repeat = await invoke("enqueue", user.token, {
    body: { ...doubt("another text"), idempotency_key: "k-1" },
  });
  assert.equal(repeat.status, 200);
  assert.equal(repeat.body.job.id, job.id);
  const [{ n }] = await db`select count(*)::int as n from jobs`;
  assert.equal(n, 1);

  // Keys are per user, and each type gets its priority.
  const other = await mintUser();
  const topic = await enqueueAs(other.token, {
    job_type: "topic_short",
    payload: { topic: "Monsoon", duration_seconds: 60 },
    idempotency_key: "k-1",
  });
  assert.notEqual(topic.id, job.id);
  assert.equal(topic.priority, "medium");
  const daily = await enqueueAs(other.token, { job_type: "daily_ca", payload: { date: "2026-03-01" } });
  assert.equal(daily.priority, "low");
});

test("enqueue: only an admin may set priority; a secret key may enqueue", async () => {
  await setup();
  const user = await mintUser();
  assertError(
    await invoke("enqueue", user.token, { body: { ...doubt(), priority: "low" } }),
    403,
    "forbidden",
  );
  const admin = await mintUser({ admin: true });
  assert.equal((await enqueueAs(admin.token, { ...doubt(), priority: "low" })).priority, "low");
  const byKey = await http("enqueue", jsonPost(doubt(), asSecretKey()));
  assert.equal(byKey.status, 201);
});

test("enqueue: an unknown renderer is SQL's 400, naming the renderers of the catalog", async () => {
  await setup();
  const admin = await mintUser({ admin: true });
  const unknown = await invoke("enqueue", admin.token, { body: { ...doubt(), renderer: "blender" } });
  assertError(unknown, 400, "invalid_request");
  assert.match(unknown.body.error.message, /unknown renderer "blender".*manim, orchestrator, revideo/i);
  const malformed = await invoke("enqueue", admin.token, { body: { ...doubt(), renderer: "Blender 3" } });
  assertError(malformed, 400, "invalid_request");
  assert.deepEqual(malformed.body.error.details.map((d: { field: string }) => d.field), ["renderer"]);
  assert.equal((await enqueueAs(admin.token, { ...doubt(), renderer: "revideo" })).renderer, "revideo");
});

test("enqueue: 400 with details, 405, 413, 415, 429 with Retry-After, CORS preflight", async () => {
  await setup();
  const user = await mintUser();
  const auth = { authorization: `Bearer ${user.token}` };

  const invalid = await invoke("enqueue", user.token, {
    body: { job_type: "doubt", payload: { question: "", colour: "red" } },
  });
  assertError(invalid, 400, "invalid_request");
  assert.deepEqual(invalid.body.error.details.map((d: { field: string }) => d.field).sort(), [
    "payload.colour",
    "payload.question",
  ]);
  assertError(
    await invoke("enqueue", user.token, { body: { job_type: "essay", payload: {} } }),
    400,
    "invalid_request",
  );
  assertError(
    await http("enqueue", {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: "{",
    }),
    400,
    "invalid_request",
  );
  assertError(await http("enqueue", { headers: auth }), 405, "method_not_allowed");
  assertError(
    await http("enqueue", jsonPost({ ...doubt(), payload: { question: "x".repeat(70_000) } }, auth)),
    413,
    "payload_too_large",
  );
  assertError(
    await http("enqueue", {
      method: "POST",
      headers: { ...auth, "content-type": "text/plain" },
      body: JSON.stringify(doubt()),
    }),
    415,
    "unsupported_media_type",
  );

  await db`update job_queue_config set max_queued_per_user = 1 where id = (select id from job_queue_config limit 1)`;
  await enqueueAs(user.token);
  const limited = await invoke("enqueue", user.token, { body: doubt() });
  assertError(limited, 429, "rate_limited");
  assert.ok(Number(limited.headers.get("retry-after")) > 0);

  const preflight = await fetch(fnUrl("enqueue"), {
    method: "OPTIONS",
    headers: { origin: "https://app.example", "access-control-request-method": "POST" },
  });
  assert.equal(preflight.status, 200);
  assert.equal(await preflight.text(), "ok");
  assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
  assert.match(
    preflight.headers.get("access-control-allow-headers")!,
    /authorization, x-client-info, apikey, content-type/,
  );
});

test("auth: no credential, a forged, expired or alg:none token, the publishable key are 401 everywhere", async () => {
  await setup();
  const stranger = await generateKeyPair("ES256");
  const { kid } = JSON.parse(await Deno.readTextFile(env.SIGNING_KEY_PATH));
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: crypto.randomUUID(), role: "authenticated", exp: now + 600, iat: now };
  const forged = await new SignJWT(claims).setProtectedHeader({ alg: "ES256", kid }).sign(
    stranger.privateKey,
  );
  const b64 = (v: unknown) =>
    btoa(JSON.stringify(v)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  const algNone = `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`;
  const expired = (await mintUser({ expiresInSeconds: -30 })).token;
  assert.ok(await exportJWK(stranger.publicKey));

  for (const token of [undefined, forged, algNone, expired]) {
    assertError(await invoke("enqueue", token, { body: doubt() }), 401, "unauthorized");
    assertError(
      await invoke("cancel", token, { body: { job_id: crypto.randomUUID() } }),
      401,
      "unauthorized",
    );
    assertError(
      await invoke(`status?job_id=${crypto.randomUUID()}`, token, { method: "GET" }),
      401,
      "unauthorized",
    );
    assertError(await invoke("status/metrics", token, { method: "GET" }), 401, "unauthorized");
  }
  // The anon key is a valid JWT, but of role anon: not a user.
  assertError(
    await http("status", { headers: { authorization: `Bearer ${env.ANON_KEY}` } }),
    401,
    "unauthorized",
  );
});

// Status ------------------------------------------------------------------------------------------------------

test("status: the owner and admins see a job; other users and unknown ids get 404", async () => {
  await setup();
  const owner = await mintUser();
  const other = await mintUser();
  const admin = await mintUser({ admin: true });
  const job = await enqueueAs(owner.token);
  const second = await enqueueAs(owner.token);

  const seen = await invoke(`status?job_id=${second.id}`, owner.token, { method: "GET" });
  assert.equal(seen.status, 200);
  assert.deepEqual(Object.keys(seen.body.job).sort(), JOB_FIELDS);
  assert.equal(seen.body.job.queue_position, 2);
  assertError(await invoke(`status?job_id=${job.id}`, other.token, { method: "GET" }), 404, "not_found");
  assertError(
    await invoke(`status?job_id=${crypto.randomUUID()}`, owner.token, { method: "GET" }),
    404,
    "not_found",
  );
  assertError(await invoke("status?job_id=42", owner.token, { method: "GET" }), 400, "invalid_request");
  assert.equal((await invoke(`status?job_id=${job.id}`, admin.token, { method: "GET" })).body.job.id, job.id);
  assertError(await http("status", { method: "DELETE", headers: asSecretKey() }), 405, "method_not_allowed");
});

test("status: stats and job lists are for admins (403 otherwise), newest first, limit ≤ 200", async () => {
  await setup();
  const user = await mintUser();
  const admin = await mintUser({ admin: true });
  const older = await enqueueAs(user.token);
  const newer = await enqueueAs(user.token, { job_type: "daily_ca", payload: { date: "2026-03-01" } });

  assertError(await invoke("status", user.token, { method: "GET" }), 403, "forbidden");
  assertError(await invoke("status?view=jobs", user.token, { method: "GET" }), 403, "forbidden");
  for (
    const stats of [
      (await invoke("status", admin.token, { method: "GET" })).body.stats,
      (await http("status", { headers: asSecretKey() })).body.stats,
    ]
  ) {
    for (
      const key of [
        "queued",
        "processing",
        "completed_today",
        "failed_today",
        "cancelled_today",
        "by_priority",
        "by_renderer",
        "capacity",
        "avg_wait_seconds",
        "avg_processing_seconds",
        "throughput_last_hour",
        "oldest_queued_seconds",
        "generated_at",
      ]
    ) assert.ok(key in stats, key);
    assert.equal(stats.queued, 2);
    assert.equal(stats.by_priority.high.queued, 1);
  }

  const list = await invoke("status?view=jobs", admin.token, { method: "GET" });
  assert.deepEqual(list.body.jobs.map((j: { id: string }) => j.id), [newer.id, older.id]);
  const one = await invoke("status?view=jobs&status=queued&limit=1", admin.token, { method: "GET" });
  assert.deepEqual(one.body.jobs.map((j: { id: string }) => j.id), [newer.id]);
  const none = await invoke("status?view=jobs&status=completed", admin.token, { method: "GET" });
  assert.deepEqual(none.body.jobs, []);
  assertError(
    await invoke("status?view=jobs&limit=201", admin.token, { method: "GET" }),
    400,
    "invalid_request",
  );
});

test("status/metrics: Prometheus text for admins and secret keys, 403 for users", async () => {
  await setup();
  const user = await mintUser();
  await enqueueAs(user.token);
  assertError(await invoke("status/metrics", user.token, { method: "GET" }), 403, "forbidden");
  const admin = await mintUser({ admin: true });
  for (const headers of [{ authorization: `Bearer ${admin.token}` }, asSecretKey()]) {
    const res = await fetch(fnUrl("status/metrics"), { headers });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (
      const line of [
        'video_queue_queued_jobs{priority="high"} 1',
        'video_queue_processing_jobs{renderer="manim"} 0',
        "# TYPE video_queue_capacity_effective gauge",
        "# TYPE video_queue_jobs_completed_total counter",
        "# TYPE video_queue_jobs_failed_total counter",
        "# TYPE video_queue_jobs_retried_total counter",
        "# TYPE video_queue_wait_seconds summary",
        "# TYPE video_queue_processing_seconds summary",
      ]
    ) assert.ok(text.includes(line), line);
  }
});

// Cancel ------------------------------------------------------------------------------------------------------

test("cancel: a queued job is cancelled and never started; again is 409; another user's job is 404", async () => {
  await setup();
  const owner = await mintUser();
  const other = await mintUser();
  const job = await enqueueAs(owner.token);
  assertError(await invoke("cancel", other.token, { body: { job_id: job.id } }), 404, "not_found");
  const cancelled = await invoke("cancel", owner.token, {
    body: { job_id: job.id, reason: "changed my mind" },
  });
  assert.equal(cancelled.status, 200);
  assert.equal(cancelled.body.job.status, "cancelled");
  assert.equal(cancelled.body.job.queue_position, null);
  assertError(await invoke("cancel", owner.token, { body: { job_id: job.id } }), 409, "conflict");
  assertError(
    await invoke("cancel", owner.token, { body: { job_id: crypto.randomUUID() } }),
    404,
    "not_found",
  );
  assertError(
    await invoke("cancel", owner.token, { body: { job_id: job.id, extra: 1 } }),
    400,
    "invalid_request",
  );

  await using service = await fakeRenderService();
  await register(service.url);
  const pass = await workerPass();
  assert.equal(pass.status, 200);
  assert.equal(service.dispatches.length, 0);
  assert.equal((await jobState(job.id)).status, "cancelled");
});

// The worker --------------------------------------------------------------------------------------------------

test("worker: a pass needs a secret key (new or legacy) and answers its counts", async () => {
  await setup();
  const user = await mintUser();
  assertError(await http("video-queue-worker", { method: "POST" }), 401, "unauthorized");
  // A signed-in user is a valid caller asking for what they may not do (API.md): 403, not 401.
  assertError(
    await http("video-queue-worker", { method: "POST", headers: { authorization: `Bearer ${user.token}` } }),
    403,
    "forbidden",
  );
  assertError(
    await http("video-queue-worker", { method: "POST", headers: asSecretKey(env.PUBLISHABLE_KEY) }),
    401,
    "unauthorized",
  );
  assertError(await http("video-queue-worker", { headers: asSecretKey() }), 405, "method_not_allowed");

  // Jobs enqueued in SQL (no kick), then one pass by hand dispatches them.
  for (const q of ["one", "two"]) await db`select queue.enqueue_job('doubt', ${db.json({ question: q })})`;
  await using service = await fakeRenderService();
  await register(service.url);
  const pass = await workerPass();
  assert.equal(pass.status, 200);
  assert.deepEqual(Object.keys(pass.body).sort(), [
    "capacity",
    "claimed",
    "dispatched",
    "recovered",
    "released",
  ]);
  assert.equal(pass.body.dispatched, pass.body.claimed);
  assert.equal(typeof pass.body.capacity.effective, "number");
  await service.until("both dispatches", () => service.dispatches.length === 2);
  const legacy = await workerPass(env.SERVICE_ROLE_KEY);
  assert.equal(legacy.status, 200);
});

test("a job's whole life over HTTP: enqueue → kick → dispatch → progress → completed with result.video_url", async () => {
  await setup();
  await using service = await fakeRenderService();
  await register(service.url);
  const user = await mintUser();
  const job = await enqueueAs(user.token, { ...doubt("Explain the Preamble"), idempotency_key: "life" });
  const d = await dispatchOf(service, job.id);

  assert.deepEqual(Object.keys(d).sort(), Object.keys(DispatchBody.shape).sort()); // the protocol's fields
  assert.equal(d.job_type, "doubt");
  assert.deepEqual(d.payload, { question: "Explain the Preamble" });
  assert.equal(d.callback.url, fnUrl("video-queue-worker/events"));
  assert.ok(d.callback.token.length >= 32);
  assert.ok(Date.parse(d.deadline ?? "") > Date.now());

  const processing = (await invoke(`status?job_id=${job.id}`, user.token, { method: "GET" })).body.job;
  assert.equal(processing.status, "processing");
  assert.ok(processing.started_at);
  assert.equal(processing.queue_position, null);

  for (
    const [stage, progress] of [["generating_screenshot", 20], ["composing_video", 60], [
      "saving_file",
      80,
    ]] as const
  ) {
    const answer = await callback(d, { type: "progress", stage, progress });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.job.stage, stage);
    assert.equal(answer.body.job.progress, progress);
  }
  const result = {
    video_url: "https://cdn.example/v/1.mp4",
    file_size: 1234,
    duration_seconds: 5,
    resolution: "1080x1920",
  };
  const completed = await callback(d, { type: "completed", result });
  assert.equal(completed.status, 200);
  assert.equal(completed.body.job.status, "completed");
  assert.equal(completed.body.job.result.video_url, result.video_url);
  const again = await callback(d, { type: "completed", result });
  assert.equal(again.status, 200, "repeating a completion is harmless");
  assert.equal(again.body.job.completed_at, completed.body.job.completed_at);

  const final = (await invoke(`status?job_id=${job.id}`, user.token, { method: "GET" })).body.job;
  assert.equal(final.status, "completed");
  assert.equal(final.progress, 100);
  assert.deepEqual(final.result, { ...final.result, ...result });
  assert.ok(final.completed_at);
});

test("kick latency: a job enqueued while capacity is free is dispatched without any worker call", async () => {
  await setup();
  await using service = await fakeRenderService();
  await register(service.url);
  const user = await mintUser();
  await enqueueAs(user.token); // warm the path (first imports, pool connections)
  await service.until("the warm-up dispatch", () => service.dispatches.length === 1);

  const latencies: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    const job = await enqueueAs(user.token, doubt(`latency ${i}`));
    await dispatchOf(service, job.id);
    latencies.push(Math.round(performance.now() - start));
  }
  console.log(JSON.stringify({ event: "enqueue_to_dispatch_ms", latencies }));
  assert.ok(Math.max(...latencies) < 10_000);
});

test("render answers: 4xx fails the job at once, 5xx schedules a retry, 200 completes it", async () => {
  await setup();
  await using service = await fakeRenderService((d) => {
    const question = String(d.payload.question);
    if (question === "4xx") return new Response("unsupported payload", { status: 422 });
    if (question === "5xx") return new Response("overloaded", { status: 503 });
    return Response.json({ result: { video_url: `https://cdn.example/${d.job_id}.mp4` } });
  });
  await register(service.url);
  const user = await mintUser();
  const permanent = await enqueueAs(user.token, doubt("4xx"));
  const retryable = await enqueueAs(user.token, doubt("5xx"));
  const done = await enqueueAs(user.token, doubt("200"));

  const failed = await eventually("the 4xx job to fail", async () => {
    const job = await jobState(permanent.id);
    return job.status === "failed" && job;
  });
  assert.equal(failed.retry_count, 0);
  assert.match(failed.error_message ?? "", /422/);

  const retrying = await eventually("the 5xx job to be rescheduled", async () => {
    const job = await jobState(retryable.id);
    return job.status === "queued" && job.retry_count === 1 && job;
  });
  assert.ok(Date.parse(retrying.next_attempt_at ?? "") > Date.now());
  assert.match(retrying.error_message ?? "", /503/);

  const completed = await eventually("the 200 job to complete", async () => {
    const job = await jobState(done.id);
    return job.status === "completed" && job;
  });
  assert.equal(completed.result?.video_url, `https://cdn.example/${done.id}.mp4`);
  assert.equal(service.dispatches.length, 3);
});

test("callbacks: a wrong token is 401; a timed-out or superseded attempt gets 409 and changes nothing", async () => {
  await setup();
  await using service = await fakeRenderService();
  await register(service.url);
  const user = await mintUser();
  const job = await enqueueAs(user.token);
  const first = await dispatchOf(service, job.id, 1);
  assertError(
    await callback(first, { type: "progress", stage: "x", progress: 5 }, "not-the-token"),
    401,
    "unauthorized",
  );
  assertError(
    await http(
      "video-queue-worker/events",
      jsonPost({ job_id: job.id, attempt: 1, type: "progress", progress: 5 }),
    ),
    401,
    "unauthorized",
  );
  assertError(await callback(first, { type: "progress", progress: 500 }), 400, "invalid_request");
  assert.equal(
    (await callback(first, { type: "progress", stage: "composing_video", progress: 60 })).status,
    200,
  );

  // The lease runs out: the next pass recovers the attempt (retry with backoff).
  await db`update jobs set lease_expires_at = now() - interval '1 second' where id = ${job.id}`;
  await db`update job_attempts set lease_expires_at = now() - interval '1 second' where job_id = ${job.id}`;
  assert.equal((await workerPass()).status, 200);
  const recovered = await jobState(job.id);
  assert.equal(recovered.status, "queued");
  assert.equal(recovered.retry_count, 1);

  for (
    const event of [
      { type: "progress", stage: "saving_file", progress: 80 },
      { type: "completed", result: { video_url: "https://cdn.example/zombie.mp4" } },
      { type: "failed", error: "zombie", retryable: false },
    ]
  ) assertError(await callback(first, event), 409, "conflict");
  const unchanged = (
    { status, progress, stage, retry_count, result, error_message, updated_at }: Job,
  ) => ({ status, progress, stage, retry_count, result, error_message, updated_at });
  assert.deepEqual(unchanged(await jobState(job.id)), unchanged(recovered));

  // Its retry becomes due: attempt 2 is dispatched, and attempt 1 still cannot write.
  await db`update jobs set next_attempt_at = now() where id = ${job.id}`;
  assert.equal((await workerPass()).status, 200);
  const second = await dispatchOf(service, job.id, 2);
  assert.notEqual(second.callback.token, first.callback.token);
  assertError(
    await callback(first, { type: "completed", result: { video_url: "https://cdn.example/zombie.mp4" } }),
    409,
    "conflict",
  );
  const completed = await callback(second, {
    type: "completed",
    result: { video_url: "https://cdn.example/real.mp4" },
  });
  assert.equal(completed.status, 200);
  assert.equal(completed.body.job.result.video_url, "https://cdn.example/real.mp4");
});

test("cancel while processing: the render service is told, and its late callbacks get 409", async () => {
  await setup();
  await using service = await fakeRenderService();
  await register(service.url);
  const user = await mintUser();
  const job = await enqueueAs(user.token);
  const d = await dispatchOf(service, job.id);
  const cancelled = await invoke("cancel", user.token, { body: { job_id: job.id } });
  assert.equal(cancelled.status, 200);
  assert.equal(cancelled.body.job.status, "cancelled");
  const notice = await service.until(
    "the cancel notice",
    () => service.cancels.find((c) => c.job_id === job.id),
  );
  assert.deepEqual(notice, { job_id: job.id, attempt: d.attempt });

  assertError(
    await callback(d, { type: "progress", stage: "composing_video", progress: 60 }),
    409,
    "conflict",
  );
  assertError(
    await callback(d, { type: "completed", result: { video_url: "https://cdn.example/late.mp4" } }),
    409,
    "conflict",
  );
  const after = await jobState(job.id);
  assert.equal(after.status, "cancelled");
  assert.equal(after.result, null);
  assertError(await invoke("cancel", user.token, { body: { job_id: job.id } }), 409, "conflict");
});

// Render endpoints ---------------------------------------------------------------------------------------------

test("two render endpoints of one renderer receive a balanced share", async () => {
  await setup();
  await using a = await fakeRenderService();
  await using b = await fakeRenderService();
  await register(a.url);
  await register(b.url);
  const user = await mintUser();
  for (let i = 0; i < 6; i++) await enqueueAs(user.token, doubt(`balanced ${i}`));
  await eventually(
    "six dispatches",
    () => Promise.resolve(a.dispatches.length + b.dispatches.length === 6),
  );
  assert.deepEqual([a.dispatches.length, b.dispatches.length], [3, 3]);
});

test("a dead render endpoint (closed port) is taken out of rotation and its jobs go to a live one", async () => {
  await setup();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const deadUrl = `http://127.0.0.1:${(closed.addr as Deno.NetAddr).port}/render`;
  closed.close();
  await using live = await fakeRenderService();
  const deadId = await register(deadUrl);
  await register(live.url);
  const user = await mintUser();
  const jobs = [];
  for (let i = 0; i < 4; i++) jobs.push(await enqueueAs(user.token, doubt(`dead ${i}`)));
  await live.until("all four jobs at the live endpoint", () => live.dispatches.length === 4);
  const [endpoint] =
    await db`select unhealthy_until > now() as cooling_down from render_endpoints where id = ${deadId}`;
  assert.equal(endpoint.cooling_down, true);
  for (const job of jobs) assert.equal((await jobState(job.id)).status, "processing");
});

test("a busy render service (429) costs no retry: the job is released and goes to a free endpoint", async () => {
  await setup();
  await using busy = await fakeRenderService(() =>
    new Response("busy", { status: 429, headers: { "retry-after": "120" } })
  );
  await using free = await fakeRenderService();
  const busyId = await register(busy.url);
  const user = await mintUser();
  const job = await enqueueAs(user.token, doubt("busy farm"));
  await busy.until("the dispatch to the busy service", () => busy.dispatches.length === 1);
  const released = await eventually("the job back in the queue", async () => {
    const state = await jobState(job.id);
    return state.status === "queued" && state;
  });
  assert.equal(released.retry_count, 0, "a busy answer is not a failed attempt");
  assert.equal(released.error_message, null);
  const [endpoint] = await db`select extract(epoch from unhealthy_until - now()) as cooldown
                                from render_endpoints where id = ${busyId}`;
  assert.ok(
    endpoint.cooldown > 100 && endpoint.cooldown <= 120,
    `skipped for its Retry-After (${endpoint.cooldown} s)`,
  );

  const pass = await workerPass();
  assert.equal(pass.body.claimed, 0, "no claim while its only endpoint is busy");
  await register(free.url);
  await workerPass();
  const dispatch = await free.until("the dispatch to the free service", () => free.dispatches[0]);
  assert.equal(dispatch.job_id, job.id);
  assert.equal(busy.dispatches.length, 1, "the busy service was not asked again during its cool-down");
});

test("status/retry: an admin puts a failed job back in the queue; others get 403, 404 or 409", async () => {
  await setup();
  let refuse = true;
  await using service = await fakeRenderService(() =>
    refuse ? new Response("unsupported payload", { status: 422 }) : new Response(null, { status: 202 })
  );
  await register(service.url);
  const user = await mintUser();
  const admin = await mintUser({ admin: true });
  const job = await enqueueAs(user.token, doubt("retry me"));
  await eventually("the job to fail", async () => (await jobState(job.id)).status === "failed");

  assertError(await invoke("status/retry", user.token, { body: { job_id: job.id } }), 403, "forbidden");
  assertError(
    await invoke("status/retry", admin.token, { body: { job_id: crypto.randomUUID() } }),
    404,
    "not_found",
  );
  assertError(
    await invoke("status/retry", admin.token, { body: { job_id: "nope" } }),
    400,
    "invalid_request",
  );

  refuse = false;
  const retried = await invoke("status/retry", admin.token, { body: { job_id: job.id } });
  assert.equal(retried.status, 200);
  assert.deepEqual([retried.body.job.status, retried.body.job.retry_count], ["queued", 0]);
  const again = await service.until(
    "the second dispatch",
    () => service.dispatches.find((d) => d.attempt === 2),
  );
  assert.equal(again.job_id, job.id);
  assertError(await invoke("status/retry", admin.token, { body: { job_id: job.id } }), 409, "conflict");
});
