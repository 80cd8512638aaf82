// How honest is `estimated_wait_seconds`? A simulated day of the queue, driven entirely through the real SQL
// API (schema `queue`) with an injected clock (`p_now`): users enqueue in bursts over the day, every enqueue
// and every finished render kicks a worker pass (claim_jobs at that instant), a pg_cron-like tick every
// minute recovers expired leases and claims what waits, renders take times drawn per renderer (lognormal),
// some attempts fail retryably (backoff) or go silent (lease expiry). For each job it compares the estimate
// its enqueue answered with the moment a claim actually started it:
//
//   relative error = |estimated_wait_seconds − actual wait| ÷ max(actual wait, FLOOR_SECONDS)
//
// counted only for jobs enqueued once every renderer has WARM_COMPLETIONS completions (the estimate rests on
// render history by then). The floor keeps jobs that started (almost) at once from dividing by ~0; how many
// samples it touched is reported.
//
// `deno run -A scripts/bench/estimate_day.ts [--seed n] [--jobs n] [--history n]` runs it against SUPABASE_DB_URL (or
// DB_URL) and prints the figures with a breakdown. It truncates `jobs` and puts the queue's configuration
// back when done: use a throw-away or test database.
import postgres from "postgres";
import { seededRandom } from "../../tests/support/seeded_random.ts";
import { resetQueue } from "../../tests/support/reset_queue.ts";

export const FLOOR_SECONDS = 10;
export const WARM_COMPLETIONS = 20;
export const TARGET = { median: 0.25, p90: 0.6 };

// The day: 2031-03-12 in the peak window's time zone, far in the future so that a real-clock pg_cron pass on
// the same database (a dev stack) can never claim, recover or expire a simulated job.
const DAY_START = Date.parse("2031-03-12T00:00:00+05:30");
const HOUR = 3600_000;

// The render farm and its rules (job_queue_config, renderers): a small farm so that bursts queue.
const CONFIG = {
  maxConcurrent: 3,
  peakMultiplier: 2, // 6 slots inside the peak window
  peakStart: "17:00",
  peakEnd: "21:00",
  manimCap: 2,
  revideoCap: 2,
  perUserCap: 2,
  jobTimeoutMinutes: 10,
  retryIntervalMinutes: 5,
};

type JobType = "doubt" | "topic_short" | "daily_ca";
const JOB_TYPES: JobType[] = ["doubt", "topic_short", "daily_ca"];
/** Render time per renderer: lognormal with this mean and log-sd (job types map one to one to renderers). */
const RENDER: Record<JobType, { renderer: string; meanSeconds: number; sigma: number }> = {
  doubt: { renderer: "orchestrator", meanSeconds: 60, sigma: 0.35 },
  topic_short: { renderer: "manim", meanSeconds: 210, sigma: 0.45 },
  daily_ca: { renderer: "revideo", meanSeconds: 140, sigma: 0.3 },
};
/** A render never outlives its lease without a sign of life (renderers send heartbeats; we do not). */
const MAX_RENDER_SECONDS = CONFIG.jobTimeoutMinutes * 60 * 0.9;
const FAILURES = { retryable: 0.05, silent: 0.01 }; // per attempt

// Arrivals: a share of the jobs spread over the day by hour weights, the rest in bursts (local times).
const BACKGROUND = {
  share: 0.34,
  hours: [[0, 6, 0.3], [6, 9, 1], [9, 17, 1.2], [17, 21, 2], [21, 24, 0.8]] as [number, number, number][],
  mix: [0.55, 0.3, 0.15],
};
const BURSTS: { at: number; minutes: number; share: number; mix: number[]; label: string }[] = [
  { at: 6, minutes: 8, share: 0.12, mix: [0.2, 0.1, 0.7], label: "morning current affairs" },
  { at: 10.5, minutes: 6, share: 0.12, mix: [0.6, 0.4, 0], label: "class break" },
  { at: 16 + 50 / 60, minutes: 15, share: 0.16, mix: [0.5, 0.4, 0.1], label: "into the peak window" },
  { at: 19, minutes: 6, share: 0.12, mix: [0.7, 0.3, 0], label: "peak doubts" },
  { at: 20 + 50 / 60, minutes: 15, share: 0.14, mix: [0.4, 0.4, 0.2], label: "out of the peak window" },
];
const USERS = 50;
const FOLLOW_UP = 0.3; // a burst job sent by the same user as one of the last few

