// `deno task stack start|stop|env [name]`: a local stack for manual use (default name "dev").
// `start` prints the environment the way `supabase status -o env` does; `env` prints it again.
// `restart-db [name]` restarts its Postgres (fast); `kill-platform [name]` SIGKILLs the functions process,
// which its supervisor starts again.
import {
  killPlatform,
  readEnvFile,
  restartPostgres,
  stackDir,
  startStack,
  stopStack,
  waitForPlatform,
} from "./stack.ts";

const [command = "start", name = "dev"] = Deno.args;
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
  default:
    console.error("usage: deno task stack start|stop|env|restart-db|kill-platform [name]");
    Deno.exit(2);
}
