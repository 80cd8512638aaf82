// End to end through HTTP: the queue (functions + SQL) and the reference renderer (real ffmpeg).
// A relay between them forwards dispatches and callbacks unchanged, and after each callback records
// what GET /status shows, so the tests see the job's life as a user would, without timing anything.
import assert from "node:assert/strict";
import { type RendererHandle, startRenderer } from "../renderer/server.ts";
import type { Job } from "../shared/mod.ts";
import { client, db, env, eventually, fnUrl, mintUser, resetData, test, type TestUser } from "./harness.ts";

interface Seen {
  callback: { job_id: string; attempt: number; type: string; stage?: string; progress?: number };
  answer: number;
  job: Job;
}

async function getJob(token: string, id: string): Promise<Job> {
  const res = await fetch(`${fnUrl("status")}?job_id=${id}`, {
    headers: { authorization: `Bearer ${token}` },
  });
  return (await res.json()).job;
}

/** Forwards /render and /render/cancel to the renderer and callbacks to the queue, recording both. */
function startRelay(renderer: RendererHandle, admin: TestUser) {
  const seen: Seen[] = [];
  const listeners: (() => void)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    const body = await req.json();
    if (path === "/events") {
      const res = await fetch(fnUrl("video-queue-worker/events"), {
        method: "POST",
        headers: { authorization: req.headers.get("authorization")!, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const answer = await res.text();
      seen.push({ callback: body, answer: res.status, job: await getJob(admin.token, body.job_id) });
      listeners.splice(0).forEach((wake) => wake());
      return new Response(answer, { status: res.status, headers: { "content-type": "application/json" } });
    }
    const target = path.endsWith("/cancel") ? `${renderer.endpointUrl}/cancel` : renderer.endpointUrl;
    if (body.callback) body.callback.url = `${relayUrl}/events`;
    const res = await fetch(target, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    return new Response(await res.text(), {
      status: res.status,
      headers: { "content-type": "application/json" },
    });
  });
  const relayUrl = `http://127.0.0.1:${server.addr.port}`;
  return {
    url: `${relayUrl}/render`,
    seen,
    /** Resolves with the first recorded callback matching `match` (already seen, or the next ones). */
    async waitFor(match: (s: Seen) => boolean, timeoutMs = 60_000): Promise<Seen> {
      const until = Date.now() + timeoutMs;
      while (true) {
        const found = seen.find(match);
        if (found) return found;
        if (Date.now() > until) throw new Error("timed out waiting for a callback");
        await new Promise<void>((wake) => {
          listeners.push(wake);
          setTimeout(wake, 1000); // re-check even without news, to honour the timeout
        });
      }
    },
    close: () => server.shutdown(),
  };
}

async function withRenderer(
  options: { clipSeconds: number; faults?: Record<string, number> },
  fn: (
    ctx: {
      renderer: RendererHandle;
      relay: ReturnType<typeof startRelay>;
      admin: TestUser;
      storageDir: string;
    },
  ) => Promise<void>,
) {
  await resetData();
  const storageDir = await Deno.makeTempDir({ prefix: "e2e-videos-" });
  const renderer = await startRenderer({
    name: "e2e",
    storageDir,
    clipSeconds: options.clipSeconds,
    cleanupIntervalMs: 0,
    maxConcurrentRenders: 16,
    faults: options.faults,
    log: () => {},
  });
  const admin = await mintUser({ admin: true });
  const relay = startRelay(renderer, admin);
  try {
    for (const kind of ["manim", "revideo", "orchestrator"]) {
      await db`insert into render_endpoints (renderer, url) values (${kind}, ${relay.url})`;
    }
    await fn({ renderer, relay, admin, storageDir });
  } finally {
    await renderer.close();
    await relay.close();
    await Deno.remove(storageDir, { recursive: true });
  }
}

async function ffprobe(path: string) {
  const out = await new Deno.Command("ffprobe", {
    args: [
      "-v",
      "error",
      "-select_streams",
      "v:0",
      "-show_entries",
      "stream=width,height:format=duration",
      "-of",
      "json",
      path,
    ],
    stdout: "piped",
  }).output();
  const info = JSON.parse(new TextDecoder().decode(out.stdout));
  return {
    width: info.streams[0].width,
    height: info.streams[0].height,
    duration: Number(info.format.duration),
  };
}

test("a doubt becomes a real MP4: progress in order, status completed, the file downloads", async () => {
  await withRenderer({ clipSeconds: 2 }, async ({ relay, storageDir }) => {
    const user = await mintUser();
    const { data, error } = await client(user.token).functions.invoke("enqueue", {
      body: {
        job_type: "doubt",
        payload: { question: "Why is the Preamble called the soul of the Constitution?" },
      },
    });
    assert.equal(error, null);
    const id = data.job.id;
    await relay.waitFor((s) => s.callback.job_id === id && s.callback.type === "completed");

    const mine = relay.seen.filter((s) => s.callback.job_id === id);
    assert.deepEqual(
      mine.map((s) => [s.callback.type, s.callback.stage ?? null, s.callback.progress ?? null, s.answer]),
      [
        ["progress", "generating_screenshot", 20, 200],
        ["progress", "composing_video", 60, 200],
        ["progress", "saving_file", 80, 200],
        ["completed", null, null, 200],
      ],
    );
    // After each progress callback, status showed exactly that stage and percentage.
    for (const s of mine.slice(0, 3)) {
      assert.deepEqual([s.job.status, s.job.stage, s.job.progress], [
        "processing",
        s.callback.stage,
        s.callback.progress,
      ]);
    }

    const { data: status } = await client(user.token).functions.invoke(`status?job_id=${id}`, {
      method: "GET",
    });
    assert.equal(status.job.status, "completed");
    const result = status.job.result;
    assert.match(result.video_url, /^http:\/\/127\.0\.0\.1:\d+\/files\/.+\.mp4$/);
    const file = `${storageDir}/${result.filename}`;
    const probe = await ffprobe(file);
    assert.deepEqual([probe.width, probe.height], [1080, 1920]);
    assert.ok(Math.abs(probe.duration - 2) < 0.3, `duration ${probe.duration} s`);
    assert.equal(result.resolution, "1080x1920");
    assert.equal(result.file_size, (await Deno.stat(file)).size);

    const downloaded = new Uint8Array(await (await fetch(result.video_url)).arrayBuffer());
    assert.deepEqual(downloaded, await Deno.readFile(file));
  });
});

test("cancelling a rendering job stops the render, leaves no file and refuses its late callbacks", async () => {
  await withRenderer({ clipSeconds: 30 }, async ({ renderer, relay, storageDir }) => {
    const user = await mintUser();
    const { data } = await client(user.token).functions.invoke("enqueue", {
      body: { job_type: "topic_short", payload: { topic: "Monsoon mechanism" } },
    });
    const id = data.job.id;
    const first = await relay.waitFor((s) => s.callback.job_id === id && s.callback.type === "progress");
    const { data: cancelled, error } = await client(user.token).functions.invoke("cancel", {
      body: { job_id: id, reason: "changed my mind" },
    });
    assert.equal(error, null);
    assert.equal(cancelled.job.status, "cancelled");

    const render = await renderer.waitForRender(id, first.callback.attempt);
    assert.ok(["cancelled", "superseded"].includes(render.state), `render state ${render.state}`);
    assert.equal(render.video, null);
    assert.equal(render.temp_dir === null || !(await exists(render.temp_dir)), true, "temp files removed");
    assert.deepEqual([...Deno.readDirSync(storageDir)].filter((e) => e.name.endsWith(".mp4")), []);
    // Whatever the renderer still said after the cancel was refused.
    for (const s of relay.seen.filter((s) => s.callback.job_id === id && s !== first)) {
      assert.equal(s.answer, 409);
    }
    assert.equal((await getJob((await mintUser({ admin: true })).token, id)).status, "cancelled");
  });
});

async function exists(path: string) {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

test("with injected faults every job ends in exactly one terminal state and retries match the faults", async () => {
  const faults = { retryable: 0.25, permanent: 0.1, hang: 0.1, duplicate: 0.2, seed: 5 };
  await withRenderer({ clipSeconds: 1, faults }, async ({ renderer }) => {
    await db`update job_queue_config set max_concurrent_renders = 4, retry_interval_minutes = 0,
             max_enqueues_per_minute = 100, max_queued_per_user = 100`;
    const user = await mintUser();
    const ids: string[] = [];
    const types = [
      { job_type: "doubt", payload: { question: "What is federalism?" } },
      { job_type: "topic_short", payload: { topic: "Tides" } },
      { job_type: "daily_ca", payload: { date: "2026-11-22", headlines: ["One", "Two"] } },
    ];
    for (let i = 0; i < 12; i++) {
      const { data, error } = await client(user.token).functions.invoke("enqueue", { body: types[i % 3] });
      assert.equal(error, null);
      ids.push(data.job.id);
    }

    // Drive the queue until every job is finished. Hung renders never call back: once nothing else is
    // running, expire their leases with an injected clock, as the recovery cron would after the timeout.
    await eventually("every job to finish", async () => {
      const rows = await db`select id, status, attempt, lease_expires_at from jobs where id = any(${ids})`;
      if (rows.every((r) => ["completed", "failed", "cancelled"].includes(r.status))) return true;
      const processing = rows.filter((r) => r.status === "processing");
      const allHung = processing.length > 0 &&
        processing.every((r) => renderer.getRender(r.id, r.attempt)?.state === "hung");
      if (allHung) {
        const latest = processing.map((r) => r.lease_expires_at as Date).sort((a, b) => +b - +a)[0];
        await db`select recover_expired_attempts(${new Date(+latest + 1000)})`;
      }
      const res = await fetch(fnUrl("video-queue-worker"), {
        method: "POST",
        headers: { apikey: env.SECRET_KEY },
      });
      await res.body?.cancel();
      return false;
    }, 180_000);

    const jobs =
      await db`select id, status, attempt, retry_count, max_retries, completed_at from jobs where id = any(${ids})`;
    let faultsSeen = 0;
    for (const job of jobs) {
      const renders = Array.from({ length: job.attempt }, (_, i) => renderer.getRender(job.id, i + 1))
        .filter((r) => r !== undefined);
      const retryableFaults = renders.filter((r) => r.fault === "retryable" || r.fault === "hang").length;
      const last = renders[renders.length - 1];
      faultsSeen += renders.filter((r) => r.fault !== null).length;
      assert.ok(job.completed_at !== null, "finished jobs have completed_at");
      if (job.status === "completed") {
        assert.ok(
          last.fault === null || last.fault === "duplicate",
          `job ${job.id} completed by a clean render`,
        );
        assert.equal(job.retry_count, retryableFaults, `job ${job.id}: one retry per retryable fault`);
      } else {
        assert.equal(job.status, "failed");
        const spent = job.retry_count === job.max_retries && retryableFaults === job.max_retries + 1;
        const permanent = last.fault === "permanent" && job.retry_count === retryableFaults;
        assert.ok(spent || permanent, `job ${job.id} failed for a reason its faults explain`);
      }
      const [{ completions }] = await db`select count(*)::int as completions from job_attempts
        where job_id = ${job.id} and outcome = 'completed'`;
      assert.equal(completions, job.status === "completed" ? 1 : 0, "a duplicate completion counts once");
    }
    assert.ok(faultsSeen >= 3, `the run injected faults (${faultsSeen})`);
  });
});
