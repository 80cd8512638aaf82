// `deno task demo`: the queue at work, end to end, on a fresh machine.
// Starts a local stack and two reference renderers, registers them for every renderer kind, enqueues a
// realistic mix through the public API as a few users, and shows the queue drain live (a redrawn screen
// on a terminal, plain log lines otherwise). Ends with a summary and the produced videos, and stops
// everything it started.
import postgres from "postgres";
import { PROJECT_ROOT, stackDir, startStack, stopStack } from "./stack/stack.ts";
import { createUser, type LocalUser } from "./stack/tokens.ts";
import type { Job } from "../shared/mod.ts";

const STACK = "demo";
const CLIP_SECONDS = Number(Deno.env.get("DEMO_CLIP_SECONDS") ?? 5);
const TIMEOUT_MS = 6 * 60_000;
const tty = Deno.stdout.isTerminal();
const say = (line: string) => console.log(line);

const MIX: { job_type: string; payload: Record<string, unknown> }[] = [
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

interface Renderer {
  name: string;
  endpointUrl: string;
  storageDir: string;
  child: Deno.ChildProcess;
}

async function startRendererProcess(name: string, faults: string): Promise<Renderer> {
  const storageDir = `${stackDir(STACK)}/videos/${name}`;
  await Deno.mkdir(storageDir, { recursive: true });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "--config",
      `${PROJECT_ROOT}/deno.json`,
      `${PROJECT_ROOT}/renderer/main.ts`,
      "--port",
      "0",
      "--name",
      name,
      "--storage-dir",
      storageDir,
      "--clip-seconds",
      String(CLIP_SECONDS),
      "--faults",
      faults,
      "--max-concurrent",
      "3",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const log = await Deno.open(`${stackDir(STACK)}/${name}.log`, { create: true, write: true, append: true });
  const lines = child.stdout.pipeThrough(new TextDecoderStream());
  const reader = lines.getReader();
  let buffered = "";
  while (true) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`renderer ${name} exited before listening`);
    await log.write(new TextEncoder().encode(value));
    buffered += value;
    const listening = buffered.split("\n").map((l) => l.trim()).filter(Boolean)
      .map((l) => JSON.parse(l)).find((e) => e.event === "renderer_listening");
    if (listening) {
      // Keep draining its log lines to a file so the renderer never blocks on a full pipe.
      (async () => {
        for (let r = await reader.read(); !r.done; r = await reader.read()) {
          await log.write(new TextEncoder().encode(r.value));
        }
        log.close();
      })();
      return { name, endpointUrl: listening.endpoint_url ?? `${listening.url}/render`, storageDir, child };
    }
  }
}

function bar(progress: number, width = 20): string {
  const filled = Math.round((progress / 100) * width);
  return "█".repeat(filled) + "░".repeat(width - filled);
}

const short = (job: Job) => {
  const p = job.payload;
  const text = String(
    p.question ?? p.topic ??
      `${p.date}${Array.isArray(p.headlines) ? ` · ${p.headlines.length} headlines` : ""}`,
  );
  return text.length > 46 ? text.slice(0, 45) + "…" : text;
};
const clock = () => new Date().toISOString().slice(11, 19);
const secs = (a: string | null, b: string | null) => a && b ? (Date.parse(b) - Date.parse(a)) / 1000 : NaN;

