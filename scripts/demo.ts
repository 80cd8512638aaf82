// `deno task demo`: the queue at work, end to end, on a fresh machine.
// Starts a local stack and two reference renderers, registers them for every renderer kind, enqueues a
// realistic mix with the typed client (client/) as a few users, and shows the queue drain live (a redrawn
// screen on a terminal, plain log lines otherwise). One user follows their job with waitForCompletion: each
// update it receives is shown with how it came, by Realtime broadcast or by a status read. Ends with a
// summary and the produced videos, and stops everything it started.
import { createClient } from "@supabase/supabase-js";
import { createQueueClient, type Job, type QueueClient, type UpdateSource } from "../client/mod.ts";
import type { SpawnedRenderer } from "../renderer/spawn.ts";
import { type DemoStack, demoStack } from "./demo_stack.ts";
import {
  type DemoView,
  drained,
  type Draw,
  drawScreen,
  eventsBetween,
  printLines,
  summary,
} from "./demo_view.ts";

const TIMEOUT_MS = 6 * 60_000;
const REFRESH_MS = 500;
/** The job whose user follows it with waitForCompletion: the last doubt, which waits behind the others first. */
const FOLLOWED = 12;
const tty = Deno.stdout.isTerminal();
const say = (line: string) => console.log(line);

type MixJob = Parameters<QueueClient["enqueue"]>[0];

async function main() {
  await using stack = await demoStack(); // stack + two renderers, registered, capacity 4 (Manim 2)
  say(`Dashboard: ${stack.env.API_URL}/dashboard/ (sign in with: deno task stack token demo --admin)`);
  const users = await Promise.all(
    [1, 2, 3, 4].map(async () => queueAs(stack, (await stack.newUser()).token)),
  );
  const ids = await enqueueMix(users, MIX);
  const followed = follow(users[FOLLOWED % users.length], ids[FOLLOWED]);
  const final = await watch(stack, ids, tty ? drawScreen : printLines, followed.take); // pure view(state) → string
  printSummary(final, stack.renderers);
  say(await followed.summary());
  if (!drained(final)) throw new Error("the queue did not drain in time");
}