export type Sample = {
  jobType: JobType;
  renderer: string;
  enqueuedAt: number;
  estimate: number | null;
  waitReason: string | null;
  basis: string | null;
  position: number | null;
  actualWait: number;
  relativeError: number;
};

export type DayResult = {
  median: number;
  p90: number;
  samples: number;
  /** Warm samples whose actual wait was under FLOOR_SECONDS (their denominator is the floor). */
  floored: number;
  enqueued: number;
  refused: number;
  warmSamples: Sample[];
  coldSamples: number;
  completed: number;
  failed: number;
  retries: number;
  recovered: number;
  passes: number;
  simulatedHours: number;
  elapsedSeconds: number;
};

/** Options of a day: its seed, its jobs, and how many renders per renderer came before it (default none). */
export type DayOptions = { seed?: number; jobs?: number; history?: number };

/** The day's relative estimate error: median and 90th percentile over the warm samples. */
export async function measureEstimateError(
  dbUrl: string,
  opts: DayOptions = {},
): Promise<{ median: number; p90: number; samples: number }> {
  const { median, p90, samples } = await simulateDay(dbUrl, opts);
  return { median, p90, samples };
}

/** An enqueue: by an end user, or (history) by the service role before the day, not a sample. */
type Arrival = { t: number; jobType: JobType; user: string | null };

/**
 * The day's arrivals in time order (distinct instants: claim order never rests on a random job id), after
 * `history` renders per renderer enqueued in the 90 minutes before midnight (render history for the morning).
 */
export function planArrivals(jobs: number, random: () => number, history = 0): Arrival[] {
  const pick = (mix: number[]): JobType => {
    let u = random() * mix.reduce((a, b) => a + b, 0);
    for (let i = 0; i < mix.length; i++) if ((u -= mix[i]) < 0) return JOB_TYPES[i];
    return JOB_TYPES[mix.length - 1];
  };
  const user = (i: number) => `00000000-0000-4000-8000-${(0xe5700000 + i).toString(16).padStart(12, "0")}`;
  const out: Arrival[] = [];
  for (let i = 0; i < history; i++) {
    for (const jobType of JOB_TYPES) {
      out.push({ t: DAY_START - 1.5 * HOUR + i * HOUR / history, jobType, user: null });
    }
  }
  const nBursts = BURSTS.map((b) => Math.round(jobs * b.share));
  const nBackground = jobs - nBursts.reduce((a, b) => a + b, 0);
  const weight = BACKGROUND.hours.reduce((a, [s, e, w]) => a + (e - s) * w, 0);
  for (let i = 0; i < nBackground; i++) {
    let u = random() * weight;
    const [s, e, w] = BACKGROUND.hours.find(([s, e, w]) => (u -= (e - s) * w) < 0) ?? BACKGROUND.hours[0];
    const hour = e - (-u / w); // u is now in (-(e - s) * w, 0]
    out.push({
      t: DAY_START + Math.max(s, hour) * HOUR,
      jobType: pick(BACKGROUND.mix),
      user: user(random() * USERS | 0),
    });
  }
  BURSTS.forEach((b, k) => {
    const recent: string[] = [];
    const times = Array.from({ length: nBursts[k] }, () => b.at * HOUR + random() * b.minutes * 60_000).sort((
      x,
      y,
    ) => x - y);
    for (const t of times) {
      const who = recent.length > 0 && random() < FOLLOW_UP
        ? recent[random() * recent.length | 0]
        : user(random() * USERS | 0);
      recent.push(who);
      if (recent.length > 4) recent.shift();
      out.push({ t: DAY_START + t, jobType: pick(b.mix), user: who });
    }
  });
  out.sort((a, b) => a.t - b.t);
  out.forEach((a, i) => a.t = i === 0 ? Math.round(a.t) : Math.max(Math.round(a.t), out[i - 1].t + 1));
  return out;
}

