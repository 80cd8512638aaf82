// The estimate's error over a simulated day, measured by scripts/bench/estimate_day.ts, which exports
// `measureEstimateError(dbUrl): Promise<{ median, p90, samples }>`. Until that module exists the row says
// "not measured": no figure is made up.
import type { BenchContext, Figure, Row } from "./context.ts";
import { cleanQueue } from "./ours.ts";

const MODULE = new URL("./estimate_day.ts", import.meta.url);

type EstimateError = { median: number; p90: number; samples: number };

export const estimateError: Figure = {
  name: "estimate",
  async run(ctx: BenchContext): Promise<Row[]> {
    const row: Row = {
      figure: "estimate error (a simulated day)",
      measured: "not measured",
      target: "median ≤ 0.25, p90 ≤ 0.6",
      verdict: "not measured",
    };
    if (!(await Deno.stat(MODULE).then(() => true, () => false))) {
      return [{ ...row, ratios: "(scripts/bench/estimate_day.ts is absent)" }];
    }
    const { measureEstimateError } = await import(MODULE.href) as {
      measureEstimateError(dbUrl: string): Promise<EstimateError>;
    };
    await cleanQueue(ctx.admin);
    const e = await measureEstimateError(ctx.env.DB_URL);
    await cleanQueue(ctx.admin);
    return [{
      ...row,
      measured: `median ${e.median.toFixed(2)}, p90 ${e.p90.toFixed(2)} (${e.samples} jobs)`,
      verdict: e.median <= 0.25 && e.p90 <= 0.6 ? "PASS" : "MISS",
      data: { ...e },
    }];
  },
};
