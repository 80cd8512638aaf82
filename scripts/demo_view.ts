// What `deno task demo` shows, as pure functions of what it has seen (no I/O, no clock of their own):
// the live screen for a terminal, plain lines otherwise, the events between two looks, and the summary.
import type { Job, JobResult, Stats } from "../shared/mod.ts";

/** One look at the queue while the demo watches it. */
export interface DemoView {
  /** When the demo started watching. */
  startedAt: Date;
  /** When this look was taken. */
  at: Date;
  /** `GET /status` (admin). */
  stats: Stats;
  /** The demo's jobs, as `GET /status?view=jobs` lists them (newest first). */
  jobs: Job[];
  /** How many jobs the demo enqueued. */
  total: number;
  /** Every event so far, oldest first (see eventsBetween). */
  events: string[];
}

/** What two looks are compared by. */
export type Snapshot = Pick<DemoView, "at" | "jobs">;

/** Turns a view into text to write; `previous` is the view written before (none the first time). */
export type Draw = (view: DemoView, previous?: DemoView) => string;

const FINISHED: readonly Job["status"][] = ["completed", "failed", "cancelled"];
const CLEAR_SCREEN = "\x1b[2J\x1b[H";
const WAITING_SHOWN = 10;
const EVENTS_SHOWN = 8;
/** Plain output adds a status line each time this much watching time has passed. */
const STATUS_LINE_EVERY_MS = 3000;

export const isFinished = (job: Job) => FINISHED.includes(job.status);

/** Every job the demo enqueued has finished. */
export const drained = (view: DemoView) => view.jobs.filter(isFinished).length === view.total;

/**
 * What happened between two looks, one line each: jobs that started, completed or failed, and retries
 * (a job whose retry count went up). Jobs not in `before` have no history yet, so no events.
 */
export function eventsBetween(before: Snapshot, after: Snapshot): string[] {
  const time = clock(after.at);
  const earlier = new Map(before.jobs.map((job) => [job.id, job]));
  const events: string[] = [];
  for (const job of after.jobs) {
    const was = earlier.get(job.id);
    if (!was) continue;
    const name = `${job.job_type} ${job.id.slice(0, 8)}`;
    if (was.status !== job.status) {
      if (job.status === "processing") events.push(`${time} started   ${name} on ${job.renderer}`);
      if (job.status === "completed") {
        events.push(`${time} completed ${name} in ${seconds(job.started_at, job.completed_at).toFixed(1)} s`);
      }
      if (job.status === "failed") events.push(`${time} failed    ${name}: ${job.error_message}`);
    }
    if (job.retry_count > was.retry_count) {
      events.push(`${time} retry     ${name} (#${job.retry_count}): ${job.error_message ?? "render failed"}`);
    }
  }
  return events;
}

/** The full screen for a terminal: capacity, running jobs with progress bars, waiting jobs, latest events. */
export function drawScreen(view: DemoView): string {
  const { stats } = view;
  const cap = stats.capacity;
  const running = view.jobs.filter((j) => j.status === "processing");
  const waiting = view.jobs.filter((j) => j.status === "queued")
    .sort((a, b) => (a.queue_position ?? 1e9) - (b.queue_position ?? 1e9));
  const renderers = Object.entries(stats.by_renderer as Record<string, RendererStats>)
    .map(([name, r]) => `${name} ${r.processing}/${r.limit ?? "∞"}`);
  const lines = [
    `${CLEAR_SCREEN} Video queue — ${clock(view.at)}   capacity ${stats.processing}/${cap.effective}${
      cap.peak ? ` (peak ×${cap.multiplier})` : ""
    }   queued ${stats.queued}   done ${doneCount(view)}/${view.total}`,
    ` renderers: ${renderers.join("   ")}`,
    "",
    " RUNNING",
    ...running.map((j) =>
      `  ${j.job_type.padEnd(11)} ${bar(j.progress)} ${String(j.progress).padStart(3)}% ${
        (j.stage ?? "dispatched").padEnd(22)
      } ${short(j)}`
    ),
    "",
    " WAITING (position, estimated wait)",
    ...waiting.slice(0, WAITING_SHOWN).map((j) =>
      `  #${String(j.queue_position).padEnd(3)} ~${String(j.estimated_wait_seconds).padStart(4)}s  ${
        j.priority.padEnd(6)
      } ${j.job_type.padEnd(11)} ${short(j)}`
    ),
    "",
    " EVENTS",
    ...view.events.slice(-EVENTS_SHOWN).map((e) => `  ${e}`),
  ];
  return lines.join("\n") + "\n";
}

