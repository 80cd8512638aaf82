// Tests of the reference render service (renderer/): real HTTP, real ffmpeg, a real callback receiver.
// Run: npx -y deno@2 test -A tests/renderer_test.ts
import assert from "node:assert/strict";
import { join } from "node:path";
import {
  type LogEntry,
  type RendererHandle,
  type RendererOptions,
  startRenderer,
} from "../renderer/server.ts";
import { createFaultPicker, parseFaultConfig } from "../renderer/faults.ts";
import { cardTextForJob, layoutBody, wrapText } from "../renderer/card_text.ts";
import { RendererHttpError } from "../renderer/errors.ts";
import { errorResponse, json } from "../renderer/http.ts";
import { spawnRenderer } from "../renderer/spawn.ts";

// ---- helpers -------------------------------------------------------------------------------------

/** Collects items and lets a test await the first one matching a predicate (no sleeping). */
class Inbox<T> {
  readonly items: T[] = [];
  #waiters: { match: (item: T) => boolean; resolve: (item: T) => void }[] = [];

  push(item: T): void {
    this.items.push(item);
    this.#waiters = this.#waiters.filter((w) => !(w.match(item) && (w.resolve(item), true)));
  }

  waitFor(match: (item: T) => boolean, timeoutMs = 20_000): Promise<T> {
    const found = this.items.find(match);
    if (found) return Promise.resolve(found);
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    const timer = setTimeout(() => reject(new Error("timed out waiting for an item")), timeoutMs);
    this.#waiters.push({
      match,
      resolve: (item) => {
        clearTimeout(timer);
        resolve(item);
      },
    });
    return promise;
  }
}

interface Callback {
  authorization: string | null;
  /** When it arrived (performance.now()). */
  at: number;
  body: {
    job_id: string;
    attempt: number;
    type: "progress" | "heartbeat" | "completed" | "failed";
    stage?: string;
    progress?: number;
    result?: Record<string, unknown>;
    error?: string;
    retryable?: boolean;
  };
}

/** A stand-in for video-queue-worker/events; `respond` picks the status for each callback. */
function startCallbackServer(respond: (cb: Callback, index: number) => number = () => 200) {
  const inbox = new Inbox<Callback>();
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => listening.resolve(port),
  }, async (req) => {
    const cb: Callback = {
      authorization: req.headers.get("authorization"),
      body: await req.json(),
      at: performance.now(),
    };
    const status = respond(cb, inbox.items.length);
    if (status < 300) inbox.push(cb);
    return Response.json(status < 300 ? { job: {} } : { error: { code: "x", message: "refused" } }, {
      status,
    });
  });
  return {
    inbox,
    url: listening.promise.then((port) => `http://127.0.0.1:${port}/functions/v1/video-queue-worker/events`),
    close: () => server.shutdown(),
  };
}

interface Setup {
  renderer: RendererHandle;
  callbacks: Inbox<Callback>;
  logs: Inbox<LogEntry>;
  callbackUrl: string;
  tempRoot: string;
  storageDir: string;
  dispatch(
    body: Record<string, unknown>,
    path?: string,
  ): Promise<{ status: number; body: Record<string, unknown> }>;
  cancel(body: Record<string, unknown>): Promise<{ status: number; body: Record<string, unknown> }>;
  doubt(jobId: string, attempt?: number): Record<string, unknown>;
}