async function main() {
  say(`Starting the local stack (Postgres + pg_cron, migrations, functions) …`);
  const env = await startStack({ name: STACK, exitWithParent: Deno.pid, log: (l) => say(`  [stack] ${l}`) });
  const sql = postgres(env.SUPABASE_DB_URL, { max: 2, prepare: false, onnotice: () => {} });
  const renderers: Renderer[] = [];
  try {
    // Retryable faults show retries; a short retry interval keeps the demo to a few minutes.
    renderers.push(await startRendererProcess("render-1", JSON.stringify({ retryable: 0.15, seed: 7 })));
    renderers.push(await startRendererProcess("render-2", JSON.stringify({ retryable: 0.15, seed: 11 })));
    for (const r of renderers) {
      for (const kind of ["manim", "revideo", "orchestrator"]) {
        await sql`insert into render_endpoints (renderer, url) values (${kind}, ${r.endpointUrl})`;
      }
    }
    await sql`update job_queue_config set max_concurrent_renders = 4, max_manim_renders = 2,
              retry_interval_minutes = 0 where id = (select id from job_queue_config limit 1)`;
    say(
      `Two renderers registered for manim, revideo and orchestrator: ${
        renderers.map((r) => r.endpointUrl).join(", ")
      }`,
    );
    say(`Capacity: 4 renders at once (×peak multiplier inside peak hours), at most 2 Manim.`);

    const users: LocalUser[] = [];
    for (let i = 0; i < 4; i++) users.push(await createUser(env, sql));
    const admin = await createUser(env, sql, { admin: true });
    const call = async (token: string, path: string, init: RequestInit = {}) => {
      const res = await fetch(`${env.FUNCTIONS_URL}/${path}`, {
        ...init,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      });
      const body = await res.json();
      if (!res.ok) throw new Error(`${path}: ${res.status} ${JSON.stringify(body.error)}`);
      return body;
    };

    const ids: string[] = [];
    for (const [i, job] of MIX.entries()) {
      const { job: created } = await call(users[i % users.length].token, "enqueue", {
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

    const seen = new Map<string, Job>();
    const started = Date.now();
    let lastPlain = 0;
    let jobs: Job[] = [];
    const events: string[] = [];
    while (Date.now() - started < TIMEOUT_MS) {
      const [{ stats }, list] = await Promise.all([
        call(admin.token, "status"),
        call(admin.token, "status?view=jobs&limit=200"),
      ]);
      jobs = (list.jobs as Job[]).filter((j) => ids.includes(j.id));
      for (const job of jobs) {
        const before = seen.get(job.id);
        const name = `${job.job_type} ${job.id.slice(0, 8)}`;
        if (before && before.status !== job.status) {
          if (job.status === "processing") events.push(`${clock()} started   ${name} on ${job.renderer}`);
          if (job.status === "completed") {
            events.push(
              `${clock()} completed ${name} in ${secs(job.started_at, job.completed_at).toFixed(1)} s`,
            );
          }
          if (job.status === "failed") events.push(`${clock()} failed    ${name}: ${job.error_message}`);
        }
        if (before && job.retry_count > before.retry_count) {
          events.push(
            `${clock()} retry     ${name} (#${job.retry_count}): ${job.error_message ?? "render failed"}`,
          );
        }
        seen.set(job.id, job);
      }
      const running = jobs.filter((j) => j.status === "processing");
      const waiting = jobs.filter((j) => j.status === "queued").sort((a, b) =>
        (a.queue_position ?? 1e9) - (b.queue_position ?? 1e9)
      );
      const done = jobs.filter((j) => ["completed", "failed", "cancelled"].includes(j.status));
      const cap = stats.capacity;
      if (tty) {
        const out = [
          `\x1b[2J\x1b[H Video queue — ${clock()}   capacity ${stats.processing}/${cap.effective}${
            cap.peak ? ` (peak ×${cap.multiplier})` : ""
          }   queued ${stats.queued}   done ${done.length}/${ids.length}`,
          ` renderers: ${
            Object.entries(stats.by_renderer).map(([k, v]) =>
              `${k} ${(v as { processing: number }).processing}/${
                (v as { limit: number | null }).limit ?? "∞"
              }`
            ).join("   ")
          }`,
          "",
          " RUNNING",
          ...running.map((j) =>
            `  ${j.job_type.padEnd(11)} ${bar(j.progress)} ${String(j.progress).padStart(3)}% ${
              (j.stage ?? "dispatched").padEnd(22)
            } ${short(j)}`
          ),
          "",
          " WAITING (position, estimated wait)",
          ...waiting.slice(0, 10).map((j) =>
            `  #${String(j.queue_position).padEnd(3)} ~${String(j.estimated_wait_seconds).padStart(4)}s  ${
              j.priority.padEnd(6)
            } ${j.job_type.padEnd(11)} ${short(j)}`
          ),
          "",
          " EVENTS",
          ...events.slice(-8).map((e) => `  ${e}`),
        ];
        await Deno.stdout.write(new TextEncoder().encode(out.join("\n") + "\n"));
      } else {
        for (const e of events.splice(0)) say(e);
        if (Date.now() - lastPlain > 3000) {
          lastPlain = Date.now();
          say(
            `${clock()} processing ${stats.processing}/${cap.effective}, queued ${stats.queued}, done ${done.length}/${ids.length}; ` +
              running.map((j) => `${j.job_type}:${j.stage ?? "dispatched"} ${j.progress}%`).join(", "),
          );
        }
      }
      if (done.length === ids.length) break;
      await new Promise((r) => setTimeout(r, 500)); // the view's refresh rate, not synchronization
    }

    const completed = jobs.filter((j) => j.status === "completed");
    const failed = jobs.filter((j) => j.status === "failed");
    const mean = (xs: number[]) => xs.length ? (xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(1) : "-";
    say("");
    say(
      `Summary after ${
        ((Date.now() - started) / 1000).toFixed(0)
      } s: ${completed.length} completed, ${failed.length} failed, ` +
        `${jobs.reduce((n, j) => n + j.retry_count, 0)} retries, ${
          ids.length - completed.length - failed.length
        } unfinished`,
    );
    say(
      `  mean wait (enqueue → last start): ${
        mean(jobs.map((j) => secs(j.created_at, j.started_at)).filter(Number.isFinite))
      } s; ` +
        `mean render (last start → done): ${
          mean(completed.map((j) => secs(j.started_at, j.completed_at)))
        } s`,
    );
    say(`Videos (stored for 24 h):`);
    for (const j of completed) {
      const r = j.result ?? {};
      const owner = renderers.find((x) =>
        String(r.video_url ?? "").startsWith(new URL(x.endpointUrl).origin)
      );
      say(
        `  ${j.job_type.padEnd(11)} ${r.video_url}  ${
          owner ? `${owner.storageDir}/${r.filename}` : ""
        }  ${r.resolution} ${r.duration_seconds}s ${r.file_size} bytes`,
      );
    }
    if (completed.length + failed.length < ids.length) throw new Error("the queue did not drain in time");
  } finally {
    for (const r of renderers) {
      try {
        r.child.kill("SIGTERM");
      } catch { /* already gone */ }
      await r.child.status;
    }
    await sql.end();
    await stopStack(STACK);
    say(`Stopped the renderers and the stack (videos were in ${stackDir(STACK)}/videos).`);
  }
}

await main();
