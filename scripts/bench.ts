// `deno task bench`: starts a throw-away stack and prints the figures of each benchmark.
// Benchmarks measure; they assert nothing. Tests stay deterministic and untimed.
import { PROJECT_ROOT, startStack, stopStack } from "./stack/stack.ts";

const name = `bench-${Deno.pid}`;
const benches = ["scripts/bench_sql.ts", "scripts/bench_http.ts"];
let ok = true;
try {
  const env = await startStack({ name, exitWithParent: Deno.pid, log: (l) => console.error(`[stack] ${l}`) });
  for (const bench of benches) {
    console.log(`\n=== ${bench}`);
    const { success } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--config", `${PROJECT_ROOT}/deno.json`, bench],
      cwd: PROJECT_ROOT,
      env,
      stdout: "inherit",
      stderr: "inherit",
    }).output();
    ok &&= success;
  }
} finally {
  await stopStack(name);
}
Deno.exit(ok ? 0 : 1);