/** Starts a renderer (2 s clips, private dirs) and a callback receiver; always tears both down. */
async function withRenderer(
  options: Partial<RendererOptions> & { respond?: (cb: Callback, index: number) => number },
  run: (s: Setup) => Promise<void>,
): Promise<void> {
  const root = await Deno.makeTempDir({ prefix: "renderer-test-" });
  const tempRoot = join(root, "tmp");
  const storageDir = join(root, "files");
  await Deno.mkdir(tempRoot);
  const callbackServer = startCallbackServer(options.respond);
  const logs = new Inbox<LogEntry>();
  let renderer: RendererHandle | undefined;
  try {
    const callbackUrl = await callbackServer.url;
    renderer = await startRenderer({
      name: "test-renderer",
      storageDir,
      tempRoot,
      clipSeconds: 2,
      cleanupIntervalMs: 0,
      callbackPolicy: { retryDelayMs: 5 },
      log: (entry) => logs.push(entry),
      ...options,
    });
    const post = async (path: string, body: unknown) => {
      const res = await fetch(`${renderer!.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    await run({
      renderer,
      callbacks: callbackServer.inbox,
      logs,
      callbackUrl,
      tempRoot,
      storageDir,
      dispatch: (body, path = "/render") => post(path, body),
      cancel: (body) => post("/render/cancel", body),
      doubt: (jobId, attempt = 1) => ({
        job_id: jobId,
        attempt,
        job_type: "doubt",
        payload: { question: "Why does the Indian monsoon reverse direction between summer and winter?" },
        callback: { url: callbackUrl, token: `token-${jobId}-${attempt}` },
        deadline: new Date(Date.now() + 10 * 60_000).toISOString(),
      }),
    });
  } finally {
    await renderer?.close();
    await callbackServer.close();
    await Deno.remove(root, { recursive: true });
  }
}

async function listDir(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

async function ffprobe(path: string) {
  const out = await new Deno.Command("ffprobe", {
    args: [
      "-v",
      "error",
      "-show_entries",
      "stream=codec_type,codec_name,width,height,pix_fmt:format=duration",
    ]
      .concat(["-of", "json", path]),
  }).output();
  assert.ok(out.success, "ffprobe failed");
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

const forJob = (jobId: string) => (cb: Callback) => cb.body.job_id === jobId;
const isTerminal = (cb: Callback) => cb.body.type === "completed" || cb.body.type === "failed";
const isHeartbeat = (cb: Callback) => cb.body.type === "heartbeat";
/** Lets a few heartbeat intervals pass, to see that nothing more arrives (absence needs time to show). */
const quietFor = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- the happy path ------------------------------------------------------------------------------

Deno.test("renders a doubt: progress 20/60/80, then completed with a real, downloadable 1080x1920 MP4", async () => {
  await withRenderer({}, async ({ renderer, callbacks, dispatch, doubt, tempRoot, storageDir }) => {
    const accepted = await dispatch(doubt("job-ok"));
    assert.equal(accepted.status, 202);
    assert.deepEqual(accepted.body, { accepted: true });

    const completed = await callbacks.waitFor((cb) => cb.body.type === "completed");
    const record = await renderer.waitForRender("job-ok", 1);
    assert.equal(record.state, "completed");
    assert.deepEqual(
      callbacks.items.map((cb) =>
        cb.body.type === "progress" ? `${cb.body.stage}:${cb.body.progress}` : cb.body.type
      ),
      ["generating_screenshot:20", "composing_video:60", "saving_file:80", "completed"],
    );
    for (const cb of callbacks.items) {
      assert.equal(cb.authorization, "Bearer token-job-ok-1");
      assert.equal(cb.body.job_id, "job-ok");
      assert.equal(cb.body.attempt, 1);
    }

    const result = completed.body.result!;
    const filename = result.filename as string;
    assert.match(filename, /^\d{4}-\d{2}-\d{2}_[0-9a-f]{16}\.mp4$/);
    assert.equal(result.video_url, `${renderer.url}/files/${filename}`);
    assert.equal(result.resolution, "1080x1920");
    assert.ok(Math.abs((result.duration_seconds as number) - 2) < 0.2, `duration ${result.duration_seconds}`);
    const expiresInHours = (Date.parse(result.expires_at as string) - Date.now()) / 3600_000;
    assert.ok(expiresInHours > 23.9 && expiresInHours <= 24, `expires in ${expiresInHours} h`);

    const path = join(storageDir, filename);
    const bytes = await Deno.readFile(path);
    assert.equal(result.file_size, bytes.length);
    const probe = await ffprobe(path);
    const video = probe.streams.find((s: { codec_type: string }) => s.codec_type === "video");
    const audio = probe.streams.find((s: { codec_type: string }) => s.codec_type === "audio");
    assert.deepEqual([video.codec_name, video.width, video.height, video.pix_fmt], [
      "h264",
      1080,
      1920,
      "yuv420p",
    ]);
    assert.equal(audio.codec_name, "aac");
    assert.ok(Math.abs(Number(probe.format.duration) - 2) < 0.2);

    const download = await fetch(result.video_url as string);
    assert.equal(download.status, 200);
    assert.equal(download.headers.get("content-type"), "video/mp4");
    assert.deepEqual(new Uint8Array(await download.arrayBuffer()), bytes);

    assert.deepEqual(await listDir(tempRoot), [], "temp files are removed");
    assert.equal(await exists(record.temp_dir!), false);
    const health = await (await fetch(`${renderer.url}/health`)).json();
    assert.deepEqual([health.ok, health.active], [true, 0]);

    // The worker re-dispatching an attempt that is already done gets the result at once (200).
    const again = await dispatch(doubt("job-ok"));
    assert.deepEqual(again, { status: 200, body: { result } });
  });
});

Deno.test("topic shorts and daily current affairs render too, and the bare base URL works as the endpoint", async () => {
  await withRenderer({ clipSeconds: 1 }, async ({ renderer, callbacks, dispatch, callbackUrl }) => {
    const callback = { url: callbackUrl, token: "t" };
    const topic = {
      job_id: "topic",
      attempt: 1,
      job_type: "topic_short",
      payload: { topic: "Fiscal deficit" },
      callback,
    };
    const dailyCa = {
      job_id: "ca",
      attempt: 2,
      job_type: "daily_ca",
      payload: { date: "2026-11-22", headlines: ["RBI holds repo rate", "New Ramsar sites"] },
      callback,
    };
    assert.equal((await dispatch(topic, "/")).status, 202);
    assert.equal((await dispatch(dailyCa)).status, 202);
    for (const [jobId, attempt] of [["topic", 1], ["ca", 2]] as const) {
      assert.equal((await renderer.waitForRender(jobId, attempt)).state, "completed");
      const done = await callbacks.waitFor((cb) => cb.body.job_id === jobId && cb.body.type === "completed");
      assert.equal(done.body.result!.resolution, "1080x1920");
    }
  });
});

Deno.test("without a font the renderer still makes a valid video (a card without text)", async () => {
  await withRenderer({ fontFile: null, clipSeconds: 1 }, async ({ renderer, logs, dispatch, doubt }) => {
    assert.ok(logs.items.some((e) => e.event === "font_missing"));
    await dispatch(doubt("job-no-font"));
    const record = await renderer.waitForRender("job-no-font", 1);
    assert.equal(record.state, "completed");
    assert.equal(record.result!.resolution, "1080x1920");
  });
});

// ---- cancellation, superseded attempts, shutdown -------------------------------------------------

Deno.test("cancel mid-render kills ffmpeg, removes temp files, leaves no video and sends no outcome", async () => {
  // A 120 s clip keeps ffmpeg busy for seconds, so the cancel lands while it encodes.
  await withRenderer(
    { clipSeconds: 120 },
    async ({ renderer, callbacks, dispatch, cancel, doubt, tempRoot, storageDir }) => {
      assert.equal((await dispatch(doubt("job-cancel"))).status, 202);
      await callbacks.waitFor((cb) => cb.body.stage === "composing_video");

      const started = performance.now();
      const cancelled = await cancel({ job_id: "job-cancel", attempt: 1 });
      assert.equal(cancelled.status, 200);
      assert.deepEqual(cancelled.body, {
        cancelled: true,
        job_id: "job-cancel",
        attempt: 1,
        state: "cancelled",
      });
      assert.ok(performance.now() - started < 3000, "cancel does not wait for the encode to finish");

      const record = renderer.getRender("job-cancel", 1)!;
      assert.equal(record.state, "cancelled");
      assert.equal(record.stage, "composing_video");
      assert.equal(await exists(record.temp_dir!), false);
      assert.deepEqual(await listDir(tempRoot), []);
      assert.deepEqual(await listDir(storageDir), []);
      assert.equal(callbacks.items.filter(isTerminal).length, 0);
      assert.equal(renderer.activeRenders(), 0);

      assert.equal(
        (await cancel({ job_id: "job-cancel", attempt: 1 })).body.cancelled,
        false,
        "cancel twice is harmless",
      );
      assert.equal((await cancel({ job_id: "nope", attempt: 1 })).status, 404);
    },
  );
});

Deno.test("a 409 on a callback (attempt no longer current) stops the render and cleans up", async () => {
  const respond = (cb: Callback) => cb.body.stage === "composing_video" ? 409 : 200;
  await withRenderer({ respond }, async ({ renderer, callbacks, dispatch, doubt, tempRoot, storageDir }) => {
    await dispatch(doubt("job-stale"));
    const record = await renderer.waitForRender("job-stale", 1);
    assert.equal(record.state, "superseded");
    assert.deepEqual(await listDir(tempRoot), []);
    assert.deepEqual(await listDir(storageDir), []);
    assert.deepEqual(callbacks.items.map((cb) => cb.body.stage), ["generating_screenshot"]);
  });
});

Deno.test("a 409 on the completed callback removes the video it would have delivered", async () => {
  const respond = (cb: Callback) => cb.body.type === "completed" ? 409 : 200;
  await withRenderer({ respond }, async ({ renderer, dispatch, doubt, storageDir }) => {
    await dispatch(doubt("job-late"));
    assert.equal((await renderer.waitForRender("job-late", 1)).state, "superseded");
    assert.deepEqual(await listDir(storageDir), []);
  });
});

Deno.test("callbacks are retried on 5xx, and still arrive in order", async () => {
  let refusals = 0;
  const respond = (cb: Callback) => cb.body.progress === 60 && refusals++ < 2 ? 503 : 200;
  await withRenderer({ respond }, async ({ renderer, callbacks, dispatch, doubt }) => {
    await dispatch(doubt("job-retry-callback"));
    assert.equal((await renderer.waitForRender("job-retry-callback", 1)).state, "completed");
    assert.equal(refusals, 3); // two refusals, then the third try was let through
    assert.deepEqual(callbacks.items.map((cb) => cb.body.progress ?? cb.body.type), [
      20,
      60,
      80,
      "completed",
    ]);
  });
});

Deno.test("shutting down mid-render reports a retryable failure and cleans up", async () => {
  await withRenderer({ clipSeconds: 120 }, async ({ renderer, callbacks, dispatch, doubt, tempRoot }) => {
    await dispatch(doubt("job-shutdown"));
    await callbacks.waitFor((cb) => cb.body.stage === "composing_video");
    await renderer.close();
    const failed = await callbacks.waitFor(isTerminal);
    assert.deepEqual([failed.body.type, failed.body.retryable], ["failed", true]);
    assert.equal(renderer.getRender("job-shutdown", 1)!.state, "stopped");
    assert.deepEqual(await listDir(tempRoot), []);
  });
});

// ---- heartbeats and long renders ----------------------------------------------------------------

Deno.test("heartbeats arrive at the set interval while a slow render holds, between its stages, and stop after completion", async () => {
  const intervalMs = 250;
  await withRenderer(
    { heartbeatSeconds: intervalMs / 1000, minRenderSeconds: 2, clipSeconds: 1 },
    async ({ renderer, callbacks, logs, dispatch, doubt }) => {
      const dispatched = performance.now();
      assert.equal((await dispatch(doubt("job-long"))).status, 202);
      const completed = await callbacks.waitFor((cb) => cb.body.type === "completed");
      const record = await renderer.waitForRender("job-long", 1);
      assert.equal(record.state, "completed");
      assert.ok(completed.at - dispatched >= 2000, "the render took at least minRenderSeconds");

      const heartbeats = callbacks.items.filter(isHeartbeat);
      for (const cb of heartbeats) {
        assert.deepEqual(cb.body, { job_id: "job-long", attempt: 1, type: "heartbeat" });
        assert.equal(cb.authorization, "Bearer token-job-long-1");
      }
      assert.ok(heartbeats.length >= 6, `${heartbeats.length} heartbeats in a 2 s render, one per 250 ms`);
      const gaps = heartbeats.slice(1).map((cb, i) => cb.at - heartbeats[i].at);
      for (const gap of gaps) {
        assert.ok(gap >= intervalMs * 0.8 && gap <= intervalMs * 2, `heartbeat gaps ${gaps.map(Math.round)}`);
      }
      assert.ok(heartbeats[0].at - dispatched >= intervalMs * 0.8, "the first one comes one interval in");

      // The progress stages still arrive in order, with the heartbeats in between (the video stage holds).
      const order = callbacks.items.map((cb) =>
        cb.body.type === "progress" ? cb.body.progress : cb.body.type
      );
      assert.deepEqual(order.filter((o) => o !== "heartbeat"), [20, 60, 80, "completed"]);
      const holding = order.slice(order.indexOf(60), order.indexOf(80)).filter((o) => o === "heartbeat");
      assert.ok(holding.length >= 4, "heartbeats go on while the video stage holds");
      assert.equal(order.at(-1), "completed", "no heartbeat after the outcome");
      assert.equal(record.heartbeats_sent, heartbeats.length);
      assert.equal(logs.items.filter((e) => e.event === "render_heartbeat").length, heartbeats.length);

      await quietFor(intervalMs * 4);
      assert.equal(callbacks.items.length, order.length, "heartbeats stopped with the render");
    },
  );
});

Deno.test("a 409 on a heartbeat stops the render at once (ffmpeg killed) and cleans up", async () => {
  // A 120 s clip takes ffmpeg ~30 s here; the second heartbeat, 0.6 s in, is refused mid-encode.
  let heartbeatsSeen = 0;
  const respond = (cb: Callback) => isHeartbeat(cb) && heartbeatsSeen++ > 0 ? 409 : 200;
  await withRenderer(
    { respond, heartbeatSeconds: 0.3, clipSeconds: 120 },
    async ({ renderer, callbacks, logs, dispatch, doubt, tempRoot, storageDir }) => {
      const dispatched = performance.now();
      await dispatch(doubt("job-gone"));
      const record = await renderer.waitForRender("job-gone", 1);
      assert.ok(performance.now() - dispatched < 10_000, "the encode did not run to its end");
      assert.deepEqual([record.state, record.stage], ["superseded", "composing_video"]);
      assert.match(record.error!, /refused with 409/);
      assert.equal(await exists(record.temp_dir!), false);
      assert.deepEqual(await listDir(tempRoot), []);
      assert.deepEqual(await listDir(storageDir), []);
      assert.equal(renderer.activeRenders(), 0);
      // What the queue accepted: the first two stages and one heartbeat; no outcome after the 409.
      assert.deepEqual(callbacks.items.map((cb) => cb.body.progress ?? cb.body.type).sort(), [
        20,
        60,
        "heartbeat",
      ]);
      assert.equal(record.heartbeats_sent, 1);
      assert.ok(logs.items.some((e) => e.event === "render_superseded"));

      await quietFor(900);
      assert.equal(heartbeatsSeen, 2, "no heartbeat after the refused one");
    },
  );
});

Deno.test("heartbeats stop when a render is cancelled, and a hung render sends none", async () => {
  await withRenderer(
    { heartbeatSeconds: 0.1, minRenderSeconds: 60, clipSeconds: 1 },
    async ({ renderer, callbacks, dispatch, cancel, doubt }) => {
      await dispatch(doubt("job-stop"));
      await callbacks.waitFor((cb) => isHeartbeat(cb) && callbacks.items.filter(isHeartbeat).length >= 3);
      assert.equal((await cancel({ job_id: "job-stop", attempt: 1 })).body.state, "cancelled");
      const sent = renderer.getRender("job-stop", 1)!.heartbeats_sent;
      await quietFor(500);
      assert.ok(callbacks.items.filter(isHeartbeat).length <= sent + 1, "at most one was in flight");
      assert.equal(renderer.getRender("job-stop", 1)!.heartbeats_sent, sent);
    },
  );
  await withRenderer(
    { heartbeatSeconds: 0.5, faults: { hang: 1 } },
    async ({ renderer, callbacks, logs, dispatch, cancel, doubt }) => {
      await dispatch(doubt("job-silent"));
      await logs.waitFor((e) => e.event === "render_hung");
      await quietFor(1200);
      assert.deepEqual(callbacks.items.map((cb) => cb.body.type), ["progress"], "silent once hung");
      await cancel({ job_id: "job-silent" });
      assert.equal(renderer.getRender("job-silent", 1)!.heartbeats_sent, 0);
    },
  );
});

// ---- storage -------------------------------------------------------------------------------------

Deno.test("expired videos stop being served and are deleted by the cleanup; names cannot escape storage", async () => {
  let clock = Date.now();
  await withRenderer(
    { now: () => new Date(clock) },
    async ({ renderer, callbacks, dispatch, doubt, storageDir }) => {
      await dispatch(doubt("job-ttl"));
      const { body } = await callbacks.waitFor((cb) => cb.body.type === "completed");
      const filename = body.result!.filename as string;
      const url = body.result!.video_url as string;
      await renderer.waitForRender("job-ttl", 1);

      clock += 23 * 3600_000;
      assert.deepEqual(await renderer.cleanupExpiredFiles(), []);
      const head = await fetch(url, { method: "HEAD" });
      assert.equal(head.status, 200);
      await head.body?.cancel();

      clock += 2 * 3600_000; // now 25 h after the render: past the 24 h TTL
      const expired = await fetch(url);
      assert.equal(expired.status, 404, "expired files are not served even before the cleanup runs");
      await expired.body?.cancel();
      assert.deepEqual(await renderer.cleanupExpiredFiles(), [filename]);
      assert.deepEqual(await listDir(storageDir), []);

      for (
        const path of [
          "/files/..%2F..%2Fetc%2Fpasswd",
          "/files/../../etc/passwd",
          "/files/%E0%A4%A",
          `/files/${filename}.json`,
        ]
      ) {
        const res = await fetch(`${renderer.url}${path}`);
        assert.equal(res.status, 404, path);
        await res.body?.cancel();
      }
    },
  );
});

// ---- fault injection -----------------------------------------------------------------------------

Deno.test("permanent fault: failed with retryable false, no temp files, no video", async () => {
  await withRenderer(
    { faults: { permanent: 1 } },
    async ({ renderer, callbacks, dispatch, doubt, tempRoot, storageDir }) => {
      await dispatch(doubt("job-perm"));
      const failed = await callbacks.waitFor(isTerminal);
      assert.equal(failed.body.type, "failed");
      assert.equal(failed.body.retryable, false);
      assert.match(failed.body.error!, /permanent/);
      const record = await renderer.waitForRender("job-perm", 1);
      assert.deepEqual([record.state, record.fault], ["failed", "permanent"]);
      assert.equal(await exists(record.temp_dir!), false);
      assert.deepEqual(await listDir(tempRoot), []);
      assert.deepEqual(await listDir(storageDir), []);
    },
  );
});

Deno.test("retryable fault: failed with retryable true", async () => {
  await withRenderer(
    { faults: { retryable: 1 } },
    async ({ renderer, callbacks, dispatch, doubt, tempRoot }) => {
      await dispatch(doubt("job-flaky"));
      const failed = await callbacks.waitFor(isTerminal);
      assert.deepEqual([failed.body.type, failed.body.retryable], ["failed", true]);
      assert.equal((await renderer.waitForRender("job-flaky", 1)).state, "failed");
      assert.deepEqual(await listDir(tempRoot), []);
    },
  );
});

Deno.test("duplicate fault: the completed callback is delivered twice with the same result", async () => {
  await withRenderer({ faults: { duplicate: 1 } }, async ({ renderer, callbacks, dispatch, doubt }) => {
    await dispatch(doubt("job-dup"));
    const record = await renderer.waitForRender("job-dup", 1);
    assert.equal(record.state, "completed");
    const completed = callbacks.items.filter((cb) => cb.body.type === "completed");
    assert.equal(completed.length, 2);
    assert.deepEqual(completed[0].body, completed[1].body);
  });
});

Deno.test("hang fault: the render never calls back and holds its slot; capacity and duplicate dispatches", async () => {
  await withRenderer(
    { faults: { hang: 1 }, maxConcurrentRenders: 1 },
    async ({ renderer, callbacks, logs, dispatch, cancel, doubt, tempRoot }) => {
      assert.equal((await dispatch(doubt("job-hang"))).status, 202);
      await logs.waitFor((e) => e.event === "render_hung");
      const record = renderer.getRender("job-hang", 1)!;
      assert.deepEqual([record.state, record.fault, record.stage], ["hung", "hang", "generating_screenshot"]);
      assert.equal(callbacks.items.filter(isTerminal).length, 0);
      assert.deepEqual(callbacks.items.map((cb) => cb.body.progress), [20]);

      assert.deepEqual((await dispatch(doubt("job-hang"))).body, { accepted: true, duplicate: true });
      const busy = await dispatch(doubt("job-other"));
      assert.equal(busy.status, 429, "a full renderer asks the worker to retry later");
      assert.equal(renderer.getRender("job-other", 1), undefined);

      await cancel({ job_id: "job-hang" }); // attempt omitted: the latest attempt of the job
      assert.equal(renderer.getRender("job-hang", 1)!.state, "cancelled");
      assert.deepEqual(await listDir(tempRoot), []);
      assert.equal(callbacks.items.filter(forJob("job-hang")).filter(isTerminal).length, 0);
    },
  );
});

Deno.test("a hung render gives up quietly once its deadline (plus grace) has passed", async () => {
  await withRenderer(
    { faults: { hang: 1 }, hangGraceMs: 0 },
    async ({ renderer, callbacks, dispatch, doubt }) => {
      await dispatch({ ...doubt("job-lease"), deadline: new Date(Date.now() - 1000).toISOString() });
      assert.equal((await renderer.waitForRender("job-lease", 1)).state, "abandoned");
      assert.equal(callbacks.items.filter(isTerminal).length, 0);
    },
  );
});

Deno.test("fault picks are reproducible from the seed and follow the shares", () => {
  const config = parseFaultConfig('{"retryable":0.2,"permanent":0.1,"hang":0.05,"duplicate":0.1,"seed":42}');
  const first = createFaultPicker(config);
  const second = createFaultPicker(config);
  const picks = Array.from({ length: 2000 }, () => first());
  assert.deepEqual(picks, Array.from({ length: 2000 }, () => second()));
  const share = (kind: string | null) => picks.filter((p) => p === kind).length / picks.length;
  assert.ok(Math.abs(share("retryable") - 0.2) < 0.04);
  assert.ok(Math.abs(share(null) - 0.55) < 0.05);
  assert.deepEqual(parseFaultConfig(""), {});
  assert.throws(() => parseFaultConfig('{"retryable":0.8,"permanent":0.5}'), /at most 1/);
  assert.throws(() => parseFaultConfig('{"retryabel":0.1}'));
});

// ---- the dispatch contract -----------------------------------------------------------------------

Deno.test("a bad dispatch body is refused with 400 and the contract's error shape; wrong verb 405", async () => {
  await withRenderer({}, async ({ renderer, dispatch, doubt }) => {
    const good = doubt("job-bad");
    const bad: [string, unknown][] = [
      ["not json", "{nope"],
      ["no callback", { ...good, callback: undefined }],
      ["callback url not http", { ...good, callback: { url: "ftp://x", token: "t" } }],
      ["unknown job type", { ...good, job_type: "podcast" }],
      ["doubt without question", { ...good, payload: { topic: "x" } }],
      ["attempt zero", { ...good, attempt: 0 }],
      ["bad deadline", { ...good, deadline: "tomorrow-ish" }],
      ["array body", [good]],
    ];
    for (const [label, body] of bad) {
      const res = await dispatch(body as Record<string, unknown>);
      assert.equal(res.status, 400, label);
      assert.equal((res.body.error as { code: string }).code, "invalid_request", label);
    }
    const res = await dispatch({ ...good, payload: {} });
    assert.deepEqual((res.body.error as { details: unknown }).details, [
      { field: "payload.question", message: "Invalid input: expected string, received undefined" },
    ]);
    const get = await fetch(`${renderer.url}/render`);
    assert.equal(get.status, 405);
    await get.body?.cancel();
    assert.equal(renderer.activeRenders(), 0);
  });
});

// ---- card text -----------------------------------------------------------------------------------

Deno.test("card text: each job type's text, wrapped to fit and shrunk for long questions", () => {
  assert.deepEqual(cardTextForJob("doubt", { question: "Why?" }), { label: "DOUBT", body: "Why?" });
  assert.deepEqual(cardTextForJob("topic_short", { topic: "GST" }), { label: "TOPIC", body: "GST" });
  const ca = cardTextForJob("daily_ca", {
    date: "2026-11-22",
    headlines: Array.from({ length: 10 }, (_, i) => `h${i}`),
  });
  assert.equal(ca.label, "CURRENT AFFAIRS · 2026-11-22");
  assert.deepEqual(ca.body.split("\n").slice(-2), ["• h7", "+2 more"]);

  assert.deepEqual(wrapText("the quick brown fox jumps", 10), ["the quick", "brown fox", "jumps"]);
  assert.deepEqual(wrapText("abcdefghijkl x", 5), ["abcde", "fghij", "kl x"]);
  assert.deepEqual(wrapText("a\nb\tc", 10), ["a", "b c"]);

  assert.equal(layoutBody("short question").fontSize, 64);
  const long = layoutBody("word ".repeat(400));
  assert.equal(long.fontSize, 34);
  assert.ok(long.lines.at(-1)!.endsWith("…"));
  assert.ok(long.lines.every((line) => line.length <= 43));
});

// ---- errors and responses ------------------------------------------------------------------------

Deno.test("errors: a RendererHttpError is answered as it says; anything else is a 500 that reveals nothing", async () => {
  const unexpected: unknown[] = [];
  const note = (err: unknown) => unexpected.push(err);

  const busy = errorResponse(
    new RendererHttpError(429, "rate_limited", "Busy.", undefined, { "retry-after": "5" }),
    note,
  );
  assert.deepEqual(
    [busy.status, busy.headers.get("retry-after"), busy.headers.get("content-type")],
    [429, "5", "application/json"],
  );
  assert.deepEqual(await busy.json(), { error: { code: "rate_limited", message: "Busy." } });

  const details = [{ field: "job_id", message: "Required" }];
  const bad = errorResponse(new RendererHttpError(400, "invalid_request", "Bad body.", details), note);
  assert.deepEqual([bad.status, await bad.json()], [400, {
    error: { code: "invalid_request", message: "Bad body.", details },
  }]);

  const boom = new Error("ENOENT: /secret/path");
  const internal = errorResponse(boom, note);
  assert.deepEqual([internal.status, await internal.json()], [500, {
    error: { code: "internal", message: "The renderer failed unexpectedly." },
  }]);
  assert.deepEqual(unexpected, [boom], "only the unexpected error is handed on (to be logged)");

  const created = json({ accepted: true }, 202);
  assert.deepEqual([created.status, await created.json()], [202, { accepted: true }]);
});

// ---- the process: renderer/main.ts through spawnRenderer ------------------------------------------

Deno.test("spawnRenderer runs renderer/main.ts: flags win over env, it serves HTTP, and closing stops it cleanly", async () => {
  const root = await Deno.makeTempDir({ prefix: "renderer-spawn-test-" });
  const logFile = join(root, "renderer.log");
  const entries: LogEntry[] = [];
  try {
    let url: string;
    {
      await using spawned = await spawnRenderer({
        name: "spawned-1",
        storageDir: join(root, "files"),
        maxConcurrent: 1,
        faults: { retryable: 0.5, seed: 3 },
        heartbeatSeconds: 7,
        env: {
          RENDER_NAME: "from-env",
          RENDER_MAX_CONCURRENT: "7",
          RENDER_CLIP_SECONDS: "3",
          RENDER_HEARTBEAT_SECONDS: "9",
          RENDER_MIN_RENDER_SECONDS: "2.5",
        },
        logFile,
        onLog: (entry) => entries.push(entry),
      });
      url = spawned.url;
      assert.equal(spawned.listening.renderer, "spawned-1");
      assert.equal(spawned.listening.clip_seconds, 3, "an env var applies where no flag is given");
      assert.equal(spawned.listening.heartbeat_seconds, 7);
      assert.equal(spawned.listening.min_render_seconds, 2.5);
      assert.deepEqual(spawned.listening.faults, { retryable: 0.5, seed: 3 });
      assert.equal(spawned.endpointUrl, `${spawned.url}/render`);
      assert.equal(spawned.storageDir, join(root, "files"));
      const health = await (await fetch(`${spawned.endpointUrl}/health`)).json();
      assert.deepEqual(health, { ok: true, name: "spawned-1", active: 0, max_concurrent: 1 });

      const status = await spawned.close();
      assert.deepEqual([status.success, status.signal], [true, null], "SIGTERM: a clean exit");
    } // `await using` closes again: harmless
    assert.deepEqual(entries.map((e) => e.event), ["renderer_stopped"]);
    const logged = (await Deno.readTextFile(logFile)).trim().split("\n").map((l) => JSON.parse(l).event);
    assert.deepEqual(logged, ["renderer_listening", "renderer_stopped"]);
    await assert.rejects(fetch(`${url}/health`), "nothing listens any more");

    await assert.rejects(
      spawnRenderer({ name: "bad-flags", args: ["--clip-seconds=soon"], stderr: "null" }),
      /renderer bad-flags exited before listening \(exit code 1\)/,
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
