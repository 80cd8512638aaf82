// The bench's output: one table (a Markdown table, so it pastes into the README) and the JSON file.
import type { Row } from "./context.ts";

const COLUMNS: [string, (r: Row) => string][] = [
  ["figure", (r) => r.figure],
  ["measured", (r) => r.measured],
  ["target", (r) => r.target],
  ["result", (r) => r.verdict ?? ""],
  ["ratio", (r) => r.ratios ?? ""],
];

export function table(rows: Row[]): string {
  const cells = rows.map((r) => COLUMNS.map(([, cell]) => cell(r)));
  const widths = COLUMNS.map(([title], i) => Math.max(title.length, ...cells.map((c) => c[i].length)));
  const line = (values: string[]) => `| ${values.map((v, i) => v.padEnd(widths[i])).join(" | ")} |`;
  return [
    line(COLUMNS.map(([title]) => title)),
    line(widths.map((w) => "-".repeat(w))),
    ...cells.map(line),
  ].join("\n");
}

/** What the machine was: the figures mean little without it. */
export async function machineFacts(postgresVersion: string): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  return {
    cores: navigator.hardwareConcurrency,
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown",
    memory_gib: Math.round(Deno.systemMemoryInfo().total / 2 ** 30),
    os: `${Deno.build.os} ${Deno.osRelease()}`,
    load_average_at_start: Deno.loadavg(),
    postgres: postgresVersion,
    deno: Deno.version.deno,
  };
}
