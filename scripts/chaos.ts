// Chaos run of the whole queue, over HTTP only: many users enqueue a seeded mix of jobs while fake render
// services (Deno.serve on 127.0.0.1) inject every fault the render protocol knows, several worker loops run
// passes at once beside the stack's own kicks, Postgres is restarted once and the functions process is
// killed once. The queue is driven only through the functions; results are read from the tables
// (public.jobs, job_attempts, render_endpoints, job_queue_config) with a superuser connection.
//
//   deno task chaos [--jobs 2000] [--seed 7] [--workers 3]   a fresh stack of its own; prints the report
//   runChaos({ env, db, jobs: 300 })                        the same against a running stack (tests/chaos_test.ts)
//
// What is injected is chosen per job from the seed (a "plan": one step per dispatch the job receives) and
// recorded per attempt, so the expected outcome of every attempt and the expected retry count of every job
// are known. Checked while it runs (every ~100 ms) and at the end: see VIOLATION_KINDS.
import { seededRandom } from "../tests/support/seeded_random.ts";
import { eventually } from "../tests/support/eventually.ts";
import postgres from "postgres";
import {
  killPlatform,
  restartPostgres,
  stackDir,
  type StackEnv,
  startStack,
  stopStack,
  waitForPlatform,
} from "./stack/stack.ts";
import { createUser, type LocalUser } from "./stack/tokens.ts";

// Options and report ------------------------------------------------------------------------------------------

export interface ChaosOptions {
  /** The stack's env (FUNCTIONS_URL, API_URL, SECRET_KEY, SIGNING_KEY_PATH, STACK_DIR). */
  env: StackEnv;
  /** A superuser connection (the harness's `db`). */
  db: postgres.Sql;
  /** Jobs to enqueue (distinct idempotency keys). */
  jobs: number;
  seed?: number;
  /** End users enqueuing; default one per 25 jobs (at least 4). */
  users?: number;
  /** Concurrent worker-pass loops besides the stack's own kicks. */
  workerLoops?: number;
  /** Render endpoints per renderer (plus one dead endpoint for the orchestrator). */
  endpointsPerRenderer?: number;
  /** Enqueue pace, jobs per second over all users. */
  enqueuePerSecond?: number;
  /** Dispatches that hang past the worker's dispatch time-out (each costs a pass lane 10 s). */
  hangs?: number;
  /** Heartbeat callbacks, and every callback of the current attempt extending its lease (API.md); default on. */
  heartbeats?: boolean;
  /** Restart Postgres once / SIGKILL the functions process once (via scripts/stack/stack.ts). */
  restartPostgres?: boolean;
  killPlatform?: boolean;
  /** The longest a 503's Retry-After is honoured, in ms. */
  maxRetryAfterMs?: number;
  /** How long to wait for every job to finish once all are enqueued. */
  drainTimeoutMs?: number;
  /** Polls `check` until it returns a value (the harness's `eventually`); a local one by default. */
  eventually?: <T>(
    what: string,
    check: () => Promise<T | undefined | false>,
    timeoutMs?: number,
  ) => Promise<T>;
  log?: (line: string) => void;
  /** Replaces the stack's restartPostgres / killPlatform (tests of this module). */
  infra?: InfraFaults;
}

export interface InfraFaults {
  /** Restarts Postgres and resolves once it accepts connections again. */
  restartPostgres?: (dir: string) => Promise<unknown>;
  /** SIGKILLs the functions process and resolves at once with what `platformBack` needs. */
  killPlatform?: (dir: string) => Promise<unknown>;
  /** Resolves once a new functions process answers (the stack's supervisor starts it). */
  platformBack?: (dir: string, killed: unknown) => Promise<unknown>;
}

export interface ChaosReport {
  seed: number;
  jobs: number;
  enqueued: number;
  users: number;
  durationMs: number;
  outcomes: { completed: number; failed: number; cancelled: number; unfinished: number };
  attempts: number;
  /** Injected faults and exercised cases, by kind. */
  faults: Record<string, number>;
  /** Sum of jobs.retry_count; `injected` from the plans, `infra` caused by the restart / kill. */
  retries: { total: number; injected: number; infra: number };
  /** Attempts whose lease this run expired because the infra faults left them without an owner. */
  orphans: Record<string, number>;
  /** By kind; every one is expected to be 0. */
  violations: Record<string, number>;
  violationSamples: string[];
  http: {
    requests: number;
    unavailable503: number;
    other5xx: number;
    transportErrors: number;
    rateLimited: number;
  };
  infra: { postgresRestartMs: number | null; platformDowntimeMs: number | null };
  peaks: {
    processing: number;
    effectiveCapacity: number;
    byRenderer: Record<string, { processing: number; service: number; cap: number | null }>;
    serviceTotal: number;
  };
  workerPasses: number;
  cancelNotices: { received: number; expected: number };
  notes: string[];
}

/** Everything the run checks; each is counted in ChaosReport.violations (expected 0). */
export const VIOLATION_KINDS = [
  "lost_job", // a job id a client was given (201/200) has no row
  "unacknowledged_job", // a row whose idempotency key no client got an answer for
  "idempotency_mismatch", // a repeated key gave another job, a second 201, or not 200
  "not_terminal", // a job not completed / failed / cancelled at the end
  "completed_twice", // more than one attempt with outcome completed
  "completed_by_stale_attempt", // the completed attempt is not the job's current one
  "attempt_left_open", // an attempt without outcome on a finished job
  "attempt_outcome_mismatch", // an attempt ended otherwise than its injected fault says
  "unexplained_attempt", // an attempt no render service saw and nothing explains
  "attempt_dispatched_twice", // one (job, attempt) reached the render services twice
  "retry_count_mismatch", // retry_count != retryable failures injected (+ infra-caused)
  "final_status_mismatch", // the job's status does not follow from its last attempt
  "result_mismatch", // a completed job's result is not its completing attempt's
  "wrong_renderer", // dispatched to an endpoint of another renderer
  "started_before_run_at", // first attempt started before the job's run_at
  "started_after_cancel", // an attempt claimed after the job was cancelled
  "unexpected_cancel", // cancelled without a cancel that was answered 200
  "cancel_race_inconsistent", // both or neither of a racing cancel and completion won
  "capacity_exceeded", // processing jobs in the DB over the effective capacity
  "renderer_cap_exceeded", // processing jobs of a renderer over its cap (DB samples)
  "service_cap_exceeded", // renders at the fake services over a cap
  "stale_callback_accepted", // a callback of a no-longer-current attempt was not 409
  "stale_callback_touched_job", // ... or changed the job
  "callback_unexpected_status", // a callback of the current attempt answered otherwise than the contract says
  "repeated_completion_refused", // the same completed callback again (or twice at once) was not 200
  "heartbeat_refused", // a heartbeat callback (API.md) was not 200
  "lease_not_extended", // a callback of the current attempt did not push the lease to job_timeout_minutes on
  "unexpected_status", // enqueue / cancel / worker answered otherwise than expected
  "bad_5xx", // a 5xx other than 503 with a Retry-After
  "request_gave_up", // a client request still failing after its retry budget
  "request_timed_out", // no answer at all within 20 s (60 s for a worker pass): something hangs
] as const;
export type ViolationKind = typeof VIOLATION_KINDS[number];

// Faults ----------------------------------------------------------------------------------------------------

/** What a fake render service does with one dispatch. */
export type StepKind =
  | "async_ok" // 202, progress, then a completed callback
  | "sync_ok" // 200 with the result
  | "duplicate_completed" // 202, then the completed callback twice (sometimes at once)
  | "contradicting" // 202, completed, then failed (must be 409)
  | "cancel_race" // 202, then the owner's cancel and the completed callback at once
  | "http_4xx" // 422: permanent failure
  | "cb_failed_permanent" // 202, then failed with retryable false
  | "http_5xx" // 500/503: retryable failure
  | "cb_failed_retryable" // 202, then failed with retryable true
  | "silence" // 202, then nothing: the lease runs out
  | "hang" // no answer past the worker's dispatch time-out
  | "busy_429_retry_after" // 429 with Retry-After: 1: released, no retry used
  | "busy_429_plain"; // 429 without Retry-After (10 s cool-down)

