// Unit tests of what the demo shows (scripts/demo_view.ts): pure functions of views, no stack needed.
// Run: npx -y deno@2 test tests/demo_view_test.ts
import assert from "node:assert/strict";
import type { Job, Stats } from "../shared/mod.ts";
import {
  type DemoView,
  drained,
  drawScreen,
  eventsBetween,
  printLines,
  summary,
} from "../scripts/demo_view.ts";

const T0 = Date.parse("2026-11-22T10:00:00Z");
const at = (seconds: number) => new Date(T0 + seconds * 1000);
const iso = (seconds: number) => at(seconds).toISOString();

function job(id: string, fields: Partial<Job>): Job {
  return {
    id: `${id}-0000-4000-8000-000000000000`,
    job_type: "doubt",
    priority: "high",
    status: "queued",
    renderer: "manim",
    payload: { question: `Question ${id}?` },
    queue_position: null,
    estimated_wait_seconds: null,
    progress: 0,
    stage: null,
    retry_count: 0,
    max_retries: 3,
    next_attempt_at: null,
    error_message: null,
    result: null,
    wait_reason: null,
    estimate_basis: null,
    expires_at: null,
    created_at: iso(0),
    started_at: null,
    completed_at: null,
    updated_at: iso(0),
    ...fields,
  };
}

const stats = (fields: Partial<Stats> = {}): Stats => ({
  queued: 2,
  processing: 2,
  completed_today: 0,
  failed_today: 0,
  cancelled_today: 0,
  expired_today: 0,
  paused: false,
  by_priority: {
    high: { queued: 2, processing: 2 },
    medium: { queued: 0, processing: 0 },
    low: { queued: 0, processing: 0 },
  },
  capacity: { max_concurrent: 4, effective: 4, peak: false, multiplier: 1.5 },
  by_renderer: {
    manim: { processing: 1, limit: 2, paused: false },
    revideo: { processing: 1, limit: 4, paused: false },
  },
  avg_wait_seconds: null,
  avg_processing_seconds: null,
  throughput_last_hour: 0,
  oldest_queued_seconds: null,
  generated_at: iso(0),
  ...fields,
});

const running = job("aaaaaaaa", {
  status: "processing",
  progress: 60,
  stage: "composing_video",
  started_at: iso(2),
});
const dispatched = job("bbbbbbbb", {
  status: "processing",
  job_type: "topic_short",
  priority: "medium",
  renderer: "revideo",
  payload: { topic: "A topic whose name is far too long to fit on one line of the screen" },
  started_at: iso(3),
});
const second = job("cccccccc", { queue_position: 2, estimated_wait_seconds: 95, priority: "low" });
const first = job("dddddddd", {
  job_type: "daily_ca",
  queue_position: 1,
  estimated_wait_seconds: 30,
  payload: { date: "2026-11-22", headlines: ["a", "b"] },
});
const completed = job("eeeeeeee", {
  status: "completed",
  progress: 100,
  started_at: iso(1),
  completed_at: iso(5),
  result: {
    video_url: "http://127.0.0.1:4001/files/2026-11-22_0123456789abcdef.mp4",
    filename: "2026-11-22_0123456789abcdef.mp4",
    resolution: "1080x1920",
    duration_seconds: 5,
    file_size: 81234,
  },
});
const failed = job("ffffffff", {
  status: "failed",
  retry_count: 3,
  error_message: "injected fault",
  started_at: iso(4),
  completed_at: iso(6),
});

function view(seconds: number, fields: Partial<DemoView> = {}): DemoView {
  return {
    startedAt: at(0),
    at: at(seconds),
    stats: stats(),
    jobs: [running, dispatched, second, first, completed, failed],
    total: 6,
    events: [],
    ...fields,
  };
}