/** The typed client as `token`'s user: functions and Realtime both carry the token. */
function queueAs(stack: DemoStack, token: string): QueueClient {
  const supabase = createClient(stack.env.SUPABASE_URL, stack.env.PUBLISHABLE_KEY, {
    accessToken: () => Promise.resolve(token),
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  return createQueueClient(supabase);
}

/** Enqueues the mix through `POST /enqueue`, round-robin as the users; returns the job ids. */
async function enqueueMix(users: QueueClient[], mix: MixJob[]): Promise<string[]> {
  const ids: string[] = [];
  for (const [i, request] of mix.entries()) {
    const { job } = await users[i % users.length].enqueue(request);
    ids.push(job.id);
    say(
      `enqueued ${job.job_type.padEnd(11)} ${job.priority.padEnd(6)} → ${job.renderer.padEnd(12)} position ${
        job.queue_position ?? "-"
      }  ~${job.estimated_wait_seconds ?? 0}s`,
    );
  }
  return ids;
}

/**
 * The user's own view of one job: waitForCompletion, each update as an event line saying how it came.
 * `take` hands over the lines not yet shown; `summary` waits for the end and counts the updates by source.
 */
function follow(queue: QueueClient, jobId: string) {
  const lines: string[] = [];
  const counts: Record<UpdateSource, number> = { realtime: 0, status: 0 };
  const how = { realtime: "by Realtime broadcast", status: "by status read" };
  const done = queue.waitForCompletion(jobId, {
    onProgress: (job, { source }) => {
      counts[source] += 1;
      lines.push(`${new Date().toISOString().slice(11, 19)} followed  ${describe(job)}  ← ${how[source]}`);
    },
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  done.catch(() => {}); // reported by summary()
  return {
    take: () => lines.splice(0),
    summary: async () => {
      const job = await done.catch((err) => err as Error);
      const outcome = job instanceof Error ? `did not finish (${job.message})` : job.status;
      return `Followed ${jobId.slice(0, 8)} with waitForCompletion: ${outcome}; ${counts.realtime} updates ` +
        `arrived by Realtime broadcast, ${counts.status} by status reads.`;
    },
  };
}

/** One state of a followed job, as its user would see it. */
function describe(job: Job): string {
  const name = `${job.job_type} ${job.id.slice(0, 8)}`;
  if (job.status === "queued") {
    return `${name} queued #${job.queue_position} ~${
      job.estimated_wait_seconds ?? "?"
    }s (${job.wait_reason})`;
  }
  if (job.status === "processing") return `${name} ${job.stage ?? "dispatched"} ${job.progress}%`;
  return `${name} ${job.status}${job.result ? ` ${job.result.video_url}` : ""}`;
}

/**
 * Looks at the queue as the admin every REFRESH_MS and draws each look, with the followed job's updates among
 * the events, until the jobs finish or time runs out.
 */
async function watch(
  stack: DemoStack,
  ids: string[],
  draw: Draw,
  followed: () => string[],
): Promise<DemoView> {
  const admin = queueAs(stack, stack.admin.token).admin;
  const startedAt = new Date();
  let view: DemoView | undefined;
  while (true) {
    const [stats, jobs] = await Promise.all([admin.stats(), admin.listJobs({ limit: 200 })]);
    const now = { at: new Date(), jobs: jobs.filter((j) => ids.includes(j.id)) };
    const previous = view;
    const events = [...followed(), ...eventsBetween(previous ?? { at: now.at, jobs: [] }, now)];
    view = { startedAt, ...now, stats, total: ids.length, events: [...previous?.events ?? [], ...events] };
    await write(draw(view, previous));
    if (drained(view) || Date.now() - startedAt.getTime() >= TIMEOUT_MS) return view;
    await new Promise((r) => setTimeout(r, REFRESH_MS)); // the view's refresh rate, not synchronization
  }
}

function printSummary(final: DemoView, renderers: SpawnedRenderer[]): void {
  say(summary(final, renderers));
}

async function write(text: string): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  for (let written = 0; written < bytes.length;) written += await Deno.stdout.write(bytes.subarray(written));
}

// ---- the mix: 14 jobs of the three types, as exam-prep users would ask for them -----------------------

const MIX: MixJob[] = [
  {
    job_type: "daily_ca",
    payload: {
      date: "2026-11-22",
      headlines: [
        "RBI holds repo rate at 6.5%",
        "ISRO tests reusable launch vehicle",
        "Supreme Court on electoral bonds",
      ],
    },
  },
  {
    job_type: "topic_short",
    payload: { topic: "Fundamental Rights vs Directive Principles", duration_seconds: 60 },
  },
  { job_type: "doubt", payload: { question: "What is Article 370 and why was it abrogated?" } },
  { job_type: "topic_short", payload: { topic: "Monsoon mechanism in India", duration_seconds: 45 } },
  {
    job_type: "doubt",
    payload: { question: "Difference between Lok Sabha and Rajya Sabha money bill powers?" },
  },
  {
    job_type: "daily_ca",
    payload: { date: "2026-11-21", headlines: ["G20 summit outcomes", "New tiger reserve notified"] },
  },
  {
    job_type: "doubt",
    payload: { question: "How does the Finance Commission divide taxes between states?" },
  },
  { job_type: "topic_short", payload: { topic: "Basics of the Indian Constitution's Preamble" } },
  {
    job_type: "doubt",
    payload: { question: "Why is the Governor's discretion controversial?", language: "en" },
  },
  {
    job_type: "topic_short",
    payload: { topic: "Plate tectonics and Himalayan formation", duration_seconds: 30 },
  },
  { job_type: "doubt", payload: { question: "What did the Kesavananda Bharati case decide?" } },
  { job_type: "topic_short", payload: { topic: "Green revolution: gains and costs" } },
  { job_type: "doubt", payload: { question: "Explain the anti-defection law in simple words." } },
  { job_type: "daily_ca", payload: { date: "2026-11-20" } },
];

if (import.meta.main) await main();
