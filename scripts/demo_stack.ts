// The demo's world: a local stack and two reference renderers, registered for every renderer kind, with
// the demo's capacity (the demo talks to the queue with the typed client); `await using` stops it.
import postgres from "postgres";
import { type SpawnedRenderer, spawnRenderer } from "../renderer/spawn.ts";
import { stackDir, type StackEnv, startStack, stopStack } from "./stack/stack.ts";
import { createUser, type LocalUser } from "./stack/tokens.ts";

const STACK = "demo";
const CLIP_SECONDS = Number(Deno.env.get("DEMO_CLIP_SECONDS") ?? 5);
const RENDERER_KINDS = ["manim", "revideo", "orchestrator"];
/** Each renderer fails a seeded 15% of renders (retryably), so retries show. */
const RENDERERS = [
  { name: "render-1", faults: { retryable: 0.15, seed: 7 } },
  { name: "render-2", faults: { retryable: 0.15, seed: 11 } },
];

export interface DemoStack extends AsyncDisposable {
  env: StackEnv;
  sql: postgres.Sql;
  renderers: SpawnedRenderer[];
  /** A user with `queue_role: admin`, to watch the whole queue. */
  admin: LocalUser;
  /** A new signed-in user. */
  newUser(): Promise<LocalUser>;
}

/**
 * Starts the demo stack and two renderers (5 s clips, or DEMO_CLIP_SECONDS; 3 renders each at once),
 * registers both for every renderer kind, and sets a capacity of 4 (Manim 2) with no wait between retries.
 * Says what it does on stdout.
 */
export async function demoStack(say: (line: string) => void = console.log): Promise<DemoStack> {
  await using cleanup = new AsyncDisposableStack(); // undoes what started if a later step fails
  cleanup.defer(async () => {
    await stopStack(STACK);
    say(`Stopped the renderers and the stack (videos were in ${stackDir(STACK)}/videos).`);
  });
  say(`Starting the local stack (Postgres + pg_cron, migrations, functions) …`);
  const env = await startStack({ name: STACK, exitWithParent: Deno.pid, log: (l) => say(`  [stack] ${l}`) });
  const sql = postgres(env.SUPABASE_DB_URL, { max: 2, prepare: false, onnotice: () => {} });
  cleanup.defer(() => sql.end());

  const renderers: SpawnedRenderer[] = [];
  for (const { name, faults } of RENDERERS) {
    const storageDir = `${stackDir(STACK)}/videos/${name}`;
    await Deno.mkdir(storageDir, { recursive: true });
    renderers.push(cleanup.use(
      await spawnRenderer({
        name,
        storageDir,
        clipSeconds: CLIP_SECONDS,
        faults,
        maxConcurrent: 3,
        logFile: `${stackDir(STACK)}/${name}.log`,
      }),
    ));
  }
  for (const renderer of renderers) {
    for (const kind of RENDERER_KINDS) {
      await sql`insert into render_endpoints (renderer, url) values (${kind}, ${renderer.endpointUrl})`;
    }
  }
  await sql`update job_queue_config set max_concurrent_renders = 4, max_manim_renders = 2,
            retry_interval_minutes = 0 where id = (select id from job_queue_config limit 1)`;
  say(
    `Two renderers registered for manim, revideo and orchestrator: ${
      renderers.map((r) => r.endpointUrl).join(", ")
    }`,
  );
  say(`Capacity: 4 renders at once (×peak multiplier inside peak hours), at most 2 Manim.`);

  const admin = await createUser(env, sql, { admin: true });
  const stopAll = cleanup.move(); // from here on, the caller's `await using` stops everything
  return {
    env,
    sql,
    renderers,
    admin,
    newUser: () => createUser(env, sql),
    [Symbol.asyncDispose]: () => stopAll.disposeAsync(),
  };
}