const RETRYABLE: ReadonlySet<StepKind> = new Set(["http_5xx", "cb_failed_retryable", "silence", "hang"]);
/** The job_attempts.outcome each step leads to (cancel_race: decided by the race). */
const EXPECTED_OUTCOME: Record<StepKind, string> = {
  async_ok: "completed",
  sync_ok: "completed",
  duplicate_completed: "completed",
  contradicting: "completed",
  cancel_race: "cancelled|completed",
  http_4xx: "failed",
  cb_failed_permanent: "failed",
  http_5xx: "failed",
  cb_failed_retryable: "failed",
  silence: "timed_out",
  hang: "failed",
  busy_429_retry_after: "released",
  busy_429_plain: "released",
};

/** One job's script, chosen from the seed before the run. */
export interface JobPlan {
  index: number;
  user: number;
  key: string;
  body: Record<string, unknown>;
  /** One step per dispatch the job receives; the last repeats if there are more dispatches. */
  steps: StepKind[];
  runAt?: number;
  cancelQueued: boolean;
  repeat: "none" | "after" | "concurrent";
  staleCallback: boolean;
  heartbeat: boolean;
}

function pick<T>(r: () => number, weighted: [T, number][]): T {
  const total = weighted.reduce((s, [, w]) => s + w, 0);
  let x = r() * total;
  for (const [value, w] of weighted) if ((x -= w) < 0) return value;
  return weighted[weighted.length - 1][0];
}

const TAG = /chaos#(\d+)\b/;

/** A valid enqueue body (API.md's payload schemas) that carries the job's index in its payload. */
function jobBody(i: number, r: () => number): Record<string, unknown> {
  const tag = `chaos#${i}`;
  const language = r() < 0.3 ? { language: "hi" } : {};
  switch (pick(r, [["doubt", 4], ["topic_short", 3], ["daily_ca", 3]] as [string, number][])) {
    case "doubt":
      return {
        job_type: "doubt",
        payload: { question: `${tag}: why is the Preamble called the soul?`, ...language },
      };
    case "topic_short":
      return {
        job_type: "topic_short",
        payload: {
          topic: `${tag} monsoon mechanism`,
          ...(r() < 0.5 ? { duration_seconds: 15 + Math.floor(r() * 166) } : {}),
          ...language,
        },
      };
    default:
      return {
        job_type: "daily_ca",
        payload: { date: "2026-11-24", headlines: [tag, "RBI keeps the repo rate"], ...language },
      };
  }
}

/** Every job's plan, from the seed. Hangs and 10 s busy answers are few: they cost wall time. */
export function makePlans(
  n: number,
  users: number,
  seed: number,
  budget: { hangs: number; plain429: number; heartbeats?: boolean },
): JobPlan[] {
  const r = seededRandom(seed);
  const run = seed.toString(36);
  const plans: JobPlan[] = [];
  for (let i = 0; i < n; i++) {
    const terminal = pick<StepKind>(r, [
      ["async_ok", 40],
      ["sync_ok", 15],
      ["duplicate_completed", 8],
      ["contradicting", 6],
      ["cancel_race", 6],
      ["http_4xx", 5],
      ["cb_failed_permanent", 4],
    ]);
    const retryables = pick(r, [[0, 55], [1, 25], [2, 12], [3, 5], [4, 3]] as [number, number][]);
    const steps: StepKind[] = [];
    for (let k = 0; k < retryables; k++) {
      steps.push(pick<StepKind>(r, [["http_5xx", 45], ["cb_failed_retryable", 30], ["silence", 25]]));
    }
    if (r() < 0.06) {
      const plain = budget.plain429 > 0 && r() < 0.4;
      if (plain) budget.plain429--;
      steps.splice(
        Math.floor(r() * (steps.length + 1)),
        0,
        plain ? "busy_429_plain" : "busy_429_retry_after",
      );
    }
    steps.push(terminal);
    const runAhead = r() < 0.08;
    const repeatRoll = r();
    plans.push({
      index: i,
      user: Math.floor(r() * users),
      key: `chaos-${run}-${i}`,
      body: jobBody(i, r),
      steps,
      runAt: runAhead ? 1500 + Math.floor(r() * 2500) : undefined, // ms after the enqueue; made absolute then
      cancelQueued: runAhead && r() < 0.4,
      repeat: repeatRoll < 0.05 ? "after" : repeatRoll < 0.07 ? "concurrent" : "none",
      staleCallback: steps.length > 1 && r() < 0.4,
      heartbeat: r() < 0.3 && (budget.heartbeats ?? true),
    });
  }
  // Hangs go to distinct jobs spread over the run, as their first step.
  for (let h = 0; h < Math.min(budget.hangs, n); h++) {
    const i = Math.floor(((h + 0.5) / budget.hangs) * n);
    plans[i].steps.unshift("hang");
  }
  return plans;
}

// State of one run ------------------------------------------------------------------------------------------

// deno-lint-ignore no-explicit-any -- JSON bodies are checked field by field
type Body = any;
interface Answer {
  status: number; // 0: gave up
  body: Body;
  headers: Headers;
  /** An earlier try of this request may have reached the server (transport error or 5xx). */
  ambiguous: boolean;
}

interface AttemptRecord {
  jobId: string;
  attempt: number;
  token: string;
  callbackUrl: string;
  endpointUrl: string;
  renderer: string;
  kind: StepKind;
  arrivedAt: number;
  /** rendering → answered (a synchronous answer, or the worker gave up waiting) | silent | callbacks → done */
  state: "rendering" | "answered" | "silent" | "callbacks" | "done";
  answeredAt?: number;
  exited: boolean;
  /** This run moved the lease into the past: a planned silence, or an attempt orphaned by an infra fault. */
  expired?: "silence" | "orphan";
  raceWinner?: "cancel" | "complete" | "ambiguous";
}

interface JobTrack {
  plan: JobPlan;
  jobId?: string;
  runAtIso?: string;
  dispatches: number;
  attempts: Map<number, AttemptRecord>;
  last?: AttemptRecord;
  /** A cancel of ours was answered 200 (at cancelledAt, or perhaps if only an ambiguous try). */
  cancelled?: "queued" | "race";
  cancelledAt?: number;
  staleDone: boolean;
  expectNotice?: number;
}

interface Endpoint {
  renderer: string;
  url: string;
  server?: Deno.HttpServer<Deno.NetAddr>;
}

const TERMINAL = ["completed", "failed", "cancelled"];
const errorText = (a: Answer) => String(a.body?.error?.message ?? "").slice(0, 160);
const pause = (ms: number) => new Promise<void>((r) => setTimeout(r, ms)); // pacing and back-off only

/** The stack's own controls (scripts/stack/stack.ts). */
const stackInfra: InfraFaults = {
  restartPostgres,
  killPlatform,
  platformBack: (dir, killed) => waitForPlatform(dir, killed as number, 60_000),
};

class ChaosRun {
  readonly env: StackEnv;
  readonly db: postgres.Sql;
  readonly n: number;
  readonly seed: number;
  readonly log: (line: string) => void;
  readonly eventually: NonNullable<ChaosOptions["eventually"]>;
  readonly opts: Required<
    Pick<
      ChaosOptions,
      | "workerLoops"
      | "endpointsPerRenderer"
      | "enqueuePerSecond"
      | "restartPostgres"
      | "killPlatform"
      | "maxRetryAfterMs"
      | "drainTimeoutMs"
    >
  >;
  readonly infra: InfraFaults;
  readonly plans: JobPlan[];
  readonly tracks: JobTrack[];
  readonly byJobId = new Map<string, JobTrack>();
  users: LocalUser[] = [];
  endpoints: Endpoint[] = [];
  deadUrl = "";
  readonly caps = { global: 10, manim: 3, revideo: 4 };
  readonly leaseMinutes = 5;

  readonly report: ChaosReport;
  readonly violations = new Map<ViolationKind, number>();
  readonly pending = new Set<Promise<unknown>>();
  readonly farmAbort = new AbortController();
  /** Ends every loop and in-flight request: at the end of the drain, or at the run's time limit. */
  readonly stop = new AbortController();
  enqueueDone = false;
  enqueued = 0;
  effectiveSeen = 0;
  /** A SIGKILL of the functions process: attempts claimed before it and never dispatched are orphans. */
  killedAt?: number;
  readonly samples: { at: number; total: number; by: Record<string, number> }[] = [];
  readonly service = { total: 0, by: {} as Record<string, number> };
  readonly orphaned = new Map<string, Set<number>>();

