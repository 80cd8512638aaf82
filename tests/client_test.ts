// The typed client (client/) against the local stack: calls, typed errors from real answers, and
// waitForCompletion following a job to its end by Realtime or by polling. Plus the client's pure parts
// (error mapping, ordering, backoff) without a stack.
import assert from "node:assert/strict";
import { createClient } from "@supabase/supabase-js";
import {
  ConflictError,
  createQueueClient,
  ForbiddenError,
  InternalError,
  InvalidRequestError,
  type Job,
  MethodNotAllowedError,
  NetworkError,
  NotFoundError,
  PayloadTooLargeError,
  type QueueClientOptions,
  QueueError,
  RateLimitedError,
  UnauthorizedError,
  UnavailableError,
  UnsupportedMediaTypeError,
  type UpdateSource,
} from "../client/mod.ts";
import { errorFromResponse } from "../client/errors.ts";
import { DEFAULT_FOLLOW, type FollowIo, followJob, isNewer, nextPollDelay } from "../client/follow.ts";
import { startRenderer } from "../renderer/server.ts";
import { errorResponse, HttpError } from "../shared/errors.ts";
import type { DispatchBody, RenderReport } from "../shared/render_protocol.ts";
import { ERROR_CODES } from "../shared/schemas.ts";
import { db, env, eventually, fnUrl, mintUser, resetData, setQueueCronActive, test } from "./harness.ts";
import { fakeRenderService } from "./support/render_service.ts";

// Helpers ---------------------------------------------------------------------------------------------------

const NO_SESSION = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };

/** supabase-js as an app signed in as `token` has it (functions and Realtime both use the token). */
function supabaseAs(token: string, options: { fetch?: typeof fetch; transport?: typeof WebSocket } = {}) {
  return createClient(env.SUPABASE_URL, env.PUBLISHABLE_KEY, {
    accessToken: () => Promise.resolve(token),
    auth: NO_SESSION,
    global: options.fetch ? { fetch: options.fetch } : {},
    realtime: options.transport ? { transport: options.transport } : {},
  });
}

const queueAs = (token: string, options?: QueueClientOptions) =>
  createQueueClient(supabaseAs(token), options);
/** An operator's client: the secret key (an admin for the functions). */
const operator = () =>
  createQueueClient(createClient(env.SUPABASE_URL, env.SECRET_KEY, { auth: NO_SESSION }));

const doubt = (question = "What is Article 370?") => ({ job_type: "doubt" as const, payload: { question } });

async function setup() {
  await resetData();
  await setQueueCronActive(false);
}

async function setConfig(column: string, value: number) {
  await db.unsafe(
    `update job_queue_config set ${column} = $1 where id = (select id from job_queue_config limit 1)`,
    [value],
  );
}

/** Sends a render service's callback for an attempt, as the service would. */
async function report(dispatch: DispatchBody, event: RenderReport) {
  const res = await fetch(dispatch.callback.url, {
    method: "POST",
    headers: { authorization: `Bearer ${dispatch.callback.token}`, "content-type": "application/json" },
    body: JSON.stringify({ job_id: dispatch.job_id, attempt: dispatch.attempt, ...event }),
  });
  assert.equal(res.status, 200, await res.text());
}

const workerPass = () =>
  fetch(fnUrl("video-queue-worker"), { method: "POST", headers: { apikey: env.SECRET_KEY } }).then((r) =>
    r.text()
  );

/** Records what a wait reported, and resolves `until` once a recorded update matches. */
function recorder() {
  const updates: { job: Job; source: UpdateSource }[] = [];
  const stop = new AbortController();
  return {
    updates,
    /** For the wait: a test that fails leaves no wait running. */
    signal: stop.signal,
    [Symbol.dispose]: () => stop.abort(),
    onProgress: (job: Job, { source }: { source: UpdateSource }) => void updates.push({ job, source }),
    seen: (what: string, match: (job: Job) => boolean) =>
      eventually(what, () => Promise.resolve(updates.some((u) => match(u.job))), 15_000),
  };
}

/** A port nothing listens on: connecting to it is refused. */
function refusedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** A WebSocket that always dials a refusing port: Realtime is unavailable to the client that uses it. */
function refusingTransport() {
  const url = `ws://127.0.0.1:${refusedPort()}/realtime/v1/websocket`;
  return class RefusedWebSocket extends WebSocket {
    static dialled = 0;
    constructor(_url: string | URL, protocols?: ConstructorParameters<typeof WebSocket>[1]) {
      super(url, protocols);
      RefusedWebSocket.dialled += 1;
    }
  };
}

