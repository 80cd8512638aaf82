// Degradation: what the stack does when the parts it depends on fail, and that it mends by itself.
//   - the database stopped: every endpoint answers 503 `unavailable` with Retry-After, quickly, and works
//     again once Postgres is back;
//   - render endpoints that refuse connections or never answer: a worker pass still returns within the
//     dispatch time-out, and each job is released or retried as documented;
//   - the pg_net sender outlives a database restart;
//   - the functions process outlives repeated fast Postgres restarts with requests in flight (postgres.js
//     3.4.9 used to crash it: see shared/db.ts).
// Every test leaves Postgres running and the data as the migrations left it.
import assert from "node:assert/strict";
import { DISPATCH_TIMEOUT_MS } from "../shared/mod.ts";
import {
  platformPid,
  restartPostgres,
  startPostgres,
  stopPostgres,
  waitForPostgres,
} from "../scripts/stack/stack.ts";
import { db, env, eventually, fnUrl, mintUser, resetData, setQueueCronActive, test } from "./harness.ts";

const dir = env.STACK_DIR;
/** An answer to a request with the database down must come well inside this (connect_timeout is 5 s). */
const UNAVAILABLE_WITHIN_MS = 10_000;

type Answer = { status: number; body: unknown; headers: Headers; ms: number };

async function call(path: string, init: RequestInit = {}): Promise<Answer> {
  const started = performance.now();
  const res = await fetch(fnUrl(path), init);
  const text = await res.text();
  const body = res.headers.get("content-type")?.includes("json") ? JSON.parse(text) : text;
  return { status: res.status, body, headers: res.headers, ms: performance.now() - started };
}

const asKey = () => ({ apikey: env.SECRET_KEY });
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const post = (body: unknown, headers: Record<string, string>): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", ...headers },
  body: JSON.stringify(body),
});

/** Postgres is running whatever a test did to it (pg_ctl start fails if it already runs). */
async function ensurePostgres(): Promise<void> {
  await startPostgres(dir).catch(() => {});
  await waitForPostgres(dir);
}

/** A job in the queue without the kick an enqueue sends: only the passes a test runs touch it. */
async function queuedJob(renderer: string, question: string, userId: string | null = null): Promise<string> {
  const [{ id }] = await db`insert into jobs (job_type, status, payload, renderer, user_id)
    values ('doubt', 'queued', ${db.json({ question })}, ${renderer}, ${userId}) returning id`;
  return id;
}

/** Lines the platform process (gateway + pg_net sender) logged after byte `from` of its log. */
function platformLogSince(from: number): Record<string, unknown>[] {
  const text = new TextDecoder().decode(Deno.readFileSync(`${dir}/platform.log`).subarray(from));
  return text.split("\n").flatMap((line) => {
    try {
      return [JSON.parse(line)];
    } catch {
      return [];
    }
  });
}
const platformLogSize = () => Deno.statSync(`${dir}/platform.log`).size;

test("database down: every endpoint answers 503 unavailable with Retry-After, then recovers by itself", async () => {
  await resetData();
  await setQueueCronActive(false);
  const user = await mintUser();
  const admin = await mintUser({ admin: true });
  const jobId = await queuedJob("manim", "What is a quorum?", user.userId);
  const requests: [string, string, RequestInit][] = [
    [
      "POST /enqueue",
      "enqueue",
      post({ job_type: "doubt", payload: { question: "Why?" } }, bearer(user.token)),
    ],
    ["POST /cancel", "cancel", post({ job_id: jobId }, bearer(user.token))],
    ["GET /status?job_id", `status?job_id=${jobId}`, { headers: bearer(user.token) }],
    ["GET /status (admin)", "status", { headers: bearer(admin.token) }],
    ["GET /status/metrics", "status/metrics", { headers: asKey() }],
    ["POST /status/retry", "status/retry", post({ job_id: jobId }, bearer(admin.token))],
    ["POST /video-queue-worker", "video-queue-worker", post({}, asKey())],
    [
      "POST /video-queue-worker/events",
      "video-queue-worker/events",
      post({ job_id: jobId, attempt: 1, type: "progress", stage: "composing_video", progress: 40 }, {
        authorization: "Bearer some-callback-token",
      }),
    ],
  ];

  await stopPostgres(dir);
  try {
    for (const [what, path, init] of requests) {
      const answer = await call(path, init);
      assert.equal(answer.status, 503, `${what}: ${JSON.stringify(answer.body)}`);
      const { error } = answer.body as { error: Record<string, unknown> };
      assert.deepEqual(Object.keys(answer.body as object), ["error"], what);
      assert.equal(error.code, "unavailable", what);
      assert.ok(typeof error.message === "string" && error.message.length > 0, what);
      assert.doesNotMatch(JSON.stringify(answer.body), /127\.0\.0\.1|ECONN|postgres/i, what);
      assert.ok(Number(answer.headers.get("retry-after")) > 0, `${what}: Retry-After`);
      assert.equal(answer.headers.get("access-control-allow-origin"), "*", what);
      assert.ok(answer.ms < UNAVAILABLE_WITHIN_MS, `${what} answered in ${Math.round(answer.ms)} ms`);
    }
  } finally {
    await ensurePostgres();
  }

  // Back without a restart of anything else: the same calls succeed (the first ones may still meet the
  // database starting up).
  const recovered = async (path: string, init: RequestInit, status: number) =>
    await eventually(`${path} answering ${status} again`, async () => {
      const answer = await call(path, init);
      return answer.status === status && answer;
    });
  await recovered(`status?job_id=${jobId}`, { headers: bearer(user.token) }, 200);
  await recovered("status", { headers: bearer(admin.token) }, 200);
  await recovered("status/metrics", { headers: asKey() }, 200);
  await recovered("video-queue-worker", post({}, asKey()), 200);
  const enqueued = await recovered(
    "enqueue",
    post({ job_type: "doubt", payload: { question: "Back?" } }, bearer(user.token)),
    201,
  );
  const newJob = (enqueued.body as { job: { id: string } }).job.id;
  const cancelled = await recovered("cancel", post({ job_id: newJob }, bearer(user.token)), 200);
  assert.equal((cancelled.body as { job: { status: string } }).job.status, "cancelled");
  await resetData();
});