  constructor(opts: ChaosOptions) {
    this.env = opts.env;
    this.db = opts.db;
    this.n = opts.jobs;
    this.seed = opts.seed ?? 20261124;
    this.log = opts.log ?? (() => {});
    this.eventually = opts.eventually ?? eventually;
    this.opts = {
      workerLoops: opts.workerLoops ?? 3,
      endpointsPerRenderer: opts.endpointsPerRenderer ?? 3,
      enqueuePerSecond: opts.enqueuePerSecond ?? 30,
      restartPostgres: opts.restartPostgres ?? true,
      killPlatform: opts.killPlatform ?? true,
      maxRetryAfterMs: opts.maxRetryAfterMs ?? 5_000,
      drainTimeoutMs: opts.drainTimeoutMs ?? 90_000 + opts.jobs * 50,
    };
    this.infra = opts.infra ?? stackInfra;
    const users = opts.users ?? Math.max(4, Math.ceil(opts.jobs / 25));
    const hangs = opts.hangs ?? Math.max(2, Math.round(opts.jobs / 250));
    this.plans = makePlans(opts.jobs, users, this.seed, {
      hangs,
      plain429: Math.max(2, Math.round(opts.jobs / 100)),
      heartbeats: opts.heartbeats,
    });
    this.tracks = this.plans.map((plan) => ({ plan, dispatches: 0, attempts: new Map(), staleDone: false }));
    this.report = {
      seed: this.seed,
      jobs: opts.jobs,
      enqueued: 0,
      users,
      durationMs: 0,
      outcomes: { completed: 0, failed: 0, cancelled: 0, unfinished: 0 },
      attempts: 0,
      faults: {},
      retries: { total: 0, injected: 0, infra: 0 },
      orphans: {},
      violations: {},
      violationSamples: [],
      http: { requests: 0, unavailable503: 0, other5xx: 0, transportErrors: 0, rateLimited: 0 },
      infra: { postgresRestartMs: null, platformDowntimeMs: null },
      peaks: { processing: 0, effectiveCapacity: 0, byRenderer: {}, serviceTotal: 0 },
      workerPasses: 0,
      cancelNotices: { received: 0, expected: 0 },
      notes: [],
    };
  }

  get stopping(): boolean {
    return this.stop.signal.aborted;
  }

  halt(): void {
    this.stop.abort();
    this.farmAbort.abort();
  }

