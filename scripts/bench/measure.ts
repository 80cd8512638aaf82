// The bench's arithmetic and its loops: percentiles, medians, concurrent callers and consumers.
// Benchmarks measure; they assert nothing (tests stay deterministic and untimed).

/** Nearest-rank percentile (p in 0..1) of `xs`. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))];
}

export const median = (xs: number[]) => percentile(xs, 0.5);

/** Latencies in ms, summarized. */
export type Latency = { n: number; p50: number; p99: number; max: number };

export function latency(ms: number[]): Latency {
  return { n: ms.length, p50: percentile(ms, 0.5), p99: percentile(ms, 0.99), max: Math.max(...ms) };
}

export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Seconds `fn` took. */
export async function seconds(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

/**
 * Times each of `n` calls of `fn` (ms), one at a time, after `warmup` untimed calls that fill the plan caches;
 * stops early once `maxSeconds` have passed (a slow call is then timed fewer times, never dropped).
 */
export async function timeEach(
  n: number,
  fn: (i: number) => Promise<unknown>,
  { warmup = 20, maxSeconds = 60 } = {},
): Promise<number[]> {
  const deadline = performance.now() + maxSeconds * 1000;
  for (let i = 0; i < warmup && performance.now() < deadline; i++) await fn(i);
  const ms: number[] = [];
  for (let i = 0; i < n && (ms.length === 0 || performance.now() < deadline); i++) {
    const start = performance.now();
    await fn(i);
    ms.push(performance.now() - start);
  }
  return ms;
}

/**
 * `workers` concurrent callers share the calls `fn(0) … fn(n - 1)`, each taking the next one when done, and
 * start none after `deadline` (performance.now() time). Returns the number of calls made.
 */
export async function shareCalls(
  workers: number,
  n: number,
  fn: (i: number) => Promise<unknown>,
  deadline = Infinity,
): Promise<number> {
  let next = 0;
  let made = 0;
  await Promise.all(Array.from({ length: workers }, async () => {
    while (next < n && performance.now() < deadline) {
      await fn(next++);
      made++;
    }
  }));
  return made;
}

/** What a phase did: jobs done, and the seconds it took. */
export type Phase = { done: number; seconds: number };

/** Runs `work` (it gets its deadline, performance.now() time, and returns how many jobs it did) and times it. */
export async function phase(
  work: (deadline: number) => Promise<number>,
  maxSeconds = Infinity,
): Promise<Phase> {
  const start = performance.now();
  const done = await work(start + maxSeconds * 1000);
  return { done, seconds: (performance.now() - start) / 1000 };
}

export const perSecond = (p: Phase) => p.done / p.seconds;

/** How long a drain may go without finishing a job before the bench gives up on it. */
const STALL_MS = 60_000;

/**
 * `consumers` concurrent consumers take `n` jobs: each calls `takeOne` (claim one job and finish it; false
 * when it found none) until n have been taken, or until `deadline` (performance.now() time) has passed,
 * waiting 1 ms after an empty claim as a polling worker would. Returns the number of jobs taken.
 */
export async function drainConcurrently(
  consumers: number,
  n: number,
  takeOne: (consumer: number) => Promise<boolean>,
  deadline = Infinity,
): Promise<number> {
  let reserved = 0;
  let lastProgress = performance.now();
  await Promise.all(Array.from({ length: consumers }, async (_, consumer) => {
    while (reserved < n && performance.now() < deadline) {
      reserved++; // reserve before claiming, so that no more than n jobs are taken
      if (await takeOne(consumer)) {
        lastProgress = performance.now();
        continue;
      }
      reserved--;
      if (performance.now() - lastProgress > STALL_MS) {
        throw new Error(
          `drain stalled: no job finished for ${STALL_MS / 1000} s (${reserved} of ${n} taken)`,
        );
      }
      await delay(1);
    }
  }));
  return reserved;
}

export const fmtRate = (perSecond: number) => `${Math.round(perSecond).toLocaleString("en")}/s`;
export const fmtMs = (ms: number) => `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
export const fmtRatio = (r: number) => `${r.toFixed(2)}×`;
