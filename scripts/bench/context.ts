// What every figure module gets (the stack, the options, our queue's client) and what it gives back (rows).
import type postgres from "postgres";
import type { StackEnv } from "../stack/stack.ts";
import type { OurQueue } from "./ours.ts";

export interface BenchOptions {
  /** Jobs per throughput phase (--n). */
  n: number;
  /** Repetitions of the cheap phases, whose median is reported (--runs). */
  runs: number;
  /** Sample pg_stat_activity's wait events during the drains (--diagnose). */
  diagnose: boolean;
}

export interface BenchContext extends BenchOptions {
  env: StackEnv;
  /** The stack's database as `postgres` (the superuser), for set-up; never what is measured. */
  admin: postgres.Sql;
  /** Our queue, called as the functions call it. */
  ours: OurQueue;
  /** Progress lines (stderr). */
  log(line: string): void;
  /** Lines printed under the table (diagnoses, how a figure was made). */
  notes: string[];
}

export type Verdict = "PASS" | "MISS" | "not measured";

/** One line of the table: a figure, its target and verdict; rows without a verdict give context (the anchors). */
export interface Row {
  figure: string;
  measured: string;
  target: string;
  verdict?: Verdict;
  /** The figure as a ratio to the anchors (or to its own reference), as printed. */
  ratios?: string;
  /** The numbers behind it, for the JSON. */
  data?: Record<string, unknown>;
}

/** A figure module: measures on a stack and returns its rows. */
export interface Figure {
  /** Its name for --only. */
  name: string;
  run(ctx: BenchContext): Promise<Row[]>;
}

export const verdict = (...met: boolean[]): Verdict => met.every(Boolean) ? "PASS" : "MISS";

/**
 * Calls `run(0)`, `run(1)`, … up to ctx.runs times, but starts no run that the runs so far say would end
 * past `budgetSeconds` (a note under the table says so). Returns the number of runs made.
 */
export async function repeatWithin(
  ctx: BenchContext,
  what: string,
  budgetSeconds: number,
  run: (i: number) => Promise<void>,
): Promise<number> {
  const start = performance.now();
  for (let i = 0; i < ctx.runs; i++) {
    const elapsed = (performance.now() - start) / 1000;
    if (i > 0 && elapsed / i * (i + 1) > budgetSeconds) {
      ctx.notes.push(
        `${what}: ${i} run(s) of ${ctx.runs}; one more would pass its ${budgetSeconds} s budget`,
      );
      return i;
    }
    await run(i);
  }
  return ctx.runs;
}
