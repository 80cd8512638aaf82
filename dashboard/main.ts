// `deno task dashboard`: builds the dashboard into dashboard/dist/ and serves it.
//   deno task dashboard [stack]                  serve it for a local stack (default "dev"); sign in with a token
//   deno task dashboard --supabase-url <url> --publishable-key <key>
//                                                serve it for a hosted project; sign in with email and password
//   deno task dashboard build --supabase-url <url> --publishable-key <key>
//                                                build only, with dist/config.json, to host dist/ anywhere
//   --port <n>                                   the local port (default 8787)
import { readEnvFile, stackDir } from "../scripts/stack/stack.ts";
import { buildDashboard, DIST_DIR } from "./build.ts";
import { dashboardFile } from "./server.ts";
import type { DashboardConfig } from "./src/config.ts";

const args = [...Deno.args];
const option = (name: string) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : undefined;
};
const supabaseUrl = option("--supabase-url");
const publishableKey = option("--publishable-key");
const port = Number(option("--port") ?? 8787);
const buildOnly = args[0] === "build";
const stack = buildOnly ? undefined : args[0] ?? "dev";

function hostedConfig(): DashboardConfig | undefined {
  if (!supabaseUrl && !publishableKey) return undefined;
  if (!supabaseUrl || !publishableKey) fail("--supabase-url and --publishable-key go together.");
  return { supabaseUrl: supabaseUrl!, publishableKey: publishableKey!, signIn: "password", realtime: true };
}

function stackConfig(name: string): DashboardConfig {
  let env: Record<string, string>;
  try {
    env = readEnvFile(`${stackDir(name)}/env`);
  } catch {
    fail(
      `no local stack "${name}" runs: start one with \`deno task stack start ${name}\`, or pass --supabase-url.`,
    );
  }
  // The local stack has no Auth server (tokens are minted by its CLI) and no Realtime server (5 s refresh).
  return {
    supabaseUrl: env!.SUPABASE_URL,
    publishableKey: env!.PUBLISHABLE_KEY,
    signIn: "token",
    realtime: false,
  };
}

function fail(message: string): never {
  console.error(message);
  Deno.exit(2);
}

console.error("building the dashboard…");
await buildDashboard();
const hosted = hostedConfig();
if (buildOnly) {
  if (hosted) await Deno.writeTextFile(`${DIST_DIR}/config.json`, JSON.stringify(hosted, null, 2) + "\n");
  console.log(
    `built ${DIST_DIR}${hosted ? " (with config.json)" : " (add a config.json beside index.html)"}`,
  );
  Deno.exit(0);
}
const config = hosted ?? stackConfig(stack!);
Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen: ({ port }) => {
    console.log(`dashboard: http://127.0.0.1:${port}/`);
    if (config.signIn === "token") {
      console.log(`sign in with the token of: deno task stack token ${stack} --admin`);
    }
  },
}, (req) => dashboardFile(new URL(req.url).pathname.replace(/^\//, ""), config));