/** Plain lines for a log: the events since `previous`, and a status line every 3 s of watching. */
export function printLines(view: DemoView, previous?: DemoView): string {
  const lines = view.events.slice(previous?.events.length ?? 0);
  const period = (v: DemoView) => Math.floor((v.at.getTime() - v.startedAt.getTime()) / STATUS_LINE_EVERY_MS);
  if (!previous || period(view) > period(previous)) {
    const { stats } = view;
    const running = view.jobs.filter((j) => j.status === "processing")
      .map((j) => `${j.job_type}:${j.stage ?? "dispatched"} ${j.progress}%`);
    lines.push(
      `${
        clock(view.at)
      } processing ${stats.processing}/${stats.capacity.effective}, queued ${stats.queued}, done ${
        doneCount(view)
      }/${view.total}; ${running.join(", ")}`,
    );
  }
  return lines.map((line) => `${line}\n`).join("");
}

/** The closing report: counts, mean wait and render time, and where each video is (URL and file). */
export function summary(view: DemoView, renderers: { endpointUrl: string; storageDir: string }[]): string {
  const { jobs } = view;
  const completed = jobs.filter((j) => j.status === "completed");
  const failed = jobs.filter((j) => j.status === "failed");
  const retries = jobs.reduce((n, j) => n + j.retry_count, 0);
  const unfinished = view.total - completed.length - failed.length;
  const waits = jobs.map((j) => seconds(j.created_at, j.started_at)).filter(Number.isFinite);
  const renders = completed.map((j) => seconds(j.started_at, j.completed_at));
  const watched = (view.at.getTime() - view.startedAt.getTime()) / 1000;
  const lines = [
    "",
    `Summary after ${watched.toFixed(0)} s: ${completed.length} completed, ${failed.length} failed, ` +
    `${retries} retries, ${unfinished} unfinished`,
    `  mean wait (enqueue → last start): ${mean(waits)} s; mean render (last start → done): ${
      mean(renders)
    } s`,
    `Videos (stored for 24 h):`,
    ...completed.map((j) => {
      const r: Partial<JobResult> = j.result ?? {};
      const owner = renderers.find((x) =>
        String(r.video_url ?? "").startsWith(new URL(x.endpointUrl).origin)
      );
      return `  ${j.job_type.padEnd(11)} ${r.video_url}  ${
        owner ? `${owner.storageDir}/${r.filename}` : ""
      }  ` +
        `${r.resolution} ${r.duration_seconds}s ${r.file_size} bytes`;
    }),
  ];
  return lines.join("\n");
}

type RendererStats = { processing: number; limit: number | null };

function doneCount(view: DemoView): number {
  return view.jobs.filter(isFinished).length;
}

function bar(progress: number, width = 20): string {
  const filled = Math.round((progress / 100) * width);
  return "█".repeat(filled) + "░".repeat(width - filled);
}

/** The job's text, cut to fit a line. */
function short(job: Job): string {
  const p = job.payload;
  const text = String(
    p.question ?? p.topic ??
      `${p.date}${Array.isArray(p.headlines) ? ` · ${p.headlines.length} headlines` : ""}`,
  );
  return text.length > 46 ? text.slice(0, 45) + "…" : text;
}

/** HH:MM:SS (UTC). */
const clock = (at: Date) => at.toISOString().slice(11, 19);

const seconds = (from: string | null, to: string | null) =>
  from && to ? (Date.parse(to) - Date.parse(from)) / 1000 : NaN;

const mean = (xs: number[]) => xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1) : "-";