/** A lognormal render time with the renderer's mean, clipped below its lease. */
function drawRenderSeconds(jobType: JobType, random: () => number): number {
  const { meanSeconds, sigma } = RENDER[jobType];
  const normal = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const seconds = Math.exp(Math.log(meanSeconds) - sigma * sigma / 2 + sigma * normal);
  return Math.min(Math.max(seconds, 5), MAX_RENDER_SECONDS);
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)];
}

type Job = {
  id: string;
  history: boolean;
  jobType: JobType;
  enqueuedAt: number;
  estimate: number | null;
  waitReason: string | null;
  basis: string | null;
  position: number | null;
  warm: boolean;
  startedAt?: number;
};
type Claim = { job_id: string; attempt: number; callback_token: string; renderer: string; job_type: JobType };
type Scheduled =
  | { t: number; kind: "arrive"; arrival: Arrival }
  | { t: number; kind: "complete" | "fail"; claim: Claim }
  | { t: number; kind: "tick" };
type Event = Scheduled & { seq: number }; // seq: events at the same instant run in the order they were planned

/** Runs the day on the database at dbUrl and returns every figure the report prints. */
export async function simulateDay(
  dbUrl: string,
  opts: DayOptions = {},
): Promise<DayResult> {
  const seed = opts.seed ?? 20261202;
  const random = seededRandom(seed);
  const arrivals = planArrivals(opts.jobs ?? 300, random, opts.history ?? 0);
  // One connection: SQL's random() (the retry jitter) is seeded per session, so the day replays exactly.
  const sql = postgres(dbUrl, { max: 1, prepare: false, onnotice: () => {}, fetch_types: false });
  const began = performance.now();
  const iso = (t: number) => new Date(t).toISOString();

  // Each call in its own transaction as its caller, as shared/queue.ts makes them.
  const asCaller = async <T>(
    sub: string | null,
    query: (tx: postgres.TransactionSql) => postgres.PendingQuery<postgres.Row[]>,
  ): Promise<T> =>
    await sql.begin(async (tx) => {
      const claims = sub ? { sub, role: "authenticated" } : { role: "service_role" };
      await tx`select set_config('role', ${sub ? "authenticated" : "service_role"}, true),
                      set_config('request.jwt.claims', ${JSON.stringify(claims)}, true)`;
      const [row] = await query(tx);
      return row.result as T;
    }) as T;

  const jobs = new Map<string, Job>();
  const completions: Record<string, number> = { orchestrator: 0, manim: 0, revideo: 0 };
  const counts = { refused: 0, completed: 0, failed: 0, retries: 0, recovered: 0, passes: 0 };
  let unfinished = 0;
  let seq = 0;
  const events: Event[] = [];
  const schedule = (e: Scheduled) => {
    const ev: Event = { ...e, seq: seq++ };
    let lo = 0, hi = events.length; // keep events sorted by (t, seq): binary insertion
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (events[mid].t <= ev.t) lo = mid + 1;
      else hi = mid;
    }
    events.splice(lo, 0, ev);
  };
  let tickAt: number | null = null;
  const ensureTick = (t: number) => {
    if (tickAt !== null) return;
    tickAt = Math.floor(t / 60_000) * 60_000 + 60_000;
    schedule({ t: tickAt, kind: "tick" });
  };

  const claimPass = async (t: number) => {
    counts.passes++;
    const claims = await asCaller<Claim[]>(
      null,
      (tx) =>
        tx`select queue.claim_jobs(p_worker_id => 'estimate-day', p_now => ${iso(t)}::timestamptz) as result`,
    );
    for (const claim of claims) {
      const job = jobs.get(claim.job_id)!;
      job.startedAt ??= t;
      const seconds = drawRenderSeconds(claim.job_type, random);
      const u = random();
      if (u < FAILURES.silent) continue; // no callback ever: its lease expires, a tick recovers it
      if (u < FAILURES.silent + FAILURES.retryable) {
        schedule({ t: t + Math.round(seconds * (0.3 + 0.4 * random()) * 1000), kind: "fail", claim });
      } else schedule({ t: t + Math.round(seconds * 1000), kind: "complete", claim });
    }
  };

  const saved = await saveQueueSetup(sql);
  try {
    await resetQueue(sql);
    await sql`update public.job_queue_config set max_concurrent_renders = ${CONFIG.maxConcurrent},
                peak_worker_multiplier = ${CONFIG.peakMultiplier}, peak_hour_start = ${CONFIG.peakStart}::time,
                peak_hour_end = ${CONFIG.peakEnd}::time, max_manim_renders = ${CONFIG.manimCap},
                max_processing_per_user = ${CONFIG.perUserCap}, job_timeout_minutes = ${CONFIG.jobTimeoutMinutes},
                retry_interval_minutes = ${CONFIG.retryIntervalMinutes}`;
    await sql`update public.renderers set max_concurrent = ${CONFIG.revideoCap} where name = 'revideo'`;
    const users = [...new Set(arrivals.flatMap((a) => a.user ?? []))];
    await sql`insert into auth.users (id, email)
              select u::uuid, u || '@estimate-day.test' from jsonb_array_elements_text(${sql.json(users)}) u
              on conflict (id) do nothing`;
    await sql`select setseed(${(seed % 1000) / 1000})`;

    for (const arrival of arrivals) schedule({ t: arrival.t, kind: "arrive", arrival });
    while (events.length > 0) {
      const ev = events.shift()!;
      const t = ev.t;
      if (ev.kind === "arrive") {
        const { jobType, user } = ev.arrival;
        try {
          const { job } = await asCaller<{ job: Record<string, unknown> }>(
            user,
            (tx) =>
              tx`select queue.enqueue_job(p_job_type => ${jobType}, p_payload => ${tx.json({ topic: "day" })},
                 p_now => ${iso(t)}::timestamptz) as result`,
          );
          jobs.set(job.id as string, {
            id: job.id as string,
            history: user === null,
            jobType,
            enqueuedAt: t,
            estimate: job.estimated_wait_seconds as number | null,
            waitReason: job.wait_reason as string | null,
            basis: job.estimate_basis as string | null,
            position: job.queue_position as number | null,
            warm: Object.values(completions).every((n) => n >= WARM_COMPLETIONS),
          });
          unfinished++;
        } catch (err) {
          if ((err as { code?: string }).code !== "VQ429") throw err;
          counts.refused++;
        }
      } else if (ev.kind === "complete") {
        const { job_id, attempt, callback_token, renderer } = ev.claim;
        await asCaller(
          null,
          (tx) =>
            tx`select queue.complete_job(p_job_id => ${job_id}::uuid, p_attempt => ${attempt}::int,
               p_token => ${callback_token}, p_result => ${tx.json({ video_url: "https://cdn.test/v.mp4" })},
               p_now => ${iso(t)}::timestamptz) as result`,
        );
        completions[renderer]++;
        if (!jobs.get(job_id)!.history) counts.completed++;
        unfinished--;
      } else if (ev.kind === "fail") {
        const { job_id, attempt, callback_token } = ev.claim;
        const job = await asCaller<{ status: string }>(
          null,
          (tx) =>
            tx`select queue.fail_job(p_job_id => ${job_id}::uuid, p_attempt => ${attempt}::int,
               p_token => ${callback_token}, p_error => 'render crashed', p_retryable => true,
               p_now => ${iso(t)}::timestamptz) as result`,
        );
        if (job.status === "failed") counts.failed++, unfinished--;
        else counts.retries++;
      } else {
        tickAt = null;
        const recovered = await asCaller<{ outcome: string }[]>(
          null,
          (tx) => tx`select queue.recover_expired_attempts(p_now => ${iso(t)}::timestamptz) as result`,
        );
        for (const r of recovered) {
          counts.recovered++;
          if (r.outcome === "failed") counts.failed++, unfinished--;
          else counts.retries++;
        }
      }
      // Every event kicks a worker pass at once (as enqueues, callbacks and the cron minute do).
      await claimPass(t);
      if (unfinished > 0) ensureTick(t);
    }
    if (unfinished !== 0) throw new Error(`the day ended with ${unfinished} unfinished jobs`);
  } finally {
    await restoreQueueSetup(sql, saved);
    await sql.end();
  }

  const all = [...jobs.values()].filter((j) => !j.history);
  const warmSamples = all.filter((j) => j.warm).map((j): Sample => {
    const actualWait = (j.startedAt! - j.enqueuedAt) / 1000;
    return {
      jobType: j.jobType,
      renderer: RENDER[j.jobType].renderer,
      enqueuedAt: j.enqueuedAt,
      estimate: j.estimate,
      waitReason: j.waitReason,
      basis: j.basis,
      position: j.position,
      actualWait,
      relativeError: relativeError(j.estimate, actualWait),
    };
  });
  const errors = warmSamples.map((s) => s.relativeError).sort((a, b) => a - b);
  return {
    median: percentile(errors, 0.5),
    p90: percentile(errors, 0.9),
    samples: errors.length,
    floored: warmSamples.filter((s) => s.actualWait < FLOOR_SECONDS).length,
    enqueued: all.length,
    refused: counts.refused,
    warmSamples,
    coldSamples: all.length - warmSamples.length,
    completed: counts.completed,
    failed: counts.failed,
    retries: counts.retries,
    recovered: counts.recovered,
    passes: counts.passes,
    simulatedHours: (Math.max(...all.map((j) => j.startedAt!)) - DAY_START) / HOUR,
    elapsedSeconds: (performance.now() - began) / 1000,
  };
}

