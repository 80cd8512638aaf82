// `deno task stack start|stop|env [name]`: a local stack for manual use (default name "dev").
// `start` prints the environment the way `supabase status -o env` does; `env` prints it again.
import { readEnvFile, stackDir, startStack, stopStack } from "./stack.ts";

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
  default:
    console.error("usage: deno task stack start|stop|env [name]");
    Deno.exit(2);
}