  /** A pause for pacing or back-off that ends early when the run stops. */
  sleep(ms: number): Promise<void> {
    if (this.stopping) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.stop.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.stop.signal.addEventListener("abort", done, { once: true });
    });
  }

  violate(kind: ViolationKind, detail: string): void {
    const seen = (this.violations.get(kind) ?? 0) + 1;
    this.violations.set(kind, seen);
    if (seen <= 5) this.report.violationSamples.push(`${kind}: ${detail}`); // a few of each kind
  }

  fault(kind: string, by = 1): void {
    this.report.faults[kind] = (this.report.faults[kind] ?? 0) + by;
  }

  /** Runs `task` in the background and keeps it in `pending` until it ends (never rejects). */
  spawn(name: string, task: () => Promise<unknown>): void {
    const p: Promise<unknown> = task()
      .catch((err) => this.report.notes.push(`${name} failed: ${(err as Error)?.message ?? err}`))
      .finally(() => this.pending.delete(p));
    this.pending.add(p);
  }

  fn(path: string): string {
    return `${this.env.FUNCTIONS_URL}/${path}`;
  }

  // HTTP client: retries transport errors and 503s (honouring Retry-After up to a bound) ---------------------

  async call(
    what: string,
    url: string,
    init: RequestInit,
    opts: { budgetMs?: number; timeoutMs?: number; retry429?: boolean; mayGiveUp?: boolean } = {},
  ): Promise<Answer> {
    const gaveUp = (why: string, ambiguous: boolean): Answer => {
      if (!opts.mayGiveUp) this.violate("request_gave_up", `${what}: ${why}`);
      return { status: 0, body: null, headers: new Headers(), ambiguous };
    };
    const giveUpAt = Date.now() + (opts.budgetMs ?? 90_000);
    let ambiguous = false;
    for (let tries = 0;; tries++) {
      this.report.http.requests++;
      let res: Response;
      if (this.stopping) return { status: 0, body: null, headers: new Headers(), ambiguous };
      const timeoutMs = opts.timeoutMs ?? 20_000;
      try {
        res = await fetch(url, {
          ...init,
          signal: AbortSignal.any([AbortSignal.timeout(timeoutMs), this.stop.signal]),
        });
      } catch (err) {
        if (this.stopping) return { status: 0, body: null, headers: new Headers(), ambiguous };
        if ((err as Error)?.name === "TimeoutError") {
          this.violate("request_timed_out", `${what}: no answer within ${timeoutMs} ms`);
        } else {
          this.report.http.transportErrors++;
        }
        ambiguous = true;
        if (Date.now() > giveUpAt) return gaveUp("transport errors", ambiguous);
        await this.sleep(Math.min(1000, 50 * 2 ** Math.min(tries, 5)));
        continue;
      }
      const text = await res.text().catch(() => "");
      let body: Body = text;
      try {
        body = JSON.parse(text);
      } catch { /* not JSON */ }
      const retryAfter = res.headers.get("retry-after");
      if (res.status >= 500) {
        ambiguous = true;
        if (res.status === 503 && retryAfter !== null && /^\d+$/.test(retryAfter) && Number(retryAfter) > 0) {
          this.report.http.unavailable503++;
        } else {
          this.report.http.other5xx++;
          this.violate(
            "bad_5xx",
            `${what} → ${res.status} (Retry-After ${retryAfter}) ${text.slice(0, 160)}`,
          );
        }
        if (Date.now() > giveUpAt) return gaveUp(`status ${res.status}`, ambiguous);
        await this.sleep(Math.min(this.opts.maxRetryAfterMs, Math.max(200, Number(retryAfter ?? 1) * 1000)));
        continue;
      }
      if (res.status === 429 && opts.retry429) {
        this.report.http.rateLimited++;
        if (Date.now() > giveUpAt) return gaveUp("rate limited", ambiguous);
        await this.sleep(Math.min(this.opts.maxRetryAfterMs, Math.max(200, Number(retryAfter ?? 1) * 1000)));
        continue;
      }
      return { status: res.status, body, headers: res.headers, ambiguous };
    }
  }

  jsonPost(body: unknown, headers: Record<string, string>): RequestInit {
    return {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify(body),
    };
  }

  callback(
    rec: AttemptRecord,
    event: Record<string, unknown>,
    budgetMs = 60_000,
    mayGiveUp = false,
  ): Promise<Answer> {
    return this.call(
      `callback ${event.type} ${rec.jobId}/${rec.attempt}`,
      rec.callbackUrl,
      this.jsonPost({ job_id: rec.jobId, attempt: rec.attempt, ...event }, {
        authorization: `Bearer ${rec.token}`,
      }),
      { budgetMs, mayGiveUp },
    );
  }

  resultFor(rec: AttemptRecord): Record<string, unknown> {
    return {
      video_url: `http://127.0.0.1:9/chaos/${rec.jobId}/${rec.attempt}.mp4`,
      file_size: 100_000 + rec.attempt,
      duration_seconds: 30,
      resolution: "1080x1920",
    };
  }

  // Set-up and clean-up ------------------------------------------------------------------------------------

  saved?: { config: postgres.Row; renderers: postgres.Row[]; cron: postgres.Row[] };

  async setUp(): Promise<void> {
    const db = this.db;
    const [config] = await db`select * from job_queue_config limit 1`;
    const renderers = await db`select name, max_concurrent from renderers`;
    const cron = await db`select jobid, active from cron.job where jobname like 'video-queue%'`;
    this.saved = { config, renderers, cron };
    // Passes come from the worker loops and the functions' kicks; the cron minute would only add noise.
    await db`update cron.job set active = false where jobname like 'video-queue%'`;
    // Retries at once (interval 0); a lease long enough that only this run's own expiries (silence, orphans)
    // end attempts; user limits out of the way (they have tests of their own).
    await db`update job_queue_config set max_concurrent_renders = ${this.caps.global},
               max_manim_renders = ${this.caps.manim}, retry_interval_minutes = 0, job_timeout_minutes = ${this.leaseMinutes},
               max_queued_per_user = 100000, max_enqueues_per_minute = 100000
             where id = ${config.id}`;
    await db`update renderers set max_concurrent = ${this.caps.revideo} where name = 'revideo'`;

    for (const renderer of ["manim", "revideo", "orchestrator"]) {
      for (let i = 0; i < this.opts.endpointsPerRenderer; i++) {
        this.endpoints.push(this.startEndpoint(renderer));
      }
    }
    const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.deadUrl = `http://127.0.0.1:${(closed.addr as Deno.NetAddr).port}/render`;
    closed.close();
    for (const e of this.endpoints) {
      await db`insert into render_endpoints (renderer, url) values (${e.renderer}, ${e.url})`;
    }
    await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${this.deadUrl})`;

    for (let u = 0; u < this.report.users; u++) this.users.push(await createUser(this.env, db));
  }

  async cleanUp(): Promise<void> {
    this.halt();
    await Promise.race([Promise.allSettled([...this.pending]), pause(20_000)]);
    await Promise.race([
      Promise.allSettled(this.endpoints.map((e) => e.server?.shutdown())),
      pause(5_000),
    ]);
    if (!this.saved) return;
    const { config, renderers, cron } = this.saved;
    await this.withDbRetry("restore the configuration", async () => {
      await this.db`update job_queue_config set max_concurrent_renders = ${config.max_concurrent_renders},
                 max_manim_renders = ${config.max_manim_renders},
                 retry_interval_minutes = ${config.retry_interval_minutes},
                 job_timeout_minutes = ${config.job_timeout_minutes},
                 max_queued_per_user = ${config.max_queued_per_user},
                 max_enqueues_per_minute = ${config.max_enqueues_per_minute}
               where id = ${config.id}`;
      for (const r of renderers) {
        await this.db`update renderers set max_concurrent = ${r.max_concurrent} where name = ${r.name}`;
      }
      for (const c of cron) await this.db`update cron.job set active = ${c.active} where jobid = ${c.jobid}`;
      const urls = [...this.endpoints.map((e) => e.url), this.deadUrl];
      await this.db`delete from render_endpoints where url = any(${urls})`;
    });
    // A later user of the stack needs its gateway back (after a kill near the end).
    await this.gatewayUp(30_000).catch(() => this.report.notes.push("the gateway did not come back"));
  }

  async withDbRetry<T>(what: string, fn: () => Promise<T>, budgetMs = 60_000): Promise<T> {
    const until = Date.now() + budgetMs;
    while (true) {
      try {
        return await fn();
      } catch (err) {
        if (Date.now() > until) throw new Error(`${what}: ${(err as Error)?.message ?? err}`);
        await pause(250);
      }
    }
  }

  gatewayUp(timeoutMs: number): Promise<boolean> {
    return this.eventually("the functions gateway to answer", async () => {
      try {
        const res = await fetch(`${this.env.API_URL}/health`, { signal: AbortSignal.timeout(2_000) });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    }, timeoutMs);
  }

  // The fake render services ------------------------------------------------------------------------------

  startEndpoint(renderer: string): Endpoint {
    const endpoint: Endpoint = { renderer, url: "" };
    endpoint.server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen: () => {} },
      (req) =>
        this.serveRender(endpoint, req).catch((err) => {
          this.report.notes.push(`render service error: ${(err as Error)?.message ?? err}`);
          return new Response("internal", { status: 500 });
        }),
    );
    endpoint.url = `http://127.0.0.1:${endpoint.server.addr.port}/render`;
    return endpoint;
  }

  enter(rec: AttemptRecord): void {
    const s = this.service;
    s.total++;
    s.by[rec.renderer] = (s.by[rec.renderer] ?? 0) + 1;
    this.report.peaks.serviceTotal = Math.max(this.report.peaks.serviceTotal, s.total);
    const peak = this.peakOf(rec.renderer);
    peak.service = Math.max(peak.service, s.by[rec.renderer]);
    const cap = this.capOf(rec.renderer);
    if (cap !== null && s.by[rec.renderer] > cap) {
      this.violate(
        "service_cap_exceeded",
        `${s.by[rec.renderer]} ${rec.renderer} renders at once (cap ${cap})`,
      );
    }
  }

  /** The render is over as far as the service goes; always before the act that ends the attempt. */
  exit(rec: AttemptRecord): void {
    if (rec.exited) return;
    rec.exited = true;
    this.service.total--;
    this.service.by[rec.renderer]--;
  }

  capOf(renderer: string): number | null {
    return renderer === "manim" ? this.caps.manim : renderer === "revideo" ? this.caps.revideo : null;
  }

  peakOf(renderer: string) {
    return this.report.peaks.byRenderer[renderer] ??= {
      processing: 0,
      service: 0,
      cap: this.capOf(renderer),
    };
  }

  async serveRender(endpoint: Endpoint, req: Request): Promise<Response> {
    const body: Body = await req.json().catch(() => null);
    if (new URL(req.url).pathname.endsWith("/cancel")) {
      this.report.cancelNotices.received++;
      const track = body?.job_id ? this.byJobId.get(body.job_id) : undefined;
      if (track?.expectNotice !== undefined && track.expectNotice !== body.attempt) {
        this.report.notes.push(`cancel notice for ${body.job_id} names attempt ${body.attempt}`);
      }
      return Response.json({ ok: true });
    }
    const index = Number(TAG.exec(JSON.stringify(body?.payload ?? {}))?.[1] ?? NaN);
    const track = this.tracks[index];
    if (!track || typeof body.job_id !== "string" || !body.callback?.token) {
      this.violate(
        "unexplained_attempt",
        `a dispatch no plan explains: ${JSON.stringify(body).slice(0, 200)}`,
      );
      return Response.json({ error: { code: "invalid_request", message: "unknown job" } }, { status: 422 });
    }
    if (track.jobId === undefined) {
      track.jobId = body.job_id;
      this.byJobId.set(body.job_id, track);
    } else if (track.jobId !== body.job_id) {
      this.violate(
        "idempotency_mismatch",
        `plan ${index} dispatched as ${body.job_id}, enqueued as ${track.jobId}`,
      );
    }
    if (track.attempts.has(body.attempt)) {
      this.violate("attempt_dispatched_twice", `${body.job_id}/${body.attempt}`);
      return new Response(null, { status: 202 });
    }
    const kind = track.plan.steps[Math.min(track.dispatches, track.plan.steps.length - 1)];
    track.dispatches++;
    const previous = track.last;
    const rec: AttemptRecord = {
      jobId: body.job_id,
      attempt: body.attempt,
      token: body.callback.token,
      callbackUrl: body.callback.url,
      endpointUrl: endpoint.url,
      renderer: endpoint.renderer,
      kind,
      arrivedAt: Date.now(),
      state: "rendering",
      exited: false,
    };
    track.attempts.set(rec.attempt, rec);
    track.last = rec;
    this.fault(kind);
    this.enter(rec);

    if (track.plan.staleCallback && !track.staleDone && previous) {
      track.staleDone = true;
      await this.staleCallbacks(previous);
    }

    const answered = (response: Response) => {
      this.exit(rec);
      rec.state = "answered";
      rec.answeredAt = Date.now();
      return response;
    };
    switch (kind) {
      case "sync_ok":
        await pause(10 + Math.floor(Math.random() * 120));
        return answered(Response.json({ result: this.resultFor(rec) }));
      case "http_4xx":
        return answered(
          Response.json({ error: { code: "invalid_request", message: "scene cannot be built" } }, {
            status: 422,
          }),
        );
      case "http_5xx":
        return answered(
          Response.json({ error: { code: "internal", message: "renderer crashed" } }, {
            status: rec.attempt % 2 ? 500 : 503,
          }),
        );
      case "busy_429_retry_after":
        return answered(new Response("busy", { status: 429, headers: { "retry-after": "1" } }));
      case "busy_429_plain":
        return answered(new Response("busy", { status: 429 }));
      case "hang": {
        // The worker gives up after DISPATCH_TIMEOUT_MS (10 s) and fails the attempt (retryable). Counted as
        // rendering until then: before the worker can record it, never after.
        const exitTimer = setTimeout(() => this.exit(rec), 9_000);
        await new Promise<void>((resolve) => {
          const done = () => resolve();
          req.signal.addEventListener("abort", done, { once: true });
          this.farmAbort.signal.addEventListener("abort", done, { once: true });
          setTimeout(done, 15_000);
        });
        clearTimeout(exitTimer);
        return answered(new Response(null, { status: 202 }));
      }
      case "silence":
        this.exit(rec);
        rec.state = "silent";
        this.spawn("silence", async () => {
          await pause(200 + Math.floor(Math.random() * 400));
          await this.expireLease(rec, "silence");
        });
        return new Response(null, { status: 202 });
      default:
        rec.state = "callbacks";
        this.spawn(`render ${kind}`, () => this.renderAsync(track, rec));
        return new Response(null, { status: 202 });
    }
  }

  /** The late callbacks of an attempt that is no longer current: 409, and the job untouched. */
  async staleCallbacks(stale: AttemptRecord): Promise<void> {
    this.fault("stale_callback");
    const snapshot = () =>
      this.db`select status, attempt, retry_count, progress, stage, updated_at, result from jobs
              where id = ${stale.jobId}`.then(([row]) => JSON.stringify(row)).catch(() => undefined);
    // The dispatch of the current attempt waits meanwhile: stay well inside its 10 s time-out.
    const until = Date.now() + 6_000;
    const before = await snapshot();
    let complete = true;
    for (
      const event of [
        { type: "progress", stage: "composing_video", progress: 90 },
        { type: "completed", result: { video_url: `http://127.0.0.1:9/zombie/${stale.jobId}.mp4` } },
        { type: "failed", error: "zombie render", retryable: false },
      ]
    ) {
      const answer = await this.callback(stale, event, Math.max(0, until - Date.now()), true);
      if (answer.status === 0) complete = false;
      else if (answer.status !== 409) {
        this.violate(
          "stale_callback_accepted",
          `${event.type} of ${stale.jobId}/${stale.attempt} → ${answer.status}`,
        );
      }
    }
    const after = await snapshot();
    if (complete && before && after && before !== after) {
      this.violate("stale_callback_touched_job", `${stale.jobId}: ${before} → ${after}`);
    }
  }

  /** What a render service that answered 202 does next, by the job's step. */
  async renderAsync(track: JobTrack, rec: AttemptRecord): Promise<void> {
    // Jobs that send a heartbeat also check the lease: render long enough that an extension shows.
    await pause((track.plan.heartbeat ? 300 : 30) + Math.floor(Math.random() * 400));
    const expect = (
      what: string,
      answer: Answer,
      ok: number[],
      kind: ViolationKind = "callback_unexpected_status",
    ) => {
      if (ok.includes(answer.status) || answer.status === 0) return;
      if (answer.status === 409 && (rec.expired === "orphan" || answer.ambiguous)) return;
      this.violate(
        kind,
        `${what} of ${rec.jobId}/${rec.attempt} (${rec.kind}) → ${answer.status} ${errorText(answer)}`,
      );
    };
    if (rec.kind === "cancel_race") return await this.cancelRace(track, rec);

    const progressSent = Date.now();
    const progress = await this.callback(rec, { type: "progress", stage: "composing_video", progress: 60 });
    expect("progress", progress, [200]);
    if (track.plan.heartbeat) {
      if (progress.status === 200) await this.checkLeaseExtended(rec, progressSent, "progress");
      this.fault("heartbeat");
      const heartbeatSent = Date.now();
      const heartbeat = await this.callback(rec, { type: "heartbeat" });
      expect("heartbeat", heartbeat, [200], "heartbeat_refused");
      if (heartbeat.status === 200) await this.checkLeaseExtended(rec, heartbeatSent, "heartbeat");
    }
    this.exit(rec);
    const completed = { type: "completed", result: this.resultFor(rec) };
    switch (rec.kind) {
      case "async_ok":
        expect("completed", await this.callback(rec, completed), [200]);
        break;
      case "duplicate_completed": {
        const [a, b] = track.plan.index % 3 === 0
          ? await Promise.all([this.callback(rec, completed), this.callback(rec, completed)])
          : [await this.callback(rec, completed), await this.callback(rec, completed)];
        expect("completed", a, [200], "repeated_completion_refused");
        expect("repeated completed", b, [200], "repeated_completion_refused");
        if (a.status === 200 && b.status === 200 && a.body.job.completed_at !== b.body.job.completed_at) {
          this.violate(
            "callback_unexpected_status",
            `repeated completion of ${rec.jobId} changed completed_at`,
          );
        }
        break;
      }
      case "contradicting": {
        expect("completed", await this.callback(rec, completed), [200]);
        const contra = await this.callback(rec, {
          type: "failed",
          error: "changed my mind",
          retryable: false,
        });
        if (contra.status !== 409 && contra.status !== 0) {
          this.violate(
            "callback_unexpected_status",
            `failed after completed of ${rec.jobId} → ${contra.status}`,
          );
        }
        break;
      }
      case "cb_failed_retryable":
        expect("failed", await this.callback(rec, { type: "failed", error: "GPU lost", retryable: true }), [
          200,
        ]);
        break;
      case "cb_failed_permanent":
        expect(
          "failed",
          await this.callback(rec, { type: "failed", error: "scene invalid", retryable: false }),
          [200],
        );
        break;
    }
    rec.state = "done";
  }

  /**
   * API.md: every callback of the current attempt is a sign of life, and the lease runs until
   * job_timeout_minutes after the latest one.
   */
  async checkLeaseExtended(rec: AttemptRecord, sentAt: number, what: string): Promise<void> {
    const [row] = await this.db`select (extract(epoch from lease_expires_at) * 1000)::float8 as lease_ms
      from jobs where id = ${rec.jobId} and attempt = ${rec.attempt} and status = 'processing'`.catch(
      () => [],
    );
    if (!row || rec.expired) return;
    const want = sentAt + this.leaseMinutes * 60_000 - 50;
    if (row.lease_ms < want) {
      this.violate(
        "lease_not_extended",
        `${what} of ${rec.jobId}/${rec.attempt}: lease ends ${new Date(row.lease_ms).toISOString()}, ` +
          `want ≥ ${new Date(want).toISOString()}`,
      );
    }
  }

  /** The owner cancels while the render service reports completion: exactly one of them wins. */
  async cancelRace(track: JobTrack, rec: AttemptRecord): Promise<void> {
    this.exit(rec);
    const owner = this.users[track.plan.user];
    const [cancel, complete] = await Promise.all([
      this.call(
        "cancel (race)",
        this.fn("cancel"),
        this.jsonPost({ job_id: rec.jobId, reason: "chaos: cancel racing completion" }, {
          authorization: `Bearer ${owner.token}`,
        }),
      ),
      this.callback(rec, { type: "completed", result: this.resultFor(rec) }),
    ]);
    rec.state = "done";
    for (const [what, a] of [["cancel", cancel], ["completion", complete]] as const) {
      if (![200, 409, 0].includes(a.status)) {
        this.violate("unexpected_status", `${what} in a race for ${rec.jobId} → ${a.status}`);
      }
    }
    const cancelWon = cancel.status === 200;
    const completeWon = complete.status === 200;
    if (cancelWon) {
      track.cancelled = "race";
      track.cancelledAt = Date.now();
      track.expectNotice = rec.attempt;
      this.report.cancelNotices.expected++;
    }
    if (cancelWon !== completeWon) rec.raceWinner = cancelWon ? "cancel" : "complete";
    else if (cancel.ambiguous || complete.ambiguous || cancel.status === 0 || complete.status === 0) {
      rec.raceWinner = "ambiguous";
    } else {
      rec.raceWinner = "ambiguous";
      this.violate(
        "cancel_race_inconsistent",
        `${rec.jobId}: cancel ${cancel.status}, completion ${complete.status}`,
      );
    }
    // An ambiguous 409 for the cancel may hide a cancel that won on an earlier try.
    if (rec.raceWinner === "ambiguous" && cancel.status === 409 && cancel.ambiguous) {
      track.cancelled ??= "race";
    }
  }

  /**
   * Simulates an attempt's silence past its lease without waiting job_timeout_minutes: moves
   * jobs.lease_expires_at AND job_attempts.lease_expires_at into the past (superuser UPDATE), so the next
   * worker pass's recovery times the attempt out exactly as it would after the real lease.
   */
  async expireLease(rec: AttemptRecord, why: "silence" | "orphan"): Promise<boolean> {
    const rows = await this.withDbRetry(`expire ${rec.jobId}/${rec.attempt}`, () =>
      this.db`
        with j as (
          update jobs set lease_expires_at = now() - interval '1 second'
           where id = ${rec.jobId} and attempt = ${rec.attempt} and status = 'processing'
          returning id)
        update job_attempts a set lease_expires_at = now() - interval '1 second'
         where a.job_id = ${rec.jobId} and a.attempt = ${rec.attempt} and a.outcome is null
           and exists (select 1 from j)
        returning a.attempt`);
    if (rows.length > 0) rec.expired = why;
    return rows.length > 0;
  }

  // Clients ----------------------------------------------------------------------------------------------

  async enqueueAll(): Promise<void> {
    const start = Date.now();
    let next = 0;
    const lane = async () => {
      while (next < this.n && !this.stopping) {
        const plan = this.plans[next++];
        const due = start + (plan.index * 1000) / this.opts.enqueuePerSecond;
        if (due > Date.now()) await this.sleep(due - Date.now());
        await this.enqueueOne(plan);
        if (plan.index % 100 === 99) this.log(`enqueued ${plan.index + 1}/${this.n}`);
      }
    };
    await Promise.all(Array.from({ length: Math.min(8, this.n) }, lane));
    this.enqueueDone = true;
  }

  async enqueueOne(plan: JobPlan): Promise<void> {
    const track = this.tracks[plan.index];
    const user = this.users[plan.user];
    if (plan.runAt !== undefined) {
      track.runAtIso = new Date(Date.now() + plan.runAt).toISOString();
      this.fault("run_at_ahead");
    }
    const body = {
      ...plan.body,
      idempotency_key: plan.key,
      ...(track.runAtIso ? { run_at: track.runAtIso } : {}),
    };
    const auth = { authorization: `Bearer ${user.token}` };
    const send = () =>
      this.call("enqueue", this.fn("enqueue"), this.jsonPost(body, auth), { retry429: true });
    let answers: Answer[];
    if (plan.repeat === "concurrent") {
      this.fault("idempotent_repeat_concurrent");
      answers = await Promise.all([send(), send()]);
    } else {
      answers = [await send()];
    }
    const ids = new Set<string>();
    for (const a of answers) {
      if (a.status === 201 || a.status === 200) ids.add(a.body?.job?.id);
      else if (a.status !== 0) this.violate("unexpected_status", `enqueue ${plan.key} → ${a.status}`);
    }
    const created = answers.filter((a) => a.status === 201).length;
    if (ids.size > 1) this.violate("idempotency_mismatch", `${plan.key} gave jobs ${[...ids].join(", ")}`);
    if (created > 1) this.violate("idempotency_mismatch", `${plan.key} was created ${created} times`);
    if (created === 0 && ids.size === 1 && !answers.some((a) => a.ambiguous)) {
      this.violate("idempotency_mismatch", `${plan.key}: first enqueue answered 200, not 201`);
    }
    const [id] = ids;
    if (!id) return;
    if (track.jobId !== undefined && track.jobId !== id) {
      this.violate("idempotency_mismatch", `${plan.key} enqueued as ${id}, dispatched as ${track.jobId}`);
    }
    track.jobId = id;
    this.byJobId.set(id, track);
    this.enqueued++;

    if (plan.repeat === "after") {
      this.fault("idempotent_repeat");
      const again = await send();
      if (again.status !== 200 || again.body?.job?.id !== id) {
        this.violate(
          "idempotency_mismatch",
          `repeat of ${plan.key} → ${again.status} ${again.body?.job?.id}`,
        );
      }
    }
    if (plan.cancelQueued) {
      this.fault("cancel_queued");
      const cancel = await this.call(
        "cancel (queued)",
        this.fn("cancel"),
        this.jsonPost({ job_id: id, reason: "chaos: no longer needed" }, auth),
      );
      if (cancel.status === 200 && cancel.body?.job?.status === "cancelled") {
        track.cancelled = "queued";
        track.cancelledAt = Date.now();
      } else if (cancel.status === 409 || (cancel.status === 200 && cancel.ambiguous)) {
        this.report.notes.push(`cancel of queued ${id} came too late (${cancel.status})`);
        if (cancel.ambiguous) track.cancelled = "queued";
      } else if (cancel.status !== 0) {
        this.violate("unexpected_status", `cancel of queued ${id} → ${cancel.status}`);
      }
    }
  }

  async workerLoop(loop: number): Promise<void> {
    for (let i = 0; i < 100_000 && !this.stopping; i++) {
      const a = await this.call(
        `worker pass (loop ${loop})`,
        this.fn("video-queue-worker"),
        { method: "POST", headers: { apikey: this.env.SECRET_KEY } },
        { timeoutMs: 60_000, budgetMs: 20_000, mayGiveUp: true },
      );
      if (a.status === 200) {
        this.report.workerPasses++;
        const cap = a.body?.capacity;
        if (typeof cap?.effective === "number") {
          this.effectiveSeen = Math.max(this.effectiveSeen, cap.effective);
          if (typeof cap.processing === "number" && cap.processing > cap.effective) {
            this.violate(
              "capacity_exceeded",
              `a pass saw ${cap.processing} processing, capacity ${cap.effective}`,
            );
          }
        }
      } else if (a.status !== 0) {
        this.violate("unexpected_status", `worker pass → ${a.status}`);
      }
      await this.sleep(150 + Math.floor(Math.random() * 200));
    }
  }

  /** Every ~100 ms: processing jobs in the DB, overall and per renderer. */
  async sampler(): Promise<void> {
    while (!this.stopping) {
      try {
        const [row] = await this.db`
          select count(*)::int as total,
                 count(*) filter (where renderer = 'manim')::int as manim,
                 count(*) filter (where renderer = 'revideo')::int as revideo,
                 count(*) filter (where renderer = 'orchestrator')::int as orchestrator
            from jobs where status = 'processing'`;
        const by = { manim: row.manim, revideo: row.revideo, orchestrator: row.orchestrator };
        this.samples.push({ at: Date.now(), total: row.total, by });
        for (const [renderer, count] of Object.entries(by)) {
          const peak = this.peakOf(renderer);
          peak.processing = Math.max(peak.processing, count);
          const cap = this.capOf(renderer);
          if (cap !== null && count > cap) {
            this.violate("renderer_cap_exceeded", `${count} ${renderer} jobs processing (cap ${cap})`);
          }
        }
        this.report.peaks.processing = Math.max(this.report.peaks.processing, row.total);
      } catch {
        // Postgres is restarting: no sample
      }
      await this.sleep(100);
    }
  }

  /**
   * Every ~500 ms: attempts the infra faults left without an owner (the worker died or lost its database
   * between claim and record). Their lease would run out after job_timeout_minutes; the run expires it now,
   * and counts the retry as infra-caused:
   *   - after_answer: the service answered synchronously but the attempt is still processing 8 s later;
   *   - after_kill: claimed before the functions process was killed and never dispatched;
   *   - no_dispatch: claimed 45 s ago and never dispatched (nothing explains it: reported).
   */
  async janitor(): Promise<void> {
    while (!this.stopping) {
      try {
        const rows = await this.db`
          select j.id, j.attempt, (extract(epoch from a.started_at) * 1000)::float8 as started_ms
            from jobs j join job_attempts a on a.job_id = j.id and a.attempt = j.attempt
           where j.status = 'processing'`;
        const now = Date.now();
        for (const row of rows) {
          const track = this.byJobId.get(row.id);
          if (!track) continue;
          const rec = track.attempts.get(row.attempt);
          let cause: string | undefined;
          if (rec) {
            if (rec.state === "answered" && now - rec.answeredAt! > 8_000) cause = "after_answer";
          } else if (
            // Claimed by the killed process (a new one cannot be up 300 ms after the SIGKILL): its dispatch,
            // if any, arrived within milliseconds, or never will.
            this.killedAt && row.started_ms < this.killedAt + 300 && now > this.killedAt + 3_000
          ) {
            cause = "after_kill";
          } else if (now - row.started_ms > 45_000) {
            cause = "no_dispatch";
          }
          if (!cause) continue;
          const stand: AttemptRecord = rec ?? {
            jobId: row.id,
            attempt: row.attempt,
            token: "",
            callbackUrl: "",
            endpointUrl: "",
            renderer: "",
            kind: "silence",
            arrivedAt: 0,
            state: "answered",
            exited: true,
          };
          if (await this.expireLease(stand, "orphan")) {
            this.report.orphans[cause] = (this.report.orphans[cause] ?? 0) + 1;
            if (!this.orphaned.has(row.id)) this.orphaned.set(row.id, new Set());
            this.orphaned.get(row.id)!.add(row.attempt);
          }
        }
      } catch {
        // Postgres is restarting
      }
      await this.sleep(500);
    }
  }

  /** Postgres restarted once (~30 % enqueued), the functions process killed once (~65 %). */
  async infraFaults(): Promise<void> {
    const dir = this.env.STACK_DIR;
    const at = (fraction: number) =>
      this.eventually(
        `${fraction * 100} % enqueued`,
        () => Promise.resolve(this.enqueued >= fraction * this.n || this.enqueueDone || this.stopping),
        600_000,
      );
    await at(0.3);
    if (this.opts.restartPostgres && this.infra.restartPostgres && dir && !this.stopping) {
      this.log("restarting Postgres");
      const t0 = Date.now();
      await this.infra.restartPostgres(dir);
      this.report.infra.postgresRestartMs = Date.now() - t0;
      this.fault("postgres_restart");
      this.log(`Postgres back after ${this.report.infra.postgresRestartMs} ms`);
    } else if (this.opts.restartPostgres) {
      this.report.notes.push("Postgres restart skipped");
    }
    await at(0.65);
    if (this.opts.killPlatform && this.infra.killPlatform && dir && !this.stopping) {
      this.log("killing the functions process");
      const t0 = Date.now();
      const killed = await this.infra.killPlatform(dir);
      this.killedAt = Date.now();
      this.fault("platform_kill");
      await this.infra.platformBack?.(dir, killed);
      await this.gatewayUp(60_000);
      this.report.infra.platformDowntimeMs = Date.now() - t0;
      this.log(`functions back after ${this.report.infra.platformDowntimeMs} ms`);
    } else if (this.opts.killPlatform) {
      this.report.notes.push("functions-process kill skipped");
    }
  }

  // The run ---------------------------------------------------------------------------------------------

  async run(): Promise<ChaosReport> {
    const started = Date.now();
    // The run's time limit: the enqueue schedule, the drain, and slack for the infra faults.
    const limitMs = (this.n / this.opts.enqueuePerSecond) * 1000 + this.opts.drainTimeoutMs + 30_000;
    const limit = setTimeout(() => {
      this.report.notes.push(`stopped at the run's time limit (${Math.round(limitMs / 1000)} s)`);
      this.halt();
    }, limitMs);
    try {
      await this.setUp();
      this.log(
        `chaos: ${this.n} jobs, ${this.report.users} users, seed ${this.seed}, ${this.endpoints.length} endpoints`,
      );
      const loops = [
        this.sampler(),
        this.janitor(),
        ...Array.from({ length: this.opts.workerLoops }, (_, i) => this.workerLoop(i)),
      ];
      const infra = this.infraFaults().catch((err) => {
        this.report.notes.push(`infra fault failed: ${(err as Error)?.message ?? err}`);
      });
      await this.enqueueAll();
      this.log(`all ${this.enqueued} jobs enqueued; draining`);
      await infra;
      const ids = () => this.tracks.flatMap((t) => (t.jobId ? [t.jobId] : []));
      try {
        await this.eventually("every job in a terminal state", async () => {
          if (this.stopping) return true;
          if (this.pending.size > 0) return false;
          try {
            const [{ n }] = await this.db`select count(*)::int as n from jobs
              where id = any(${ids()}) and status not in ('completed', 'failed', 'cancelled')`;
            return n === 0;
          } catch {
            return false;
          }
        }, this.opts.drainTimeoutMs);
      } catch (err) {
        this.report.notes.push((err as Error).message);
      }
      this.halt();
      await Promise.all(loops);
      await this.finalChecks();
    } finally {
      clearTimeout(limit);
      await this.cleanUp();
    }
    this.report.durationMs = Date.now() - started;
    this.report.enqueued = this.enqueued;
    for (const kind of VIOLATION_KINDS) this.report.violations[kind] = this.violations.get(kind) ?? 0;
    return this.report;
  }

  async finalChecks(): Promise<void> {
    const db = this.db;
    const ids = this.tracks.flatMap((t) => (t.jobId ? [t.jobId] : []));
    const jobs = new Map(
      (await db`select id, status, attempt, retry_count, max_retries, renderer, result, completed_at
                  from jobs where id = any(${ids})`).map((j) => [j.id as string, j]),
    );
    const attemptsByJob = new Map<string, postgres.Row[]>();
    for (
      const a of await db`select job_id, attempt, outcome, endpoint_url,
                                 (extract(epoch from started_at) * 1000)::float8 as started_ms
                            from job_attempts where job_id = any(${ids}) order by job_id, attempt`
    ) {
      if (!attemptsByJob.has(a.job_id)) attemptsByJob.set(a.job_id, []);
      attemptsByJob.get(a.job_id)!.push(a);
    }
    // Rows of this run's users that no client was told about.
    const userIds = this.users.map((u) => u.userId);
    const keys = new Set(this.tracks.filter((t) => t.jobId).map((t) => t.plan.key));
    for (const row of await db`select id, idempotency_key from jobs where user_id = any(${userIds})`) {
      if (!keys.has(row.idempotency_key)) {
        this.violate("unacknowledged_job", `${row.id} (${row.idempotency_key}) was never answered`);
      }
    }

    for (const track of this.tracks) {
      const id = track.jobId;
      if (!id) continue;
      const job = jobs.get(id);
      if (!job) {
        this.violate("lost_job", `${track.plan.key} → ${id} has no row`);
        continue;
      }
      if (!TERMINAL.includes(job.status)) {
        this.violate("not_terminal", `${id} is ${job.status} (plan ${track.plan.steps.join(",")})`);
        this.report.outcomes.unfinished++;
        continue;
      }
      this.report.outcomes[job.status as "completed" | "failed" | "cancelled"]++;
      this.report.retries.total += job.retry_count;
      const attempts = attemptsByJob.get(id) ?? [];
      this.report.attempts += attempts.length;
      const orphaned = this.orphaned.get(id) ?? new Set<number>();

      let retries = 0;
      let injected = 0;
      let infra = 0;
      for (const a of attempts) {
        const rec = track.attempts.get(a.attempt);
        if (a.outcome === null) {
          this.violate("attempt_left_open", `${id}/${a.attempt} on a ${job.status} job`);
          continue;
        }
        // Claimed by a transaction that began after a client had the cancel's 200 in hand.
        if (track.cancelledAt !== undefined && a.started_ms > track.cancelledAt) {
          this.violate(
            "started_after_cancel",
            `${id}/${a.attempt} started ${new Date(a.started_ms).toISOString()}, cancel answered ${
              new Date(track.cancelledAt).toISOString()
            }`,
          );
        }
        if (!rec) {
          if (a.outcome === "released" && a.endpoint_url === this.deadUrl) this.fault("refused_connection");
          else if (a.outcome === "timed_out" && orphaned.has(a.attempt)) {
            retries++;
            infra++;
          } else if (a.outcome === "released") {
            this.report.notes.push(`${id}/${a.attempt} released undispatched`);
          } else if (!(a.outcome === "cancelled" && track.cancelled)) {
            this.violate("unexplained_attempt", `${id}/${a.attempt} ended ${a.outcome}, never dispatched`);
          }
          continue;
        }
        if (rec.renderer !== job.renderer) {
          this.violate("wrong_renderer", `${id} (${job.renderer}) went to a ${rec.renderer} endpoint`);
        }
        let expected = EXPECTED_OUTCOME[rec.kind].split("|");
        if (rec.kind === "cancel_race" && rec.raceWinner === "cancel") expected = ["cancelled"];
        if (rec.kind === "cancel_race" && rec.raceWinner === "complete") expected = ["completed"];
        const byOrphan = rec.expired === "orphan" && a.outcome === "timed_out";
        const byOwnCancel = a.outcome === "cancelled" && track.cancelled !== undefined;
        if (!expected.includes(a.outcome) && !byOrphan && !byOwnCancel) {
          this.violate(
            "attempt_outcome_mismatch",
            `${id}/${a.attempt}: injected ${rec.kind}, ended ${a.outcome}`,
          );
        }
        if (a.outcome === "timed_out" || (a.outcome === "failed" && RETRYABLE.has(rec.kind))) {
          retries++;
          if (RETRYABLE.has(rec.kind)) injected++;
          else infra++;
        }
      }
      const injectedUsed = Math.min(injected, job.max_retries);
      this.report.retries.injected += injectedUsed;
      this.report.retries.infra += Math.min(retries, job.max_retries) - injectedUsed;
      if (job.retry_count !== Math.min(retries, job.max_retries)) {
        this.violate(
          "retry_count_mismatch",
          `${id}: retry_count ${job.retry_count}, retryable failures ${retries} (plan ${
            track.plan.steps.join(",")
          })`,
        );
      }

      const completions = attempts.filter((a) => a.outcome === "completed");
      if (completions.length > 1) this.violate("completed_twice", `${id}: ${completions.length} completions`);
      const last = attempts[attempts.length - 1];
      const lastRec = last ? track.attempts.get(last.attempt) : undefined;
      if (last && last.attempt !== job.attempt) {
        this.violate(
          "final_status_mismatch",
          `${id}: last attempt ${last.attempt}, job.attempt ${job.attempt}`,
        );
      }
      switch (job.status) {
        case "completed": {
          const by = completions[0];
          if (!by || by.attempt !== job.attempt) {
            this.violate(
              "completed_by_stale_attempt",
              `${id}: completed by ${by?.attempt}, current ${job.attempt}`,
            );
          } else {
            const rec = track.attempts.get(by.attempt);
            const want = rec ? this.resultFor(rec).video_url : undefined;
            if (job.result?.video_url !== want) {
              this.violate("result_mismatch", `${id}: ${job.result?.video_url} (want ${want})`);
            }
          }
          break;
        }
        case "failed": {
          const permanent = last?.outcome === "failed" && lastRec && !RETRYABLE.has(lastRec.kind);
          const spent = job.retry_count === job.max_retries &&
            (last?.outcome === "timed_out" ||
              (last?.outcome === "failed" && lastRec && RETRYABLE.has(lastRec.kind)));
          if (!permanent && !spent) {
            this.violate("final_status_mismatch", `${id} failed after ${last?.outcome} (${lastRec?.kind})`);
          }
          break;
        }
        case "cancelled":
          if (!track.cancelled) this.violate("unexpected_cancel", `${id} cancelled, no cancel of ours won`);
          break;
      }
      if (track.runAtIso && attempts.length > 0 && attempts[0].started_ms < Date.parse(track.runAtIso)) {
        this.violate(
          "started_before_run_at",
          `${id}: started ${attempts[0].started_ms}, run_at ${track.runAtIso}`,
        );
      }
    }

    // Capacity over the whole run (the effective cap is what the worker passes reported).
    const effective = this.effectiveSeen || this.caps.global;
    this.report.peaks.effectiveCapacity = effective;
    const over = this.samples.filter((s) => s.total > effective);
    if (over.length > 0) {
      this.violate(
        "capacity_exceeded",
        `${over.length} samples over ${effective}, max ${Math.max(...over.map((s) => s.total))}`,
      );
    }
    if (this.report.peaks.serviceTotal > effective) {
      this.violate(
        "service_cap_exceeded",
        `${this.report.peaks.serviceTotal} renders at once (capacity ${effective})`,
      );
    }
    for (const r of ["manim", "revideo", "orchestrator"]) this.peakOf(r);
  }
}

