// LOCAL-ONLY: a Supabase-like stack without Docker.
//
//   Postgres 15 cluster (own dir, own port, pg_cron preloaded) ── run as the `postgres` user when we are root
//   bootstrap.sql: the platform's roles, auth.*, vault.*, net.http_post (local stand-ins)
//   supabase/migrations: applied by the real Supabase CLI (`supabase db push --db-url`)
//   platform.ts: the functions gateway (/functions/v1/<name>) + the pg_net sender, one Deno process
//
// Several stacks run side by side: each has its own directory, database port and HTTP port.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { ensureSystemPackages } from "./setup.ts";

export const PROJECT_ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
const PG_BIN = "/usr/lib/postgresql/15/bin";
const SUPABASE_CLI = "supabase@3.1.0";

export type StackEnv = Record<string, string>;

export interface StartOptions {
  name?: string; // stack directory name under the temp dir; default "dev"
  /** Stop the stack when this process id exits (tests); omit to keep it running (manual use). */
  exitWithParent?: number;
  log?: (line: string) => void;
}

export function stackDir(name = "dev"): string {
  return `${Deno.env.get("TMPDIR") ?? "/tmp"}/video-queue-stack-${name}`;
}

const asPostgres = Deno.uid() === 0; // initdb refuses root: run the cluster as `postgres`

