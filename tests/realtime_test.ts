// Realtime end to end (API.md "Realtime"): supabase-js subscribes to a job's private topic on the local stack's
// Realtime (scripts/stack/realtime.ts) as a signed-in user, and receives the `job` events the database sends
// while a fake render service and worker passes take the job through its life. Joins are authorized by the
// RLS policies on realtime.messages: another user is refused, admins may also join queue:admin.
import assert from "node:assert/strict";
import type { RealtimeChannel, SupabaseClient } from "@supabase/supabase-js";
import type { DispatchBody, Job } from "../shared/mod.ts";
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
import { fakeRenderService } from "./support/render_service.ts";

/** A channel of one user's Realtime connection and what it received; closes itself at the end of the scope. */
interface Listener extends AsyncDisposable {
  /** How the join ended: SUBSCRIBED, or CHANNEL_ERROR with the server's reason. */
  readonly joined: { status: string; reason?: string };
  /** The payloads of the `event` broadcasts received, in order of arrival. */
  readonly received: Record<string, unknown>[];
}

async function listen(
  token: string,
  topic: string,
  options: { private?: boolean; event?: string } = {},
): Promise<Listener> {
  const supabase: SupabaseClient = client();
  supabase.realtime.setAuth(token);
  const received: Record<string, unknown>[] = [];
  const channel: RealtimeChannel = supabase.channel(topic, { config: { private: options.private ?? true } })
    .on("broadcast", { event: options.event ?? "job" }, (message) => received.push(message.payload));
  const joined = await new Promise<{ status: string; reason?: string }>((resolve) =>
    channel.subscribe((status, err) => {
      if (status === "SUBSCRIBED" || status === "CHANNEL_ERROR" || status === "TIMED_OUT") {
        resolve({ status, reason: err?.message });
      }
    })
  );
  return {
    joined,
    received,
    async [Symbol.asyncDispose]() {
      await supabase.removeAllChannels();
    },
  };
}

const asSecretKey = { apikey: env.SECRET_KEY, "content-type": "application/json" };

async function enqueue(token: string, question: string): Promise<Job> {
  const res = await fetch(fnUrl("enqueue"), {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ job_type: "doubt", payload: { question } }),
  });
  assert.equal(res.status, 201);
  return (await res.json()).job;
}

async function workerPass(): Promise<void> {
  const res = await fetch(fnUrl("video-queue-worker"), { method: "POST", headers: asSecretKey, body: "{}" });
  assert.equal(res.status, 200, await res.text());
}

async function callback(d: DispatchBody, event: Record<string, unknown>): Promise<void> {
  const res = await fetch(d.callback.url, {
    method: "POST",
    headers: { authorization: `Bearer ${d.callback.token}`, "content-type": "application/json" },
    body: JSON.stringify({ job_id: d.job_id, attempt: d.attempt, ...event }),
  });
  assert.equal(res.status, 200, await res.text());
}

/** Every test starts from the migrations' data, one render slot, no render endpoint, cron off. */
async function setup(): Promise<void> {
  await resetData();
  await setQueueCronActive(false);
  await db`update job_queue_config set max_concurrent_renders = 1, peak_worker_multiplier = 1`;
}

