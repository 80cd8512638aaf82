// LOCAL-ONLY: a Supabase-like stack without Docker.
//
//   Postgres 15 cluster (own dir, own port, pg_cron preloaded) ── run as the `postgres` user when we are root
//   bootstrap.sql: the platform's roles, auth.*, vault.*, net.http_post (local stand-ins)
//   supabase/migrations: applied by the real Supabase CLI (`supabase db push --db-url`)
//   platform.ts: the functions gateway (/functions/v1/<name>) + the pg_net sender, one Deno process,
//                under a supervisor that starts it again when it dies
//
// restartPostgres / stopPostgres / startPostgres / killPlatform / waitForPlatform (at the end) break and
// mend a running stack, for the degradation and chaos tests.
//
// Several stacks run side by side: each has its own directory, database port and HTTP port.
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { ensureSystemPackages } from "./setup.ts";

export const PROJECT_ROOT = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
export const PG_BIN = "/usr/lib/postgresql/15/bin";
export const SUPABASE_CLI = "supabase@3.1.0";

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
  await launchPlatform(dir, opts.exitWithParent);
  await waitForPlatform(dir);

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
  // The supervisor first (it stops its platform child and starts no new one), then whatever is left.
  for (const file of ["supervisor.pid", "platform.pid"]) {
    const pid = readPid(`${dir}/${file}`);
    if (!pid || !alive(pid)) continue;
    Deno.kill(pid, "SIGTERM");
    await waitFor(`${file} (${pid}) to exit`, () => Promise.resolve(!alive(pid)), 12_000)
      .catch(() => Deno.kill(pid, "SIGKILL"));
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

// Fault controls for tests and the chaos run: the database and the functions process of the stack in `dir`.

/** Stops the stack's Postgres (fast shutdown: open connections are closed) and waits until it is down. */
export async function stopPostgres(dir: string): Promise<void> {
  await run(`${PG_BIN}/pg_ctl`, ["-D", `${dir}/pgdata`, "-m", "fast", "-w", "stop"]);
}

/** Starts the stack's Postgres again and waits until it accepts connections. */
export async function startPostgres(dir: string): Promise<void> {
  await run(`${PG_BIN}/pg_ctl`, ["-D", `${dir}/pgdata`, "-l", `${dir}/postgres.log`, "-w", "start"]);
  await waitForPostgres(dir);
}

/** `pg_ctl restart -m fast` (every connection is dropped), then waits until Postgres accepts connections. */
export async function restartPostgres(dir: string): Promise<void> {
  await run(`${PG_BIN}/pg_ctl`, [
    "-D",
    `${dir}/pgdata`,
    "-l",
    `${dir}/postgres.log`,
    "-m",
    "fast",
    "-w",
    "restart",
  ]);
  await waitForPostgres(dir);
}

/** Resolves once the stack's Postgres accepts connections (pg_isready). */
export async function waitForPostgres(dir: string, timeoutMs = 30_000): Promise<void> {
  const url = new URL(readEnvFile(`${dir}/env`).DB_URL);
  await waitFor("Postgres to accept connections", async () => {
    const out = await new Deno.Command(`${PG_BIN}/pg_isready`, {
      args: ["-q", "-h", url.hostname, "-p", url.port, "-U", "postgres", "-d", "postgres"],
      stdout: "null",
      stderr: "null",
    }).output();
    return out.success;
  }, timeoutMs);
}

/** The pid of the stack's platform process (functions gateway + pg_net sender), if it runs. */
export function platformPid(dir: string): number | undefined {
  const pid = readPid(`${dir}/platform.pid`);
  return pid && alive(pid) ? pid : undefined;
}

/**
 * SIGKILLs the platform process (the functions gateway + pg_net sender) and returns its pid. Its supervisor
 * starts a new one; `waitForPlatform(dir, pid)` waits for that.
 */
export function killPlatform(dir: string): Promise<number> {
  const pid = platformPid(dir);
  if (!pid) return Promise.reject(new Error(`no platform process runs for ${dir}`));
  Deno.kill(pid, "SIGKILL");
  return Promise.resolve(pid);
}

/**
 * Resolves with the pid of the platform process once its gateway answers /health, from a process other
 * than `notPid` when given (the one just killed).
 */
export async function waitForPlatform(dir: string, notPid?: number, timeoutMs = 30_000): Promise<number> {
  const apiUrl = readEnvFile(`${dir}/env`).API_URL;
  let pid: number | undefined;
  await waitFor("the functions gateway", async () => {
    try {
      const res = await fetch(`${apiUrl}/health`, { signal: AbortSignal.timeout(2_000) });
      const body = await res.json().catch(() => ({}));
      pid = Number(body.pid) || platformPid(dir);
      return res.ok && pid !== undefined && pid !== notPid && pid === readPid(`${dir}/platform.pid`);
    } catch {
      return false;
    }
  }, timeoutMs);
  return pid!;
}

/** Starts the platform's supervisor (platform.ts) in its own session, so it outlives `deno task stack start`. */
async function launchPlatform(dir: string, exitWithParent?: number): Promise<void> {
  const parent = exitWithParent ? String(exitWithParent) : "";
  await run("bash", [
    "-c",
    `setsid nohup "${Deno.execPath()}" run -A "${PROJECT_ROOT}/scripts/stack/platform.ts" "${dir}" ${parent} ` +
    `>> "${dir}/platform.log" 2>&1 < /dev/null &`,
  ]);
}