async function run(cmd: string, args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}) {
  const [bin, argv] = asPostgres && cmd.startsWith(PG_BIN)
    ? ["runuser", ["-u", "postgres", "--", cmd, ...args]]
    : [cmd, args];
  const out = await new Deno.Command(bin, { args: argv, stdout: "piped", stderr: "piped", ...opts }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${text}`);
  return text;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

const randomHex = (bytes: number) =>
  Array.from(crypto.getRandomValues(new Uint8Array(bytes)), (b) => b.toString(16).padStart(2, "0")).join("");

async function makeKeys(dir: string) {
  const jwtSecret = randomHex(32);
  const hs = new TextEncoder().encode(jwtSecret);
  const legacyKey = (role: string) =>
    new SignJWT({ role, iss: "supabase-local" }).setProtectedHeader({ alg: "HS256", typ: "JWT" })
      .setIssuedAt().setExpirationTime("10y").sign(hs);
  const { publicKey, privateKey } = await generateKeyPair("ES256", { extractable: true });
  const kid = randomHex(8);
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: "ES256" };
  const signingKeyPath = `${dir}/signing_key.json`;
  await Deno.writeTextFile(signingKeyPath, JSON.stringify(privateJwk), { mode: 0o600 });
  return {
    jwtSecret,
    anonKey: await legacyKey("anon"),
    serviceRoleKey: await legacyKey("service_role"),
    publishableKey: `sb_publishable_${randomHex(16)}`,
    secretKey: `sb_secret_${randomHex(24)}`,
    jwks: JSON.stringify({ keys: [publicJwk] }),
    signingKeyPath,
  };
}

export function readEnvFile(path: string): StackEnv {
  const env: StackEnv = {};
  for (const line of Deno.readTextFileSync(path).split("\n")) {
    const m = line.match(/^([A-Z_0-9]+)=(.*)$/);
    if (m) env[m[1]] = JSON.parse(m[2]);
  }
  return env;
}

function writeEnvFile(path: string, env: StackEnv) {
  const body = Object.entries(env).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join("\n") + "\n";
  Deno.writeTextFileSync(path, body, { mode: 0o600 });
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000) {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100)); // polling a starting process; nothing to await instead
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function psql(dbUrl: string, args: string[]) {
  return await run("psql", [dbUrl, "-v", "ON_ERROR_STOP=1", "-q", ...args]);
}

/** Starts a fresh stack (any previous one of the same name is stopped and wiped) and returns its env. */
export async function startStack(opts: StartOptions = {}): Promise<StackEnv> {
  const log = opts.log ?? ((l: string) => console.error(`[stack] ${l}`));
  const name = opts.name ?? "dev";
  const dir = stackDir(name);
  await ensureSystemPackages(log);
  await stopStack(name);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
  if (asPostgres) await run("chown", ["postgres", dir]);

  const dbPort = freePort();
  log(`initialising Postgres in ${dir}/pgdata on port ${dbPort}`);
  await run(`${PG_BIN}/initdb`, ["-D", `${dir}/pgdata`, "-U", "postgres", "--auth=trust", "-E", "UTF8"]);
  const conf = [
    `port = ${dbPort}`,
    `listen_addresses = '127.0.0.1'`,
    `unix_socket_directories = '${dir}'`,
    `shared_preload_libraries = 'pg_cron'`,
    `cron.database_name = 'postgres'`,
    `cron.use_background_workers = on`,
    `max_worker_processes = 32`,
    `max_connections = 300`,
    `timezone = 'UTC'`,
  ];
  await Deno.writeTextFile(`${dir}/pgdata/postgresql.conf`, "\n" + conf.join("\n") + "\n", { append: true });
  await run(`${PG_BIN}/pg_ctl`, ["-D", `${dir}/pgdata`, "-l", `${dir}/postgres.log`, "-w", "start"]);

  const dbUrl = `postgresql://postgres:postgres@127.0.0.1:${dbPort}/postgres`;
  log("applying the local platform bootstrap");
  await psql(dbUrl, ["-f", `${PROJECT_ROOT}/scripts/stack/bootstrap.sql`]);
  log("applying supabase/migrations with the Supabase CLI");
  await run("npx", ["-y", SUPABASE_CLI, "db", "push", "--db-url", dbUrl, "--yes"], {
    cwd: PROJECT_ROOT,
    env: { PGSSLMODE: "disable", DO_NOT_TRACK: "1", SUPABASE_TELEMETRY_DISABLED: "1" },
  });

  const httpPort = freePort();
  const apiUrl = `http://127.0.0.1:${httpPort}`;
  const keys = await makeKeys(dir);
  const env: StackEnv = {
    STACK_DIR: dir,
    API_URL: apiUrl,
    FUNCTIONS_URL: `${apiUrl}/functions/v1`,
    DB_URL: dbUrl,
    ANON_KEY: keys.anonKey,
    SERVICE_ROLE_KEY: keys.serviceRoleKey,
    PUBLISHABLE_KEY: keys.publishableKey,
    SECRET_KEY: keys.secretKey,
    JWT_SECRET: keys.jwtSecret,
    SIGNING_KEY_PATH: keys.signingKeyPath,
    // What Supabase injects into Edge Functions:
    SUPABASE_URL: apiUrl,
    SUPABASE_DB_URL: dbUrl,
    SUPABASE_ANON_KEY: keys.anonKey,
    SUPABASE_SERVICE_ROLE_KEY: keys.serviceRoleKey,
    SUPABASE_PUBLISHABLE_KEYS: JSON.stringify({ default: keys.publishableKey }),
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: keys.secretKey }),
    SUPABASE_JWKS: keys.jwks,
    SUPABASE_JWT_SECRET: keys.jwtSecret,
  };
  writeEnvFile(`${dir}/env`, env);

  log(`starting the functions gateway and pg_net sender on ${apiUrl}`);
  const parent = opts.exitWithParent ? String(opts.exitWithParent) : "";
  const deno = Deno.execPath();
  // setsid: the platform process outlives `deno task stack start`, in its own process group.
  await run("bash", [
    "-c",
    `setsid nohup "${deno}" run -A "${PROJECT_ROOT}/scripts/stack/platform.ts" "${dir}" ${parent} ` +
    `>> "${dir}/platform.log" 2>&1 < /dev/null &`,
  ]);
  await waitFor("the functions gateway", async () => {
    try {
      const res = await fetch(`${apiUrl}/health`);
      await res.body?.cancel();
      return res.ok;
    } catch {
      return false;
    }
  });

  // What an operator runs once on Supabase (README, "Deploy"): the worker's URL and key for pg_cron.
  await psql(dbUrl, [
    "-c",
    `select vault.create_secret('${env.FUNCTIONS_URL}/video-queue-worker', 'video_queue_worker_url');
     select vault.create_secret('${keys.secretKey}', 'video_queue_secret_key');`,
  ]);
  log("stack ready");
  return env;
}

function readPid(path: string): number | undefined {
  try {
    return Number(Deno.readTextFileSync(path).trim()) || undefined;
  } catch {
    return undefined;
  }
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

/** Stops the named stack's processes (by their recorded pids) and its Postgres cluster. */
export async function stopStack(name = "dev"): Promise<void> {
  const dir = stackDir(name);
  const platformPid = readPid(`${dir}/platform.pid`);
  if (platformPid && alive(platformPid)) {
    Deno.kill(platformPid, "SIGTERM");
    await waitFor("the platform process to exit", () => Promise.resolve(!alive(platformPid)), 10_000)
      .catch(() => Deno.kill(platformPid, "SIGKILL"));
  }
  await stopCluster(dir);
}

/** Stops the stack's Postgres cluster in `dir`, if it runs. */
export async function stopCluster(dir: string): Promise<void> {
  try {
    Deno.statSync(`${dir}/pgdata/postmaster.pid`);
    await run(`${PG_BIN}/pg_ctl`, ["-D", `${dir}/pgdata`, "-m", "fast", "-w", "stop"]);
  } catch {
    // no cluster running
  }
}