test("render endpoints that refuse or hang cost a worker pass no more than the dispatch time-out", async () => {
  await resetData();
  await setQueueCronActive(false);
  await db`delete from render_endpoints`;

  // refused: a port nobody listens on
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refusedUrl = `http://127.0.0.1:${(closed.addr as Deno.NetAddr).port}/render`;
  closed.close();
  // silent: accepts the connection, never answers
  const silent = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // stalled: sends the status line and headers of a 200, then nothing of the promised body
  const stalled = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const held: Deno.Conn[] = [];
  const hold = async (listener: Deno.Listener, greeting?: string) => {
    for await (const conn of listener) {
      held.push(conn);
      if (greeting) {
        void conn.read(new Uint8Array(64 * 1024)).then(() => conn.write(new TextEncoder().encode(greeting)))
          .catch(() => {});
      }
    }
  };
  const servers = [
    hold(silent).catch(() => {}),
    hold(
      stalled,
      'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{"result":',
    ).catch(() => {}),
  ];
  const port = (l: Deno.Listener) => (l.addr as Deno.NetAddr).port;
  try {
    const refusedJob = await queuedJob("manim", "refused");
    const silentJob = await queuedJob("revideo", "silent");
    const stalledJob = await queuedJob("orchestrator", "stalled");
    await db`insert into render_endpoints (renderer, url) values
      ('manim', ${refusedUrl}),
      ('revideo', ${`http://127.0.0.1:${port(silent)}/render`}),
      ('orchestrator', ${`http://127.0.0.1:${port(stalled)}/render`})`;

    const pass = await call("video-queue-worker", post({}, asKey()));
    assert.equal(pass.status, 200, JSON.stringify(pass.body));
    const body = pass.body as { claimed: number; dispatched: number; released: number };
    assert.equal(body.claimed, 3);
    assert.equal(body.dispatched, 0);
    assert.equal(body.released, 1, "the refused dispatch is released");
    assert.ok(
      pass.ms < DISPATCH_TIMEOUT_MS + 5_000,
      `the pass took ${Math.round(pass.ms)} ms; the dispatch time-out is ${DISPATCH_TIMEOUT_MS} ms`,
    );
    assert.ok(
      pass.ms >= DISPATCH_TIMEOUT_MS * 0.9,
      "the hung dispatches were waited for, up to the time-out",
    );

    const jobs = new Map(
      (await db`select id, status, retry_count, next_attempt_at > now() as backing_off, error_message
                from jobs where id in ${db([refusedJob, silentJob, stalledJob])}`).map((j) => [j.id, j]),
    );
    // A refused connection never reached the service: back in the queue, no retry used.
    assert.deepEqual(
      { ...jobs.get(refusedJob) },
      { id: refusedJob, status: "queued", retry_count: 0, backing_off: false, error_message: null },
    );
    // No answer in time: it may have started there, so a retryable failure: retry 1 after backoff.
    for (const id of [silentJob, stalledJob]) {
      const job = jobs.get(id)!;
      assert.equal(job.status, "queued");
      assert.equal(job.retry_count, 1);
      assert.equal(job.backing_off, true);
      assert.ok(job.error_message, "the failure is recorded");
    }
    // The endpoints that refused or gave no answer are out of rotation for a cool-down. (So is the stalled
    // one: a body that stalls is a time-out too; functions_unit_test checks that outcome.)
    const cooling = await db`select renderer from render_endpoints where unhealthy_until > now()`;
    for (const renderer of ["manim", "revideo"]) {
      assert.ok(cooling.some((e) => e.renderer === renderer), `${renderer}'s endpoint cools down`);
    }
  } finally {
    silent.close();
    stalled.close();
    for (const conn of held) {
      try {
        conn.close();
      } catch { /* closed by the other side */ }
    }
    await Promise.all(servers);
    await resetData();
  }
});

