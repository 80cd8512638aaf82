// The local stack is real: pg_cron runs jobs, functions answer over HTTP through supabase-js,
// and net.http_post from SQL reaches a function only after the transaction commits (as pg_net does).
import assert from "node:assert/strict";
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

test("functions.invoke reaches a function and gets the contract's error shape", async () => {
  await resetData();
  const { data, error } = await client().functions.invoke("status", { method: "GET" });
  assert.equal(data, null);
  const res = (error as { context: Response }).context;
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, "unauthorized");
});

test("functions.invoke as a user enqueues a job that lands in the database", async () => {
  await resetData();
  const user = await mintUser();
  const { data, error } = await client(user.token).functions.invoke("enqueue", {
    body: { job_type: "doubt", payload: { question: "What is Article 370?" } },
  });
  assert.equal(error, null);
  const [row] = await db`select user_id, status, priority from jobs where id = ${data.job.id}`;
  assert.deepEqual({ ...row }, { user_id: user.userId, status: "queued", priority: "high" });
});

test("net.http_post reaches a function after commit, and a rolled-back request is never sent", async () => {
  await resetData();
  const headers = { "Content-Type": "application/json", apikey: env.SECRET_KEY };
  const rolledBack = await db.begin(async (tx) => {
    const [{ id }] = await tx`select net.http_post(${fnUrl("video-queue-worker")}, '{}'::jsonb,
      headers := ${tx.json(headers)}) as id`;
    await tx`select 1/0`.catch(() => {}); // aborts the transaction
    return id;
  }).catch(() => "rolled back");
  assert.equal(rolledBack, "rolled back");

  const [{ id }] = await db`select net.http_post(${fnUrl("video-queue-worker")}, '{}'::jsonb,
    headers := ${db.json(headers)}) as id`;
  const response = await eventually(
    "the pg_net response",
    async () => (await db`select status_code, content from net._http_response where id = ${id}`)[0],
  );
  assert.equal(response.status_code, 200);
  assert.equal(typeof JSON.parse(response.content).claimed, "number");
  const [{ sent }] = await db`select count(*)::int as sent from net._http_response`;
  assert.equal(sent, 1, "only the committed request was sent");
});

test("pg_cron runs the queue's worker job: cron → Vault → net.http_post → video-queue-worker", async () => {
  await resetData();
  const [{ jobid }] = await db`select jobid from cron.job where jobname = 'video-queue-worker'`;
  await db`delete from cron.job_run_details where jobid = ${jobid}`;
  await setQueueCronActive(true);
  try {
    // pg_cron here runs minute schedules: the next run is at most a minute away. A run is `starting`,
    // then `running`, and ends `succeeded` or `failed`: wait for the end.
    const run = await eventually(
      "a finished cron run of video-queue-worker",
      async () =>
        (await db`select status, return_message from cron.job_run_details
                  where jobid = ${jobid} and status in ('succeeded', 'failed')`)[0],
      75_000,
    );
    assert.equal(run.status, "succeeded", run.return_message);
    const response = await eventually(
      "the worker's answer to cron",
      async () => (await db`select status_code, content from net._http_response`)[0],
    );
    assert.equal(response.status_code, 200);
    assert.equal(typeof JSON.parse(response.content).recovered, "number");
  } finally {
    await setQueueCronActive(false);
  }
});