/** |estimate − actual| ÷ max(actual, FLOOR_SECONDS); a missing estimate (paused) counts as infinitely wrong. */
export function relativeError(estimate: number | null, actualWait: number): number {
  if (estimate === null) return Infinity;
  return Math.abs(estimate - actualWait) / Math.max(actualWait, FLOOR_SECONDS);
}

type Saved = { schema: string };

/** Keeps the queue's configuration tables aside (restored by restoreQueueSetup). */
async function saveQueueSetup(sql: postgres.Sql): Promise<Saved> {
  const schema = "vq_estimate_day";
  await sql.begin(async (tx) => {
    await tx.unsafe(`drop schema if exists ${schema} cascade; create schema ${schema};
      create table ${schema}.config as table public.job_queue_config;
      create table ${schema}.renderers as table public.renderers;
      create table ${schema}.endpoints as table public.render_endpoints;
      create table ${schema}.windows as table public.peak_windows;`);
  });
  return { schema };
}

/** Empties the queue, removes the day's users and puts the configuration back as it was. */
async function restoreQueueSetup(sql: postgres.Sql, { schema }: Saved): Promise<void> {
  await sql.begin(async (tx) => {
    await tx.unsafe(`truncate public.jobs cascade;
      delete from auth.users where email like '%@estimate-day.test';
      delete from public.render_endpoints; insert into public.render_endpoints select * from ${schema}.endpoints;
      delete from public.peak_windows; insert into public.peak_windows select * from ${schema}.windows;
      update public.renderers r set max_concurrent = s.max_concurrent, paused = s.paused
        from ${schema}.renderers s where s.name = r.name;
      delete from public.job_queue_config; insert into public.job_queue_config select * from ${schema}.config;
      drop schema ${schema} cascade;`);
  });
}

