// `deno task demo`: the queue at work, end to end, on a fresh machine.
// Starts a local stack and two reference renderers, registers them for every renderer kind, enqueues a
// realistic mix through the public API as a few users, and shows the queue drain live (a redrawn screen
// on a terminal, plain log lines otherwise). Ends with a summary and the produced videos, and stops
// everything it started.
import type { Job, Stats } from "../shared/mod.ts";
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
const tty = Deno.stdout.isTerminal();
const say = (line: string) => console.log(line);

type MixJob = { job_type: string; payload: Record<string, unknown> };

async function main() {
  await using stack = await demoStack(); // stack + two renderers, registered, capacity 4 (Manim 2)
  say(`Dashboard: ${stack.env.API_URL}/dashboard/ (sign in with: deno task stack token demo --admin)`);
  const ids = await enqueueMix(stack, MIX, { users: 4 });
  const final = await watch(stack, ids, tty ? drawScreen : printLines); // pure view(state) → string
  printSummary(final, stack.renderers);
  if (!drained(final)) throw new Error("the queue did not drain in time");
}

/** Enqueues the mix through `POST /enqueue`, round-robin as `users` new users; returns the job ids. */
async function enqueueMix(stack: DemoStack, mix: MixJob[], { users }: { users: number }): Promise<string[]> {
  const tokens: string[] = [];
  for (let i = 0; i < users; i++) tokens.push((await stack.newUser()).token);
  const ids: string[] = [];
  for (const [i, job] of mix.entries()) {
    const { job: created } = await stack.call<{ job: Job }>(tokens[i % users], "enqueue", {
      method: "POST",
      body: JSON.stringify(job),
    });
    ids.push(created.id);
    say(
      `enqueued ${created.job_type.padEnd(11)} ${created.priority.padEnd(6)} → ${
        created.renderer.padEnd(12)
      } position ${created.queue_position ?? "-"}  ~${created.estimated_wait_seconds ?? 0}s`,
    );
  }
  return ids;
}

/** Looks at the queue as the admin every REFRESH_MS and draws each look, until the jobs finish or time runs out. */
async function watch(stack: DemoStack, ids: string[], draw: Draw): Promise<DemoView> {
  const startedAt = new Date();
  let view: DemoView | undefined;
  while (true) {
    const [{ stats }, { jobs }] = await Promise.all([
      stack.call<{ stats: Stats }>(stack.admin.token, "status"),
      stack.call<{ jobs: Job[] }>(stack.admin.token, "status?view=jobs&limit=200"),
    ]);
    const now = { at: new Date(), jobs: jobs.filter((j) => ids.includes(j.id)) };
    const previous = view;
    const events = eventsBetween(previous ?? { at: now.at, jobs: [] }, now);
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
