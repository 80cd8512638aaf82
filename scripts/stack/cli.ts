// `deno task stack start|stop|env [name]`: a local stack for manual use (default name "dev").
// `start` prints the environment the way `supabase status -o env` does; `env` prints it again.
// `restart-db [name]` restarts its Postgres (fast); `kill-platform [name]` SIGKILLs the functions process,
// which its supervisor starts again. `token [name] [--admin] [--user <uuid>]` prints a user access token
// signed by the stack's key (a new user, or the given one; 8 hours), e.g. to sign in to the dashboard.
import postgres from "postgres";
import { createUser } from "./tokens.ts";
import {
  killPlatform,
  readEnvFile,
  restartPostgres,
  stackDir,
  startStack,
  stopStack,
  waitForPlatform,
} from "./stack.ts";

const [command = "start", ...rest] = Deno.args;
const options = rest.filter((arg, i) => arg.startsWith("--") || rest[i - 1] === "--user");
const name = rest.find((arg) => !options.includes(arg)) ?? "dev";
const printEnv = (env: Record<string, string>) => {
  for (const [k, v] of Object.entries(env)) console.log(`${k}=${JSON.stringify(v)}`);
};

switch (command) {
  case "start":
    printEnv(await startStack({ name }));
    console.error(`# stop it with: deno task stack stop ${name}   (env file: ${stackDir(name)}/env)`);
    break;
  case "stop":
    await stopStack(name);
    console.error(`stack ${name} stopped`);
    break;
  case "env":
    printEnv(readEnvFile(`${stackDir(name)}/env`));
    break;
  case "restart-db":
    await restartPostgres(stackDir(name));
    console.error(`stack ${name}: Postgres restarted`);
    break;
  case "kill-platform": {
    const killed = await killPlatform(stackDir(name));
    const pid = await waitForPlatform(stackDir(name), killed);
    console.error(`stack ${name}: platform process ${killed} killed; ${pid} runs now`);
    break;
  }
  case "token": {
    const env = readEnvFile(`${stackDir(name)}/env`);
    const userId = options.includes("--user") ? options[options.indexOf("--user") + 1] : undefined;
    if (userId !== undefined && !/^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(userId)) {
      console.error("--user takes a user id (a UUID)");
      Deno.exit(2);
    }
    const sql = postgres(env.DB_URL, { max: 1, onnotice: () => {} });
    const user = await createUser(env, sql, {
      admin: options.includes("--admin"),
      userId,
      expiresInSeconds: 8 * 3600,
    });
    await sql.end();
    console.log(user.token);
    console.error(`# user ${user.userId}${options.includes("--admin") ? " (admin)" : ""}, valid 8 hours`);
    break;
  }
  default:
    console.error(
      "usage: deno task stack start|stop|env|restart-db|kill-platform [name]\n" +
        "       deno task stack token [name] [--admin] [--user <uuid>]",
    );
    Deno.exit(2);
}