/** Runs the chaos scenario against a running stack and returns its report (see the file header). */
export function runChaos(opts: ChaosOptions): Promise<ChaosReport> {
  return new ChaosRun(opts).run();
}

/** The report as a two-column table. */
export function formatReport(r: ChaosReport): string {
  const rows: [string, string][] = [
    ["seed", String(r.seed)],
    ["jobs planned / enqueued", `${r.jobs} / ${r.enqueued}`],
    ["users", String(r.users)],
    ["duration", `${(r.durationMs / 1000).toFixed(1)} s`],
    [
      "completed / failed / cancelled / unfinished",
      `${r.outcomes.completed} / ${r.outcomes.failed} / ${r.outcomes.cancelled} / ${r.outcomes.unfinished}`,
    ],
    ["attempts", String(r.attempts)],
    ["retries (injected + infra)", `${r.retries.total} (${r.retries.injected} + ${r.retries.infra})`],
    ["worker passes (loops)", String(r.workerPasses)],
    ["HTTP requests", String(r.http.requests)],
    ["503 + Retry-After seen", String(r.http.unavailable503)],
    ["other 5xx seen", String(r.http.other5xx)],
    ["transport errors (retried)", String(r.http.transportErrors)],
    ["429 on enqueue", String(r.http.rateLimited)],
    ["Postgres restart", r.infra.postgresRestartMs === null ? "skipped" : `${r.infra.postgresRestartMs} ms`],
    [
      "functions kill → back",
      r.infra.platformDowntimeMs === null ? "skipped" : `${r.infra.platformDowntimeMs} ms`,
    ],
    ["peak processing / capacity", `${r.peaks.processing} / ${r.peaks.effectiveCapacity}`],
    ["peak renders at the services", String(r.peaks.serviceTotal)],
    ...Object.entries(r.peaks.byRenderer).map(([name, p]): [string, string] => [
      `peak ${name} (db / services / cap)`,
      `${p.processing} / ${p.service} / ${p.cap ?? "global"}`,
    ]),
    ["cancel notices (received / cancels won)", `${r.cancelNotices.received} / ${r.cancelNotices.expected}`],
    ...Object.entries(r.orphans).map(([k, v]): [string, string] => [`orphaned attempt: ${k}`, String(v)]),
    ...Object.entries(r.faults).sort().map(([k, v]): [string, string] => [`fault: ${k}`, String(v)]),
    ...Object.entries(r.violations).map(([k, v]): [string, string] => [`violation: ${k}`, String(v)]),
  ];
  const w = Math.max(...rows.map(([k]) => k.length));
  const v = Math.max(...rows.map(([, x]) => x.length));
  const line = (a: string, b: string) => `| ${a.padEnd(w)} | ${b.padStart(v)} |`;
  const out = [line("chaos run", "".padStart(v)), `| ${"-".repeat(w)} | ${"-".repeat(v)} |`];
  for (const [k, x] of rows) out.push(line(k, x));
  const total = Object.values(r.violations).reduce((s, x) => s + x, 0);
  out.push("", `violations: ${total}`);
  for (const s of r.violationSamples) out.push(`  ${s}`);
  for (const n of r.notes.slice(0, 20)) out.push(`note: ${n}`);
  return out.join("\n");
}

// `deno task chaos --jobs 2000`: a fresh stack of its own, the run, the table --------------------------------

async function main(): Promise<number> {
  const arg = (name: string, fallback: number) => {
    const i = Deno.args.indexOf(`--${name}`);
    return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
  };
  const jobs = arg("jobs", 2000);
  const name = `chaos-${Deno.pid}`;
  const log = (line: string) => console.error(`[chaos] ${line}`);
  let db: postgres.Sql | undefined;
  try {
    const env = await startStack({
      name,
      exitWithParent: Deno.pid,
      log: (l) => console.error(`[stack] ${l}`),
    });
    db = postgres(env.SUPABASE_DB_URL, { max: 10, prepare: false, onnotice: () => {} });
    const report = await runChaos({
      env,
      db,
      jobs,
      seed: arg("seed", 20261124),
      workerLoops: arg("workers", 3),
      log,
    });
    console.log(formatReport(report));
    return Object.values(report.violations).some((v) => v > 0) ? 1 : 0;
  } finally {
    await db?.end({ timeout: 2 }).catch(() => {});
    await stopStack(name);
    await Deno.remove(stackDir(name), { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) Deno.exit(await main());