test("realtime: the owner hears their job wait, move up, start, progress and complete, in order", async () => {
  await setup();
  const [first, owner, other] = await Promise.all([mintUser(), mintUser(), mintUser()]);
  const ahead = await enqueue(first.token, "What is the Preamble?");
  const job = await enqueue(owner.token, "What is Article 370?");

  await using mine = await listen(owner.token, `job:${job.id}`);
  assert.equal(mine.joined.status, "SUBSCRIBED");
  await using refused = await listen(other.token, `job:${job.id}`);
  assert.equal(refused.joined.status, "CHANNEL_ERROR");
  assert.match(
    refused.joined.reason ?? "",
    /^Unauthorized: You do not have permissions to read from this Channel topic/,
  );
  // A public channel of the same name joins (no policy applies), but the database's messages are private.
  await using onPublic = await listen(other.token, `job:${job.id}`, { private: false });
  assert.equal(onPublic.joined.status, "SUBSCRIBED");

  // A render service comes up; a pass starts the job ahead, and the owner's job moves up to position 1.
  await using service = await fakeRenderService();
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  await workerPass();
  const aheadDispatch = await service.until(
    "the dispatch of the job ahead",
    () => service.dispatches.find((d) => d.job_id === ahead.id),
  );
  await workerPass(); // a pass that finds no room: it still tells waiting jobs their place
  await eventually(
    "the owner's job at position 1",
    () => Promise.resolve(mine.received.some((j) => j.status === "queued" && j.queue_position === 1)),
  );

  // The job ahead completes; the freed slot goes to the owner's job, which renders and completes.
  await callback(aheadDispatch, { type: "completed", result: { video_url: "https://cdn.test/ahead.mp4" } });
  await workerPass(); // the completion kicks a pass too; whichever claims, the other finds nothing
  const d = await service.until(
    "the dispatch of the owner's job",
    () => service.dispatches.find((x) => x.job_id === job.id),
  );
  await callback(d, { type: "progress", stage: "generating_screenshot", progress: 20 });
  await callback(d, { type: "progress", stage: "composing_video", progress: 60 });
  await callback(d, { type: "completed", result: { video_url: "https://cdn.test/job.mp4" } });
  await eventually(
    "the completed event",
    () => Promise.resolve(mine.received.some((j) => j.status === "completed")),
  );

  // As a client applies them (client/mod.ts): an event older than one already applied is dropped. A pass
  // that read the queue just before another pass's claim committed may announce the old place after the
  // start (broadcast is best effort and unordered across transactions); its updated_at gives it away.
  const applied = mine.received.filter((j, i, all) =>
    all.slice(0, i).every((earlier) => Date.parse(String(earlier.updated_at)) <= Date.parse(String(j.updated_at)))
  );
  const events = applied.map((j) =>
    `${j.status} ${j.queue_position ?? "-"} ${j.stage ?? "-"} ${j.progress}`
  );
  const queued = events.filter((e) => e.startsWith("queued "));
  assert.ok(queued.length >= 1, events.join("\n"));
  assert.equal(
    queued.at(-1),
    "queued 1 - 0",
    `the last place it heard before starting was the front:\n${events.join("\n")}`,
  );
  assert.deepEqual(events.slice(queued.length), [
    "processing - - 0",
    "processing - generating_screenshot 20",
    "processing - composing_video 60",
    "completed - completed 100",
  ], events.join("\n"));
  const done = mine.received.at(-1)!;
  assert.deepEqual(done.result, { video_url: "https://cdn.test/job.mp4" });
  assert.equal(done.id, job.id);
  assert.deepEqual(Object.keys(done).sort(), Object.keys(job).sort(), "each event carries the Job of API.md");

  assert.deepEqual(refused.received, [], "the refused user received nothing");
  assert.deepEqual(onPublic.received, [], "nor did a public channel of the same name");
});

test("realtime: admins may join any job's topic and queue:admin, where each pass's stats arrive", async () => {
  await setup();
  const [owner, admin] = await Promise.all([mintUser(), mintUser({ admin: true })]);
  const job = await enqueue(owner.token, "Who wrote the Arthashastra?");

  await using ownerOnAdmin = await listen(owner.token, "queue:admin", { event: "stats" });
  assert.equal(ownerOnAdmin.joined.status, "CHANNEL_ERROR", "queue:admin is for admins only");
  await using jobTopic = await listen(admin.token, `job:${job.id}`);
  assert.equal(jobTopic.joined.status, "SUBSCRIBED");
  await using stats = await listen(admin.token, "queue:admin", { event: "stats" });
  assert.equal(stats.joined.status, "SUBSCRIBED");

  await db`update job_queue_config set paused = true`; // an operator pauses: waiting jobs and admins hear it
  await eventually(
    "the paused event",
    () => Promise.resolve(jobTopic.received.some((j) => j.status === "queued" && j.wait_reason === "paused")),
  );
  await eventually(
    "stats saying paused",
    () => Promise.resolve(stats.received.some((s) => s.paused === true)),
  );
  const latest = stats.received.at(-1)!;
  assert.equal(latest.queued, 1);
  assert.equal(typeof latest.generated_at, "string");
});
