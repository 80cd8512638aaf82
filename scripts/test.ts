// `deno task test`: installs what is missing, starts a fresh throw-away stack, runs Supabase's lints
// (`supabase db advisors`), the pgTAP files (supabase/tests, with plpgsql_check) and the Deno tests (tests/)
// against it, and stops it.
// Extra arguments are passed to `deno test` (e.g. a single file).
import { PROJECT_ROOT, stackDir, startStack, stopStack, SUPABASE_CLI } from "./stack/stack.ts";

const name = `test-${Deno.pid}`;
const decoder = new TextDecoder();
let passed = 0;
let failed = 0;

async function runStep(label: string, cmd: string, args: string[], env: Record<string, string>) {
  console.log(`\n=== ${label}`);
  const child = new Deno.Command(cmd, { args, env, cwd: PROJECT_ROOT, stdout: "piped", stderr: "inherit" })
    .spawn();
  let tail = "";
  for await (const chunk of child.stdout) {
    const text = decoder.decode(chunk);
    Deno.stdout.writeSync(chunk);
    tail = (tail + text).slice(-4000);
  }
  const { success } = await child.status;
  return { success, tail };
}

const started = Date.now();
let exitCode = 1;
try {
  const env = await startStack({ name, exitWithParent: Deno.pid, log: (l) => console.log(`[stack] ${l}`) });
  for (const [k, v] of Object.entries(env)) Deno.env.set(k, v);

  // Supabase's own lints on the freshly migrated database, failing on any WARN or ERROR.
  const advisors = await runStep("Supabase advisors (supabase db advisors --fail-on warn)", "npx", [
    "-y",
    SUPABASE_CLI,
    "db",
    "advisors",
    `--remote=${env.DB_URL}`,
    "--type",
    "all",
    "--level",
    "warn",
    "--fail-on",
    "warn",
  ], { ...env, PGSSLMODE: "disable", DO_NOT_TRACK: "1", SUPABASE_TELEMETRY_DISABLED: "1" });
  if (advisors.success) passed += 1;
  else failed += 1;

  const harness = await import("../tests/harness.ts");
  // In `extensions`, as Supabase places extensions: nothing the tests add shows up in the exposed schemas.
  // The migrations let no new function be executed by PUBLIC: the pgTAP files call these as the API roles.
  await harness.db`create extension if not exists pgtap with schema extensions;
                   create extension if not exists plpgsql_check with schema extensions;
                   grant execute on all functions in schema extensions to public`.simple();
  await harness.setQueueCronActive(false); // tests drive passes themselves; the cron test turns it on
  await harness.resetData(); // snapshots the migrated data that every test starts from
  await harness.db.end();

  const sqlFiles = [...Deno.readDirSync(`${PROJECT_ROOT}/supabase/tests`)]
    .filter((e) => e.name.endsWith(".sql")).map((e) => `supabase/tests/${e.name}`).sort();
  if (sqlFiles.length > 0) {
    const url = new URL(env.DB_URL);
    const prove = await runStep("pgTAP (pg_prove)", "pg_prove", [
      "-h",
      url.hostname,
      "-p",
      url.port,
      "-U",
      "postgres",
      "-d",
      "postgres",
      "--timer",
      ...sqlFiles,
    ], { ...env, PGPASSWORD: "postgres" });
    const tests = Number(prove.tail.match(/Tests=(\d+)/)?.[1] ?? 0);
    const bad = Number(prove.tail.match(/Failed (\d+)\/\d+ subtests/)?.[1] ?? (prove.success ? 0 : 1));
    passed += tests - bad;
    failed += bad;
  }

  const files = Deno.args.length > 0 ? Deno.args : ["tests/"];
  const deno = await runStep("Deno tests", Deno.execPath(), [
    "test",
    "-A",
    "--config",
    `${PROJECT_ROOT}/deno.json`,
    ...files,
  ], env);
  const summary = deno.tail.match(/(\d+) passed.*?\| (\d+) failed/);
  passed += Number(summary?.[1] ?? 0);
  failed += Number(summary?.[2] ?? (deno.success ? 0 : 1));
  exitCode = failed === 0 && deno.success ? 0 : 1;
} catch (err) {
  console.error(err instanceof Error ? err.message : err);
  failed += 1;
} finally {
  await stopStack(name);
  await Deno.remove(stackDir(name), { recursive: true }).catch(() => {});
}
console.log(`\nfinished in ${Math.round((Date.now() - started) / 1000)} s`);
console.log(`${passed} passed, ${failed} failed`);
Deno.exit(exitCode);