Deno.test("the screen shows capacity, renderers, progress bars, positions with estimates, and the latest events", () => {
  const events = Array.from({ length: 10 }, (_, i) => `event ${i}`);
  const screen = drawScreen(view(7, { events }));
  const lines = screen.split("\n");
  assert.ok(screen.startsWith("\x1b[2J\x1b[H"), "clears the screen first");
  assert.equal(lines[0], "\x1b[2J\x1b[H Video queue — 10:00:07   capacity 2/4   queued 2   done 2/6");
  assert.equal(lines[1], " renderers: manim 1/2   revideo 1/4");
  const runningAt = lines.indexOf(" RUNNING");
  assert.equal(
    lines[runningAt + 1],
    `  doubt       ${"█".repeat(12)}${"░".repeat(8)}  60% composing_video        Question aaaaaaaa?`,
  );
  assert.equal(
    lines[runningAt + 2],
    `  topic_short ${"░".repeat(20)}   0% dispatched             ${
      "A topic whose name is far too long to fit on one line of the screen".slice(0, 45)
    }…`,
  );
  const waitingAt = lines.indexOf(" WAITING (position, estimated wait)");
  assert.deepEqual(lines.slice(waitingAt + 1, waitingAt + 3), [
    "  #1   ~  30s  high   daily_ca    2026-11-22 · 2 headlines",
    "  #2   ~  95s  low    doubt       Question cccccccc?",
  ]);
  const eventsAt = lines.indexOf(" EVENTS");
  assert.deepEqual(lines.slice(eventsAt + 1), [...events.slice(-8).map((e) => `  ${e}`), ""]);

  const peak = drawScreen(
    view(7, { stats: stats({ capacity: { ...stats().capacity, effective: 6, peak: true } }) }),
  );
  assert.match(peak.split("\n")[0], /capacity 2\/6 \(peak ×1\.5\)/);
});

Deno.test("eventsBetween reports starts, completions, failures and retries between two looks", () => {
  const before = {
    at: at(0),
    jobs: [job("99999999", {}), job("cccccccc", { status: "processing" }), running],
  };
  const after = {
    at: at(9),
    jobs: [
      job("99999999", { status: "processing", renderer: "revideo" }),
      job("cccccccc", {
        status: "queued",
        retry_count: 1,
        error_message: "render service answered 503",
      }),
      { ...running, status: "completed" as const, completed_at: iso(6.5) },
      failed, // not seen before: no history, no event
    ],
  };
  assert.deepEqual(eventsBetween(before, after), [
    "10:00:09 started   doubt 99999999 on revideo",
    "10:00:09 retry     doubt cccccccc (#1): render service answered 503",
    "10:00:09 completed doubt aaaaaaaa in 4.5 s",
  ]);
  const failing = { at: at(10), jobs: [{ ...failed, status: "processing" as const, retry_count: 2 }] };
  assert.deepEqual(eventsBetween(failing, { at: at(11), jobs: [failed] }), [
    "10:00:11 failed    doubt ffffffff: injected fault",
    "10:00:11 retry     doubt ffffffff (#3): injected fault",
  ]);
  assert.deepEqual(eventsBetween(after, after), [], "nothing changed, nothing to say");
  assert.deepEqual(eventsBetween({ at: at(0), jobs: [] }, after), [], "the first look has no events");
});

Deno.test("plain lines print each event once, and a status line every 3 s of watching", () => {
  const first = view(0.5, { events: ["e1"] });
  const status = "processing 2/4, queued 2, done 2/6; doubt:composing_video 60%, topic_short:dispatched 0%";
  assert.equal(printLines(first), `e1\n10:00:00 ${status}\n`);
  const second = view(2.9, { events: ["e1", "e2", "e3"] });
  assert.equal(printLines(second, first), "e2\ne3\n", "no status line within the same 3 s");
  assert.equal(printLines(view(2.95, { events: second.events }), second), "", "nothing new: nothing printed");
  assert.equal(printLines(view(3.1, { events: second.events }), second), `10:00:03 ${status}\n`);
});

Deno.test("the summary counts outcomes and retries, and names each video's URL and file", () => {
  const final = view(12.4);
  assert.equal(drained(final), false);
  const renderers = [
    { endpointUrl: "http://127.0.0.1:4000/render", storageDir: "/videos/render-0" },
    { endpointUrl: "http://127.0.0.1:4001/render", storageDir: "/videos/render-1" },
  ];
  assert.deepEqual(summary(final, renderers).split("\n"), [
    "",
    "Summary after 12 s: 1 completed, 1 failed, 3 retries, 4 unfinished",
    "  mean wait (enqueue → last start): 2.5 s; mean render (last start → done): 4.0 s",
    "Videos (stored for 24 h):",
    "  doubt       http://127.0.0.1:4001/files/2026-11-22_0123456789abcdef.mp4  " +
    "/videos/render-1/2026-11-22_0123456789abcdef.mp4  1080x1920 5s 81234 bytes",
  ]);
  assert.equal(drained(view(20, { jobs: [completed, failed], total: 2 })), true);
});