// Standalone: print the figures and where the error comes from -----------------------------------------------

function summarize(samples: Sample[]) {
  const errors = samples.map((s) => s.relativeError).sort((a, b) => a - b);
  const bias = samples.map((s) => (s.estimate ?? 0) - s.actualWait).sort((a, b) => a - b);
  const waits = samples.map((s) => s.actualWait).sort((a, b) => a - b);
  return {
    samples: samples.length,
    median: percentile(errors, 0.5).toFixed(3),
    p90: percentile(errors, 0.9).toFixed(3),
    "median wait s": percentile(waits, 0.5).toFixed(0),
    "median est − actual s": percentile(bias, 0.5).toFixed(0),
    "over-estimates": samples.filter((s) => (s.estimate ?? 0) > s.actualWait).length,
  };
}

function groupBy(samples: Sample[], key: (s: Sample) => string) {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) groups.set(key(s), [...(groups.get(key(s)) ?? []), s]);
  return Object.fromEntries([...groups].sort().map(([k, v]) => [k, summarize(v)]));
}

if (import.meta.main) {
  const arg = (name: string) => {
    const i = Deno.args.indexOf(`--${name}`);
    return i >= 0 ? Number(Deno.args[i + 1]) : undefined;
  };
  const url = Deno.env.get("SUPABASE_DB_URL") ?? Deno.env.get("DB_URL");
  if (!url) throw new Error("set SUPABASE_DB_URL or DB_URL (a throw-away database: the day truncates jobs)");
  const r = await simulateDay(url, { seed: arg("seed"), jobs: arg("jobs"), history: arg("history") });
  console.log(
    `estimate error over a simulated day: median ${r.median.toFixed(3)} (target ≤ ${TARGET.median}), ` +
      `p90 ${r.p90.toFixed(3)} (target ≤ ${TARGET.p90}), ${r.samples} samples`,
  );
  console.log(
    `${r.enqueued} jobs enqueued (${r.refused} refused), ${r.coldSamples} before every renderer had ` +
      `${WARM_COMPLETIONS} completions (not counted); ${r.floored} samples waited under ${FLOOR_SECONDS} s ` +
      `(denominator floored); ${r.completed} completed, ${r.failed} failed, ${r.retries} retries ` +
      `(${r.recovered} by lease recovery); ${r.passes} claim passes; ${r.simulatedHours.toFixed(1)} h ` +
      `simulated in ${r.elapsedSeconds.toFixed(1)} s`,
  );
  const waited = r.warmSamples.filter((s) => s.actualWait >= FLOOR_SECONDS);
  const waitedErrors = waited.map((s) => s.relativeError).sort((a, b) => a - b);
  console.log(
    `jobs that waited ${FLOOR_SECONDS} s or more: median ${percentile(waitedErrors, 0.5).toFixed(3)}, ` +
      `p90 ${percentile(waitedErrors, 0.9).toFixed(3)}, ${waited.length} samples`,
  );
  console.log("\nby wait_reason at enqueue:");
  console.table(groupBy(r.warmSamples, (s) => s.waitReason ?? "null"));
  console.log("by renderer:");
  console.table(groupBy(r.warmSamples, (s) => s.renderer));
  console.log("by actual wait:");
  console.table(
    groupBy(
      r.warmSamples,
      (s) =>
        s.actualWait < FLOOR_SECONDS
          ? "a: < 10 s"
          : s.actualWait < 120
          ? "b: 10 s – 2 min"
          : s.actualWait < 600
          ? "c: 2 – 10 min"
          : "d: ≥ 10 min",
    ),
  );
}