// Calls -----------------------------------------------------------------------------------------------------

test("client: enqueue (created, then an idempotent repeat), status, cancel", async () => {
  await setup();
  const user = await mintUser();
  const queue = queueAs(user.token);

  const first = await queue.enqueue({ ...doubt(), idempotency_key: "client-1" });
  assert.equal(first.created, true);
  assert.equal(first.job.status, "queued");
  assert.equal(first.job.priority, "high");
  assert.equal(first.job.queue_position, 1);

  const repeat = await queue.enqueue({ ...doubt("Another question?"), idempotency_key: "client-1" });
  assert.equal(repeat.created, false);
  assert.equal(repeat.job.id, first.job.id);

  const status = await queue.status(first.job.id);
  assert.deepEqual([status.id, status.status, status.payload], [first.job.id, "queued", doubt().payload]);

  const cancelled = await queue.cancel(first.job.id, "no longer needed");
  assert.equal(cancelled.status, "cancelled");
  assert.equal((await queue.status(first.job.id)).status, "cancelled");
});

test("client: admin calls as an admin user and with a secret key", async () => {
  await setup();
  const admin = await mintUser({ admin: true });
  const user = await mintUser();
  await using service = await fakeRenderService(() => new Response("bad payload", { status: 422 }));
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;

  const { job } = await queueAs(user.token).enqueue(doubt());
  await workerPass();
  const failed = await eventually("the job failed", async () => {
    const j = await queueAs(user.token).status(job.id);
    return j.status === "failed" && j;
  });
  assert.match(failed.error_message ?? "", /422|bad payload/);

  for (const queue of [queueAs(admin.token), operator()]) {
    const stats = await queue.admin.stats();
    assert.equal(stats.failed_today, 1);
    assert.deepEqual((await queue.admin.listJobs({ status: "failed", limit: 5 })).map((j) => j.id), [job.id]);
    assert.deepEqual(await queue.admin.listJobs({ status: "completed" }), []);
    assert.match(await queue.admin.metrics(), /^# HELP video_queue_/m);

    const paused = await queue.admin.pause("revideo");
    assert.equal(paused.by_renderer.revideo.paused, true);
    assert.equal(paused.paused, false);
    assert.equal((await queue.admin.pause()).paused, true);
    const resumed = await queue.admin.resume();
    assert.equal(resumed.paused, false);
    assert.equal((await queue.admin.resume("revideo")).by_renderer.revideo.paused, false);
  }

  await db`delete from render_endpoints`;
  const retried = await operator().admin.retry(job.id);
  assert.deepEqual([retried.status, retried.retry_count], ["queued", 0]);
  await assert.rejects(operator().admin.retry(job.id), ConflictError);
});

// Errors ----------------------------------------------------------------------------------------------------

test("client errors from real answers: 401, 403, 404, 409, 400 with details, 429 with retryAfterSeconds", async () => {
  await setup();
  const user = await mintUser();
  const queue = queueAs(user.token);

  const expired = await mintUser({ expiresInSeconds: -60 });
  const e401 = await rejection(queueAs(expired.token).status(crypto.randomUUID()), UnauthorizedError);
  assert.deepEqual([e401.code, e401.status], ["unauthorized", 401]);

  const e403 = await rejection(queue.admin.stats(), ForbiddenError);
  assert.deepEqual([e403.code, e403.status], ["forbidden", 403]);
  await rejection(queue.enqueue({ ...doubt(), priority: "low" }), ForbiddenError);

  const e404 = await rejection(queue.status(crypto.randomUUID()), NotFoundError);
  assert.deepEqual([e404.code, e404.status], ["not_found", 404]);
  const { job: other } = await queueAs((await mintUser()).token).enqueue(doubt());
  await rejection(queue.cancel(other.id), NotFoundError); // not the caller's: no existence leak

  const { job } = await queue.enqueue(doubt());
  await queue.cancel(job.id);
  const e409 = await rejection(queue.cancel(job.id), ConflictError);
  assert.deepEqual([e409.code, e409.status], ["conflict", 409]);
  assert.match(e409.message, /cancel/);

  const e400 = await rejection(
    queue.enqueue({ job_type: "doubt", payload: { question: "", extra: 1 } } as never),
    InvalidRequestError,
  );
  assert.deepEqual([e400.code, e400.status], ["invalid_request", 400]);
  assert.deepEqual(e400.issues.map((i) => i.field).sort(), ["payload.extra", "payload.question"]);
  assert.deepEqual(e400.details, e400.issues);

  await setConfig("max_queued_per_user", 1);
  await queue.enqueue(doubt());
  const e429 = await rejection(queue.enqueue(doubt()), RateLimitedError);
  assert.deepEqual([e429.code, e429.status], ["rate_limited", 429]);
  assert.ok(e429.retryAfterSeconds > 0, `retryAfterSeconds ${e429.retryAfterSeconds}`);
  assert.deepEqual(e429.details, { retry_after_seconds: e429.retryAfterSeconds });

  for (const err of [e401, e403, e404, e409, e400, e429]) {
    assert.ok(err instanceof QueueError);
    assert.ok(err.message.length > 0);
    assert.equal(err.name, err.constructor.name);
  }
});

test("client errors: every contract status maps to its class, from the functions' own error bodies", async () => {
  const classes = {
    400: InvalidRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    405: MethodNotAllowedError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    429: RateLimitedError,
    500: InternalError,
    503: UnavailableError,
  };
  assert.deepEqual(Object.keys(classes), Object.keys(ERROR_CODES));
  for (const [status, Class] of Object.entries(classes)) {
    const headers = { "Retry-After": "7" };
    const err = await errorFromResponse(
      errorResponse(new HttpError(Number(status), "Do this.", undefined, headers)),
    );
    assert.ok(err instanceof Class, `${status} → ${err.name}`);
    assert.deepEqual([err.status, err.code, err.message], [
      Number(status),
      ERROR_CODES[status as never],
      "Do this.",
    ]);
    if (err instanceof RateLimitedError || err instanceof UnavailableError) {
      assert.equal(err.retryAfterSeconds, 7);
    }
  }
  // not the contract's body (a proxy's page): by status, else internal
  const proxy = await errorFromResponse(new Response("<html>bad gateway</html>", { status: 502 }));
  assert.ok(proxy instanceof InternalError);
  assert.equal(proxy.status, 502);
  assert.ok(await errorFromResponse(new Response("", { status: 503 })) instanceof UnavailableError);

  // no answer at all
  const unreachable = createQueueClient(
    createClient(`http://127.0.0.1:${refusedPort()}`, env.PUBLISHABLE_KEY, { auth: NO_SESSION }),
  );
  const net = await rejection(unreachable.status(crypto.randomUUID()), NetworkError);
  assert.deepEqual([net.code, net.status], ["network_error", 0]);
});

// Following a job -------------------------------------------------------------------------------------------

test("waitForCompletion: a job followed to its finished video, every progress step in order", async () => {
  await setup();
  const user = await mintUser();
  await using service = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  const queue = queueAs(user.token, { pollInitialMs: 100, pollMaxMs: 400 });

  const { job } = await queue.enqueue(doubt());
  using seen = recorder();
  const done = queue.waitForCompletion(job.id, seen);
  await workerPass();
  const dispatch = await service.until(
    "the dispatch",
    () => service.dispatches.find((d) => d.job_id === job.id),
  );
  const steps = [["generating_screenshot", 20], ["composing_video", 60], ["saving_file", 80]] as const;
  for (const [stage, progress] of steps) {
    await report(dispatch, { type: "progress", stage, progress });
    await seen.seen(`${stage} reported`, (j) => j.stage === stage);
  }
  const videoUrl = "https://cdn.example/videos/1.mp4";
  await report(dispatch, { type: "completed", result: { video_url: videoUrl, file_size: 1234 } });

  const finished = await done;
  assert.equal(finished.status, "completed");
  if (finished.status !== "completed") throw new Error("unreachable");
  assert.equal(finished.result.video_url, videoUrl);
  const processing = seen.updates.filter((u) => u.job.status === "processing" && u.job.stage);
  assert.deepEqual(processing.map((u) => [u.job.stage, u.job.progress]), steps.map(([s, p]) => [s, p]));
  assert.equal(seen.updates.at(-1)!.job.status, "completed");
  assertInOrder(seen.updates.map((u) => u.job));
});

test("waitForCompletion: a real render by the reference renderer, progress in order to the MP4", async () => {
  await setup();
  const storageDir = await Deno.makeTempDir({ prefix: "client-videos-" });
  const renderer = await startRenderer({
    name: "client",
    storageDir,
    clipSeconds: 1,
    cleanupIntervalMs: 0,
    log: () => {},
  });
  try {
    await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${renderer.endpointUrl})`;
    const queue = queueAs((await mintUser()).token, { pollInitialMs: 50, pollMaxMs: 200 });
    const { job } = await queue.enqueue(doubt("Why is the sky blue?"));
    using seen = recorder();
    const finished = await queue.waitForCompletion(job.id, seen);
    assert.equal(finished.status, "completed", finished.error_message ?? "");
    if (finished.status !== "completed") throw new Error("unreachable");
    assert.match(finished.result.video_url, /\.mp4$/);
    const video = await fetch(finished.result.video_url);
    assert.equal(video.status, 200);
    assert.ok((await video.arrayBuffer()).byteLength > 1000);
    assertInOrder(seen.updates.map((u) => u.job));
  } finally {
    await renderer.close();
    await Deno.remove(storageDir, { recursive: true });
  }
});

test("waitForCompletion: aborting rejects with an AbortError and leaves no channel, timer or read behind", async () => {
  await setup();
  const user = await mintUser();
  let reads = 0;
  const counting: typeof fetch = (input, init) => {
    if (String(input instanceof Request ? input.url : input).includes("/status?")) reads += 1;
    return fetch(input, init);
  };
  const supabase = supabaseAs(user.token, { fetch: counting });
  const queue = createQueueClient(supabase, { pollInitialMs: 20, pollMaxMs: 20 });
  const { job } = await queue.enqueue(doubt()); // no render endpoint: it stays queued

  const controller = new AbortController();
  const waiting = queue.waitForCompletion(job.id, { signal: controller.signal });
  await eventually("a few status reads", () => Promise.resolve(reads >= 3));
  controller.abort();
  await assert.rejects(waiting, (err: Error) => err.name === "AbortError");
  assert.deepEqual(supabase.getChannels(), []);
  const after = reads;
  // Nothing to wait for here but time: a loop still running would have read again within five intervals.
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.equal(reads, after, "no status read after the abort");

  const already = AbortSignal.abort();
  await assert.rejects(
    queue.waitForCompletion(job.id, { signal: already }),
    (err: Error) => err.name === "AbortError",
  );
});

test("waitForCompletion: with Realtime refused, it falls back to polling and still sees every step", async () => {
  await setup();
  const user = await mintUser();
  await using service = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  const Refused = refusingTransport();
  const supabase = supabaseAs(user.token, { transport: Refused });
  const queue = createQueueClient(supabase, { pollInitialMs: 50, pollMaxMs: 200 });
  const states: string[] = [];
  const stop = queue.subscribe(crypto.randomUUID(), () => {}, (state) => states.push(state));

  const { job } = await queue.enqueue(doubt());
  using seen = recorder();
  const done = queue.waitForCompletion(job.id, seen);
  await eventually("the refused channel", () => Promise.resolve(states.includes("CHANNEL_ERROR")));
  await workerPass();
  const dispatch = await service.until(
    "the dispatch",
    () => service.dispatches.find((d) => d.job_id === job.id),
  );
  await report(dispatch, { type: "progress", stage: "composing_video", progress: 60 });
  await seen.seen("progress 60", (j) => j.progress === 60);
  await report(dispatch, { type: "completed", result: { video_url: "https://cdn.example/v.mp4" } });

  assert.equal((await done).status, "completed");
  stop();
  assert.ok(Refused.dialled > 0, "Realtime was tried");
  assert.deepEqual(new Set(seen.updates.map((u) => u.source)), new Set(["status"]));
  assert.deepEqual([...new Set(seen.updates.map((u) => u.job.status))], [
    "queued",
    "processing",
    "completed",
  ]);
  assertInOrder(seen.updates.map((u) => u.job));
});

// The client's pure parts ----------------------------------------------------------------------------------

const JOB: Job = {
  id: "00000000-0000-4000-8000-000000000001",
  job_type: "doubt",
  priority: "high",
  status: "processing",
  renderer: "manim",
  payload: { question: "?" },
  queue_position: null,
  estimated_wait_seconds: null,
  wait_reason: null,
  estimate_basis: null,
  expires_at: null,
  progress: 0,
  stage: null,
  retry_count: 0,
  max_retries: 3,
  next_attempt_at: null,
  error_message: null,
  result: null,
  created_at: "2026-01-01T10:00:00.000000+00:00",
  started_at: "2026-01-01T10:00:01.000000+00:00",
  completed_at: null,
  updated_at: "2026-01-01T10:00:01.000000+00:00",
};
const at = (micros: number, fields: Partial<Job> = {}): Job => ({
  ...JOB,
  updated_at: `2026-01-01T10:00:02.${String(micros).padStart(6, "0")}+00:00`,
  ...fields,
});

Deno.test("ordering: later updated_at (to the microsecond) wins; same time is news only if the state differs", () => {
  assert.equal(isNewer(at(2), at(1)), true); // one microsecond apart: Date alone would call them equal
  assert.equal(isNewer(at(1), at(2)), false);
  assert.equal(isNewer(at(1), at(1)), false);
  assert.equal(isNewer(at(1, { queue_position: 2 }), at(1, { queue_position: 3 })), true);
  assert.equal(isNewer({ ...at(1), updated_at: "2026-01-01T11:00:02.000001+01:00" }, at(1)), false);
});

Deno.test("a wait drops stale and repeated broadcasts, and resolves on the final state", async () => {
  let push: (job: Job) => void = () => {};
  const io: FollowIo = {
    readStatus: () => Promise.resolve(at(10, { progress: 10 })),
    listen: (_id, onJob, onState) => {
      push = onJob;
      queueMicrotask(() => onState("SUBSCRIBED"));
      return () => {};
    },
  };
  const seen: [number, UpdateSource][] = [];
  const done = followJob(io, JOB.id, { ...DEFAULT_FOLLOW, realtimeCheckMs: Infinity }, {
    onProgress: (j, { source }) => seen.push([j.progress, source]),
  });
  await eventually("the first read", () => Promise.resolve(seen.length > 0));
  push(at(30, { progress: 60 }));
  push(at(20, { progress: 20 })); // older: dropped
  push(at(30, { progress: 60 })); // repeat: dropped
  push({ ...at(40, { progress: 99 }), id: "00000000-0000-4000-8000-000000000002" }); // another job: dropped
  push(at(50, { status: "completed", progress: 100, result: { video_url: "v.mp4" } }));
  const finished = await done;
  assert.equal(finished.status, "completed");
  assert.deepEqual(seen, [[10, "status"], [60, "realtime"], [100, "realtime"]]);
});

Deno.test("a wait outlasts transient errors and stops at the first one waiting cannot fix", async () => {
  const answers: (Job | Error)[] = [
    new UnavailableError({ status: 503, message: "down", retryAfterSeconds: 0 }),
    new NetworkError(new Error("refused")),
    at(1, { status: "failed", error_message: "render failed" }),
  ];
  const io = (next: () => Job | Error): FollowIo => ({
    readStatus: () => {
      const a = next();
      return a instanceof Error ? Promise.reject(a) : Promise.resolve(a);
    },
    listen: () => () => {},
  });
  const fast = { ...DEFAULT_FOLLOW, realtime: false, pollInitialMs: 1, pollMaxMs: 4 };
  const failed = await followJob(io(() => answers.shift()!), JOB.id, fast);
  assert.deepEqual([failed.status, failed.error_message], ["failed", "render failed"]);

  const gone = new NotFoundError({ status: 404, message: "no such job" });
  await assert.rejects(followJob(io(() => gone), JOB.id, fast), (err) => err === gone);
});

Deno.test("polling backs off by doubling to the cap, and starts over when there was news", () => {
  const o = { pollInitialMs: 1_000, pollMaxMs: 15_000 };
  const delays: number[] = [];
  let delay = o.pollInitialMs;
  for (let i = 0; i < 6; i++) delays.push(delay = nextPollDelay(delay, false, o));
  assert.deepEqual(delays, [2_000, 4_000, 8_000, 15_000, 15_000, 15_000]);
  assert.equal(nextPollDelay(15_000, true, o), 1_000);
});

// Assertions ------------------------------------------------------------------------------------------------

async function rejection<E extends QueueError>(
  promise: Promise<unknown>,
  Class: abstract new (...args: never[]) => E,
): Promise<E> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof Class, `expected ${Class.name}, got ${err}`);
    return err;
  }
  throw new Error(`expected ${Class.name}, but the call succeeded`);
}

const RANK = { queued: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };

/** Updates as a wait reports them: time never goes back, status never goes back, progress only grows. */
function assertInOrder(jobs: Job[]) {
  assert.ok(jobs.length > 0);
  for (const [i, job] of jobs.entries()) {
    if (i === 0) continue;
    const before = jobs[i - 1];
    assert.ok(job.updated_at >= before.updated_at, `updated_at went back at ${i}`);
    assert.ok(RANK[job.status] >= RANK[before.status], `${before.status} → ${job.status}`);
    if (job.status === before.status) assert.ok(job.progress >= before.progress, "progress went back");
  }
}