test("the pg_net sender outlives a database outage: it reports it once, then delivers again", async () => {
  await resetData();
  await setQueueCronActive(false);
  const pid = platformPid(dir);
  assert.ok(pid, "the platform process runs");
  const logFrom = platformLogSize();

  await stopPostgres(dir);
  try {
    // It polls every second: wait until it has met the outage.
    await eventually(
      "the sender to meet the stopped database",
      () => Promise.resolve(platformLogSince(logFrom).some((l) => l.event === "net_sender_error")),
    );
  } finally {
    await ensurePostgres();
  }

  const headers = { "Content-Type": "application/json", apikey: env.SECRET_KEY };
  const [{ id }] = await db`select net.http_post(${fnUrl("video-queue-worker")}, '{}'::jsonb,
    headers := ${db.json(headers)}) as id`;
  const response = await eventually(
    "the pg_net response after the outage",
    async () => (await db`select status_code, content from net._http_response where id = ${id}`)[0],
  );
  assert.equal(response.status_code, 200);
  assert.equal(typeof JSON.parse(response.content).claimed, "number");
  // LISTEN is set up again too (postgres.js alone gives up if the database is still down).
  await eventually("the sender to LISTEN again", async () =>
    (await db`select 1 from pg_stat_activity
              where application_name = 'video-queue-pg-net-sender' and query ilike 'listen%'`).length > 0);

  const lines = platformLogSince(logFrom);
  const errors = lines.filter((l) => l.event === "net_sender_error").map((l) => String(l.error));
  // One line per kind of failure (refused, starting up, ...), not one per poll.
  assert.ok(errors.length >= 1 && errors.length <= 3, `logged: ${errors.join(" | ")}`);
  assert.equal(new Set(errors).size, errors.length, `a failure logged twice: ${errors.join(" | ")}`);
  assert.equal(lines.filter((l) => l.event === "net_sender_recovered").length, 1);
  assert.equal(platformPid(dir), pid, "the same process carried on");
  await resetData();
});

test("the functions process outlives repeated fast Postgres restarts with requests in flight", async () => {
  await resetData();
  await setQueueCronActive(false);
  const pid = platformPid(dir);
  assert.ok(pid, "the platform process runs");
  const user = await mintUser();
  const jobId = await queuedJob("manim", "restarts", user.userId);

  // Light load: four clients, each one request at a time, each request one or more transactions.
  const answers = new Map<string, number>();
  let stop = false;
  const client = async (i: number) => {
    while (!stop) {
      const [path, init]: [string, RequestInit] = i % 2 === 0
        ? [`status?job_id=${jobId}`, { headers: bearer(user.token) }]
        : ["video-queue-worker", post({}, asKey())];
      const key = await call(path, init).then((a) => String(a.status), () => "no answer");
      answers.set(key, (answers.get(key) ?? 0) + 1);
      // a gateway that is gone refuses at once: pace the client instead of spinning (not a synchronization)
      if (key === "no answer") await new Promise((r) => setTimeout(r, 50));
    }
  };
  const clients = Array.from({ length: 4 }, (_, i) => client(i));
  try {
    await eventually("the load to be running", () => Promise.resolve((answers.get("200") ?? 0) >= 8));
    for (let i = 0; i < 6; i++) {
      await restartPostgres(dir);
      const before = answers.get("200") ?? 0;
      // requests flowing again before the next restart, so each restart meets transactions in flight
      await eventually(
        "requests succeeding again",
        () => Promise.resolve((answers.get("200") ?? 0) > before),
      );
    }
  } finally {
    stop = true;
    await Promise.all(clients);
    await ensurePostgres();
  }

  assert.equal(
    platformPid(dir),
    pid,
    `the functions process died and was restarted (answers: ${[...answers]})`,
  );
  const health = await fetch(`${env.API_URL}/health`).then((r) => r.json());
  assert.equal(health.pid, pid);
  const unexpected = [...answers.keys()].filter((k) => k !== "200" && k !== "503");
  assert.deepEqual(unexpected, [], `only 200 and 503 answers: ${[...answers]}`);
  const status = await call(`status?job_id=${jobId}`, { headers: bearer(user.token) });
  assert.equal(status.status, 200);
  await resetData();
});
