// Smaller holes found by attacking the stack from outside (issue 8), each closed and held here:
// redirects toward render services, unbounded render answers, a bogus callback token taking a row lock,
// and a still-valid token of a deleted user.
import assert from "node:assert/strict";
import { db, env, eventually, fnUrl, mintUser, resetData, setQueueCronActive, test } from "./harness.ts";
import { fakeRenderService } from "./support/render_service.ts";

async function setup() {
  await resetData();
  await setQueueCronActive(false);
}

/** A queued doubt, inserted as an operator would (no kick: the test runs the pass itself). */
async function queuedDoubt(): Promise<string> {
  const [{ id }] = await db`insert into jobs (job_type, status, payload)
                            values ('doubt', 'queued', ${db.json({ question: "Why?" })}) returning id`;
  return id;
}

async function workerPass() {
  const res = await fetch(fnUrl("video-queue-worker"), {
    method: "POST",
    headers: { apikey: env.SECRET_KEY },
  });
  assert.equal(res.status, 200);
  return await res.json();
}

test("dispatch never follows a redirect: the callback token stays with the registered endpoint", async () => {
  await setup();
  await using elsewhere = await fakeRenderService(() =>
    Response.json({ result: { video_url: "https://elsewhere.example/v.mp4" } })
  );
  await using redirecting = await fakeRenderService(
    () => new Response(null, { status: 307, headers: { location: elsewhere.url } }),
    { cancel: () => new Response(null, { status: 307, headers: { location: `${elsewhere.url}/cancel` } }) },
  );
  const [{ id: endpointId }] =
    await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${redirecting.url}) returning id`;
  const jobId = await queuedDoubt();

  const pass = await workerPass();
  assert.equal(pass.claimed, 1);
  assert.equal(pass.released, 1, "the job did not start anywhere: released, no retry used");
  assert.equal(redirecting.requests.length, 1);
  assert.deepEqual(elsewhere.requests, [], "nothing, and no token, reached the redirect's target");
  const [job] = await db`select status, retry_count from jobs where id = ${jobId}`;
  assert.deepEqual({ ...job }, { status: "queued", retry_count: 0 });
  const [endpoint] =
    await db`select unhealthy_until > now() as cooling from render_endpoints where id = ${endpointId}`;
  assert.equal(endpoint.cooling, true, "a redirecting endpoint leaves rotation for a cool-down");
});

test("a render answer larger than the limit is not read whole and completes nothing", async () => {
  await setup();
  const huge = JSON.stringify({
    result: { video_url: "https://x.example/v.mp4", pad: "x".repeat(2_000_000) },
  });
  await using flood = await fakeRenderService(() =>
    new Response(huge, { headers: { "content-type": "application/json" } })
  );
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${flood.url})`;
  const jobId = await queuedDoubt();

  const pass = await workerPass();
  assert.equal(pass.claimed, 1);
  const [job] = await db`select status, retry_count, result, error_message from jobs where id = ${jobId}`;
  assert.equal(job.status, "queued", "a retryable failure, not a completion");
  assert.equal(job.retry_count, 1);
  assert.equal(job.result, null);
  assert.match(job.error_message, /more than 65536 bytes/);
});

test("a callback with a bogus token is refused without waiting for the job's row lock", async () => {
  await setup();
  await using accepting = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${accepting.url})`;
  const jobId = await queuedDoubt();
  assert.equal((await workerPass()).dispatched, 1);

  // Another transaction holds the job's row; a callback that had to lock it first would wait for it.
  const answer = await db.begin(async (tx) => {
    await tx`select id from jobs where id = ${jobId} for update`;
    const res = await fetch(fnUrl("video-queue-worker/events"), {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${"f".repeat(64)}` },
      body: JSON.stringify({
        job_id: jobId,
        attempt: 1,
        type: "completed",
        result: { video_url: "https://x/v" },
      }),
      signal: AbortSignal.timeout(8_000), // far beyond an answer that needs no lock
    });
    return { status: res.status, body: await res.json() };
  });
  assert.equal(answer.status, 401);
  assert.equal(answer.body.error.code, "unauthorized");
  const [job] = await db`select status from jobs where id = ${jobId}`;
  assert.equal(job.status, "processing");
});

test("a still-valid token of a deleted user gets 401 from /enqueue, not a 500", async () => {
  await setup();
  const user = await mintUser();
  await db`delete from auth.users where id = ${user.userId}`;
  const res = await fetch(fnUrl("enqueue"), {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${user.token}` },
    body: JSON.stringify({ job_type: "doubt", payload: { question: "Still there?" } }),
  });
  const body = await res.json();
  assert.equal(res.status, 401, JSON.stringify(body));
  assert.equal(body.error.code, "unauthorized");
  assert.match(body.error.message, /sign in again/i);
  const [{ n }] = await db`select count(*)::int as n from jobs`;
  assert.equal(n, 0);
});

test("a repeated completed callback racing the first one is harmless (200, one completion)", async () => {
  await setup();
  await using accepting = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${accepting.url})`;
  const jobId = await queuedDoubt();
  assert.equal((await workerPass()).dispatched, 1);
  const { callback } = accepting.dispatches[0];
  const completed = JSON.stringify({
    job_id: jobId,
    attempt: 1,
    type: "completed",
    result: { video_url: "https://cdn.example/v.mp4" },
  });
  const send = () =>
    fetch(callback.url, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${callback.token}` },
      body: completed,
    });

  // The repeat reads its attempt, then waits for the job's row while the first completion holds it.
  const first = await db.reserve();
  try {
    await first`begin`;
    await first`select id from jobs where id = ${jobId} for update`;
    const repeat = send();
    await eventually("the repeat to wait for the row lock", async () => {
      const [w] = await db`select count(*)::int as n from pg_stat_activity
                            where wait_event_type = 'Lock' and application_name = 'video-queue-functions'`;
      return w.n > 0;
    });
    await first`select queue.complete_job(${jobId}::uuid, 1, ${callback.token}, ${
      first.json({ video_url: "https://cdn.example/v.mp4" })
    })`;
    await first`commit`;
    const res = await repeat;
    assert.equal(res.status, 200, JSON.stringify(await res.clone().json()));
    assert.equal((await res.json()).job.status, "completed");
  } finally {
    first.release();
  }
  const [{ n }] =
    await db`select count(*)::int as n from job_attempts where job_id = ${jobId} and outcome = 'completed'`;
  assert.equal(n, 1);
});
