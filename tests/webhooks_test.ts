// Webhooks end to end with real HTTP: receivers on free ports check every request with the Standard Webhooks
// reference library (npm standardwebhooks); the queue's clock (p_now) stands in for backoff waits. And the
// daily current-affairs job, run concurrently from many connections.
import assert from "node:assert/strict";
import { Webhook } from "standardwebhooks";
import { db, env, eventually, fnUrl, mintUser, resetData, test } from "./harness.ts";
import { fakeRenderService } from "./support/render_service.ts";

// shared/ (the worker's code, run here in-process) reaches the stack's database the way the functions do.
if (!Deno.env.get("SUPABASE_DB_URL")) Deno.env.set("SUPABASE_DB_URL", env.SUPABASE_DB_URL);
const { deliverDueWebhooks } = await import("../shared/mod.ts");

type Received = {
  id: string | null;
  body: string;
  /** The reference library accepted the signature, id and timestamp. */
  verified: boolean;
  /** Still waiting for its answer (a hanging receiver). */
  open: boolean;
};

type Answer = (n: number, req: Request) => Response | Promise<Response>;

/** A webhook receiver on a free port, registered the way an operator does; it verifies what it receives. */
async function receiver(answer: Answer, register = true) {
  const requests: Received[] = [];
  let verifier: Webhook | undefined;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const body = await req.text();
    let verified = false;
    try {
      verifier?.verify(body, Object.fromEntries(req.headers));
      verified = verifier !== undefined;
    } catch { /* recorded as not verified */ }
    const seen: Received = { id: req.headers.get("webhook-id"), body, verified, open: true };
    requests.push(seen);
    try {
      return await answer(requests.length, req);
    } finally {
      seen.open = false;
    }
  });
  const url = `http://127.0.0.1:${server.addr.port}/hooks`;
  if (register) {
    const [{ hook }] = await db`select queue.register_webhook(${url}, 'test receiver') as hook`;
    verifier = new Webhook(hook.secret);
  }
  return {
    url,
    requests,
    until: (what: string, check: () => boolean) => eventually(what, () => Promise.resolve(check())),
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** An answer that waits until released; `using` it after the receiver releases it before the receiver closes. */
function hanging() {
  const waiting: (() => void)[] = [];
  const answer: Answer = () =>
    new Promise<Response>((resolve) => waiting.push(() => resolve(new Response("ok"))));
  const release = () => waiting.splice(0).forEach((answer) => answer());
  return { answer, release, [Symbol.dispose]: release };
}

/** A job that ended (an operator's cancel, a hand-written UPDATE: the outbox trigger sees every writer). */
async function endedJob(): Promise<string> {
  const [{ id }] = await db`insert into jobs (job_type, status, payload)
                             values ('doubt', 'queued', '{"question": "q"}') returning id`;
  await db`update jobs set status = 'cancelled' where id = ${id}`;
  return id;
}

const deliveryOf = async (jobId: string) =>
  (await db`select d.*, (select jsonb_agg(a.status order by a.attempt) from webhook_delivery_attempts a
                          where a.delivery_id = d.id) as statuses
              from webhook_deliveries d where d.job_id = ${jobId}`)[0];

const inSeconds = (s: number) => new Date(Date.now() + s * 1000);

test("a render completes: its webhook fails twice, then is delivered once, signed, with 3 attempts recorded", async () => {
  await resetData();
  await using hook = await receiver((n) => new Response(null, { status: n <= 2 ? 500 : 204 }));
  await using render = await fakeRenderService(() =>
    Response.json({ result: { video_url: "https://cdn.example/v.mp4" } }, { status: 200 })
  );
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${render.url})`;
  const user = await mintUser();

  // Enqueue over HTTP: the kicked pass dispatches, the render answers done, and the pass sends the webhook.
  const res = await fetch(fnUrl("enqueue"), {
    method: "POST",
    headers: { authorization: `Bearer ${user.token}`, "content-type": "application/json" },
    body: JSON.stringify({ job_type: "doubt", payload: { question: "What is Article 370?" } }),
  });
  assert.equal(res.status, 201);
  const jobId = (await res.json()).job.id;
  await hook.until("the first attempt", () => hook.requests.length === 1);
  await eventually("attempt 1 recorded", async () => (await deliveryOf(jobId))?.last_status === 500);

  // The backoff (5 s, then 5 min) passes on the queue's clock, not the test's.
  assert.deepEqual(await deliverDueWebhooks({ now: inSeconds(10) }), { delivered: 0, failed: 1 });
  assert.deepEqual(await deliverDueWebhooks({ now: inSeconds(10 * 60) }), { delivered: 1, failed: 0 });
  assert.deepEqual(await deliverDueWebhooks({ now: inSeconds(3 * 86_400) }), { delivered: 0, failed: 0 });

  assert.equal(hook.requests.length, 3, "three attempts reached the receiver, and no more after the 2xx");
  assert.ok(hook.requests.every((r) => r.verified), "each signature verifies with the endpoint's secret");
  assert.equal(new Set(hook.requests.map((r) => r.id)).size, 1, "one webhook-id on every attempt");
  assert.equal(new Set(hook.requests.map((r) => r.body)).size, 1, "the same bytes on every attempt");
  const event = JSON.parse(hook.requests[0].body);
  assert.equal(event.type, "job.completed");
  assert.equal(event.data.id, jobId);
  assert.equal(event.data.status, "completed");
  assert.equal(event.data.result.video_url, "https://cdn.example/v.mp4");
  const delivery = await deliveryOf(jobId);
  assert.ok(delivery.delivered_at, "recorded as delivered");
  assert.equal(delivery.attempts, 3);
  assert.deepEqual(delivery.statuses, [500, 500, 204], "every attempt recorded with its status");
});

test("a receiver that redirects: never followed, recorded as a failed attempt and retried", async () => {
  await resetData();
  await using target = await receiver(() => new Response("stolen"), false);
  await using hook = await receiver(() =>
    new Response(null, { status: 307, headers: { location: target.url } })
  );
  const jobId = await endedJob();

  assert.deepEqual(await deliverDueWebhooks(), { delivered: 0, failed: 1 });
  assert.deepEqual(await deliverDueWebhooks({ now: inSeconds(3600) }), { delivered: 0, failed: 1 });
  assert.equal(hook.requests.length, 2);
  assert.equal(target.requests.length, 0, "the redirect target never received a request");
  const delivery = await deliveryOf(jobId);
  assert.deepEqual(delivery.statuses, [307, 307]);
  assert.match(delivery.last_error, /redirect, not followed/);
  assert.ok(delivery.next_attempt_at && !delivery.delivered_at, "still pending: it will be retried");
});

test("a receiver that hangs: the attempt ends at the time-out and is recorded as failed", async () => {
  await resetData();
  const hang = hanging();
  await using hook = await receiver(hang.answer);
  using _released = hang;
  const jobId = await endedJob();

  assert.deepEqual(await deliverDueWebhooks({ timeoutMs: 300 }), { delivered: 0, failed: 1 });
  assert.equal(hook.requests.length, 1);
  assert.equal(hook.requests[0].open, true, "the sender gave up; the receiver was still at it");
  const delivery = await deliveryOf(jobId);
  assert.deepEqual(delivery.statuses, [null], "no answer: no status");
  assert.equal(delivery.last_error, "receiver gave no answer within 300 ms");
});

test("a receiver that hangs never holds up the queue: worker passes claim and dispatch meanwhile", async () => {
  await resetData();
  const hang = hanging();
  await using hook = await receiver(hang.answer);
  using _released = hang;
  await using render = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${render.url})`;
  const ended = await endedJob();
  const pass = () =>
    fetch(fnUrl("video-queue-worker"), { method: "POST", headers: { apikey: env.SECRET_KEY } }).then((r) =>
      r.json()
    );

  const [{ id: first }] = await db`insert into jobs (job_type, status, payload)
                                    values ('doubt', 'queued', '{"question": "one"}') returning id`;
  const summary = await pass();
  assert.equal(summary.dispatched, 1, "the pass dispatched its job");
  await hook.until("the webhook reaches the receiver", () => hook.requests.length === 1);
  const inFlight = async () =>
    // attempt 1 started, and no answer (nor time-out) recorded yet
    (await db`select a.finished_at is null as open from webhook_delivery_attempts a
                join webhook_deliveries d on d.id = a.delivery_id where d.job_id = ${ended}`)[0]?.open ===
      true;
  assert.ok(
    await inFlight(),
    "the pass answered while its webhook attempt was still waiting for the receiver",
  );

  const [{ id: second }] = await db`insert into jobs (job_type, status, payload)
                                     values ('doubt', 'queued', '{"question": "two"}') returning id`;
  assert.equal((await pass()).dispatched, 1, "the next pass claims and dispatches too");
  assert.deepEqual(render.dispatches.map((d) => d.job_id), [first, second]);
  assert.ok(await inFlight(), "and that attempt is still waiting");

  hang.release();
  await eventually(
    "the webhook is delivered once released",
    async () => (await deliveryOf(ended)).delivered_at !== null,
  );
  assert.deepEqual((await deliveryOf(ended)).statuses, [200], "by that first attempt");
});

test("the daily job: many concurrent runs in one local day enqueue exactly one job", async () => {
  await resetData();
  await db`update job_queue_config set daily_ca_enabled = true, daily_ca_local_time = '06:00',
                                      daily_ca_time_zone = 'Asia/Kolkata'`;
  const at = "2026-12-10T07:15:00+05:30";
  const runs = await Promise.all(
    Array.from({ length: 8 }, () => db`select queue.enqueue_daily_current_affairs(${at}::timestamptz) as r`),
  );
  const answers = runs.map(([{ r }]) => r);
  assert.equal(answers.filter((a) => a.created).length, 1, "one run created it");
  assert.equal(new Set(answers.map((a) => a.job.id)).size, 1, "every run answers the same job");
  const [{ n }] = await db`select count(*)::int as n from jobs where payload ->> 'date' = '2026-12-10'`;
  assert.equal(n, 1);
});
