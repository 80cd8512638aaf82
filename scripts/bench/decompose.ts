// Where a claim + completion's cost comes from, measured with pgbench (Postgres's own C client: no client
// cost to speak of), 10 clients, one job per claim, each step on the same cluster as the other figures:
//   floor       a queue table of the kind graphile-worker and pg-boss use: a narrow row, one partial index to
//               claim by; claim = one UPDATE … WHERE id = (… FOR UPDATE SKIP LOCKED), completion = DELETE
//   obligations the floor plus, one at a time, the fewest writes our contract asks for, on narrow tables and
//               with no logic around them (a ceiling for any design that keeps them):
//                 history   the finished row stays (GET /status serves its result): completion is an UPDATE
//                 + cap     an exact global cap, as the cheapest known design keeps it: a slot row taken with
//                           SKIP LOCKED at the claim and given back at the completion, in the same transactions
//                 + events  one Realtime broadcast (realtime.send) per state change, as API.md's Realtime asks
//   our rows    our jobs table's two state changes as bare UPDATEs (queued → processing → completed): its
//               width and its indexes (stats, limits, positions, leases, history), no trigger, no FK check
//   + triggers  the same with the jobs triggers on (Realtime event, queued depth, slot release, wake-up,
//               webhook outbox, the direct-status rule)
//   functions   queue.claim_jobs(p_limit => 1) + queue.complete_job, as the worker and a callback call them
// and the same ladder for an enqueue (one INSERT per transaction): the floor's table; our jobs row bare (no
// trigger); with its triggers (defaults from job_types, queued depth, outcome buckets, wake-up); and
// queue.enqueue_job, which also checks its input and answers with the job's exact position and estimate.
// Context for the throughput figure (rows without a verdict): the gap between each step and the next is what
// that layer costs here.
import type { BenchContext, Figure, Row } from "./context.ts";
import { PG_BIN } from "../stack/stack.ts";
import { cleanQueue, vacuumAnalyze } from "./ours.ts";

const SECONDS = 10;
const WAITING = 40_000;

const FLOOR_SETUP = `
  drop schema if exists bench_floor cascade;
  create schema bench_floor;
  create table bench_floor.jobs (
    id bigint generated always as identity primary key, queue text not null, priority int not null default 0,
    run_at timestamptz not null default now(), locked_at timestamptz, locked_by text,
    attempts int not null default 0, payload jsonb not null);
  create index jobs_claim on bench_floor.jobs (priority, run_at, id) where locked_at is null;
  insert into bench_floor.jobs (queue, payload)
  select 'doubt', jsonb_build_object('question', 'q' || g) from generate_series(1, ${WAITING}) g;`;

const FLOOR = `
update bench_floor.jobs j set locked_at = now(), locked_by = 'w', attempts = j.attempts + 1
 where j.id = (select c.id from bench_floor.jobs c where c.locked_at is null and c.run_at <= now()
                order by c.priority, c.run_at, c.id limit 1 for update skip locked)
returning j.id as job_id \\gset
delete from bench_floor.jobs where id = :job_id;
`;

const OBLIGATIONS_SETUP = `
  drop schema if exists bench_obligations cascade;
  create schema bench_obligations;
  create table bench_obligations.jobs (
    id bigint generated always as identity primary key, status text not null default 'queued',
    priority int not null default 0, created_at timestamptz not null default now(), attempt int not null default 0,
    token_hash text, started_at timestamptz, completed_at timestamptz, payload jsonb not null, result jsonb);
  create index jobs_claim on bench_obligations.jobs (priority, created_at, id) where status = 'queued';
  create table bench_obligations.slots (slot int primary key, job_id bigint) with (fillfactor = 25);
  insert into bench_obligations.slots select g, null from generate_series(1, 100) g;
  insert into bench_obligations.jobs (payload)
  select jsonb_build_object('question', 'q' || g) from generate_series(1, ${WAITING}) g;`;

/** The obligations' script: `cap` adds the slot, `events` the broadcasts (each needs the one before). */
function obligations(cap: boolean, events: boolean): string {
  const broadcast = (status: string) =>
    `select realtime.send(jsonb_build_object('id', (:job_id)::bigint, 'status', '${status}'), 'job',
                        'job:' || (:job_id)::text, true);`;
  const claim = [
    `update bench_obligations.jobs j
   set status = 'processing', attempt = j.attempt + 1, started_at = now(), token_hash = md5(random()::text)
 where j.id = (select c.id from bench_obligations.jobs c where c.status = 'queued'
                order by c.priority, c.created_at, c.id limit 1 for update skip locked)
returning j.id as job_id \\gset`,
    ...(cap
      ? [`update bench_obligations.slots s set job_id = :job_id
 where s.slot = (select f.slot from bench_obligations.slots f where f.job_id is null order by f.slot limit 1
                  for update skip locked);`]
      : []),
    ...(events ? [broadcast("processing")] : []),
  ];
  const complete = [
    `update bench_obligations.jobs set status = 'completed', completed_at = now(),
       result = '{"video_url": "https://v.test/x.mp4"}'
 where id = :job_id and status = 'processing';`,
    ...(cap ? ["update bench_obligations.slots set job_id = null where job_id = :job_id;"] : []),
    ...(events ? [broadcast("completed")] : []),
  ];
  // a transaction of one statement (the history step) needs no BEGIN / COMMIT round trips
  const transaction = (statements: string[]) =>
    statements.length > 1 ? ["begin;", ...statements, "commit;"] : statements;
  return [...transaction(claim), ...transaction(complete)].join("\n") + "\n";
}

const OUR_ROWS = `
update public.jobs j set status = 'processing', attempt = j.attempt + 1, started_at = now(),
       lease_expires_at = now() + interval '10 minutes', next_attempt_at = null, worker_id = 'w', updated_at = now()
 where j.id = (select c.id from public.jobs c
                where c.status = 'queued' and c.renderer = 'orchestrator' and c.priority_rank = 0
                order by c.renderer, c.priority_rank, c.created_at, c.id limit 1 for update skip locked)
returning j.id as job_id \\gset
update public.jobs j set status = 'completed', completed_at = now(), result = '{"video_url": "https://v.test/x.mp4"}',
       progress = 100, stage = 'completed', lease_expires_at = null, updated_at = now()
 where j.id = :job_id;
`;

const FUNCTIONS = `
select coalesce(c ->> 'job_id', '') as job_id, coalesce(c ->> 'attempt', '0') as attempt,
       coalesce(c ->> 'callback_token', '') as token
  from (select queue.claim_jobs(p_worker_id => 'w', p_limit => 1) -> 0 as c) x \\gset
-- a claim can come back empty (every candidate locked by another claim): then there is nothing to complete
select queue.complete_job(p_job_id => nullif(:job_id, '')::uuid, p_attempt => (:attempt)::int, p_token => :token,
                          p_result => '{"video_url": "https://v.test/x.mp4"}') is not null as ok
 where :job_id <> '';
`;

const ENQUEUE_FLOOR =
  `insert into bench_floor.jobs (queue, payload) values ('doubt', '{"question": "q"}');\n`;
const ENQUEUE_OUR_ROW =
  `insert into public.jobs (job_type, priority, renderer, status, payload, next_attempt_at)
values ('doubt', 'high', 'orchestrator', 'queued', '{"question": "q"}', now());\n`;
// as the database owner (an admin: no per-user limits), the role switch of a real call left out
const ENQUEUE_FUNCTION =
  `select queue.enqueue_job(p_job_type => 'doubt', p_payload => '{"question": "q"}') is not null;\n`;

export const decompose: Figure = {
  name: "decompose",
  async run(ctx: BenchContext): Promise<Row[]> {
    const { admin } = ctx;
    const dir = await Deno.makeTempDir({ prefix: "bench-decompose-" });
    const fillOurs = async () => {
      await cleanQueue(admin);
      await admin`insert into public.jobs (job_type, status, payload)
        select 'doubt', 'queued', jsonb_build_object('question', 'q' || g) from generate_series(1, ${WAITING}) g`;
      await vacuumAnalyze(admin);
    };
    const completed = async () =>
      Number((await admin`select count(*) as n from public.jobs where status = 'completed'`)[0].n);
    const enqueued = async () => Number((await admin`select count(*) as n from public.jobs`)[0].n); // from a clean queue
    const steps: {
      figure?: string;
      name: string;
      script: string;
      setup: () => Promise<unknown>;
      done: () => Promise<number>;
      options?: string;
    }[] = [
      {
        name: "floor: a narrow queue table, UPDATE … SKIP LOCKED then DELETE",
        script: FLOOR,
        setup: async () => {
          await admin.unsafe(FLOOR_SETUP).simple();
          await admin.unsafe("vacuum analyze bench_floor.jobs");
        },
        done: async () => WAITING - Number((await admin`select count(*) as n from bench_floor.jobs`)[0].n),
      },
      ...([
        ["obligations: the finished row kept (completion = UPDATE)", false, false],
        ["obligations: + an exact cap (a slot row taken and given back)", true, false],
        ["obligations: + a Realtime broadcast per state change", true, true],
      ] as const).map(([name, cap, events]) => ({
        name,
        script: obligations(cap, events),
        setup: async () => {
          await admin.unsafe(OBLIGATIONS_SETUP).simple();
          await admin.unsafe("vacuum analyze bench_obligations.jobs, bench_obligations.slots");
        },
        done: async () =>
          Number(
            (await admin`select count(*) as n from bench_obligations.jobs where status = 'completed'`)[0].n,
          ),
      })),
      {
        name: "our jobs rows: the two state changes as bare UPDATEs, no triggers",
        script: OUR_ROWS,
        setup: fillOurs,
        done: completed,
        options: "-c session_replication_role=replica",
      },
      { name: "our jobs rows with the jobs triggers", script: OUR_ROWS, setup: fillOurs, done: completed },
      {
        name: "our functions: claim_jobs(p_limit => 1) + complete_job",
        script: FUNCTIONS,
        setup: fillOurs,
        done: completed,
      },
      {
        figure: "enqueue",
        name: "floor: INSERT into the narrow queue table",
        script: ENQUEUE_FLOOR,
        setup: () => admin.unsafe(FLOOR_SETUP).simple(),
        done: async () => Number((await admin`select count(*) as n from bench_floor.jobs`)[0].n) - WAITING,
      },
      {
        figure: "enqueue",
        name: "our jobs row: a bare INSERT, no triggers",
        script: ENQUEUE_OUR_ROW,
        setup: () => cleanQueue(admin),
        done: enqueued,
        options: "-c session_replication_role=replica",
      },
      {
        figure: "enqueue",
        name: "our jobs row with the jobs triggers",
        script: ENQUEUE_OUR_ROW,
        setup: () => cleanQueue(admin),
        done: enqueued,
      },
      {
        figure: "enqueue",
        name: "our function: enqueue_job (its answer carries the exact position and estimate)",
        script: ENQUEUE_FUNCTION,
        setup: () => cleanQueue(admin),
        done: enqueued,
      },
    ];
    const rows: Row[] = [];
    try {
      for (const step of steps) {
        await step.setup();
        const file = `${dir}/step.sql`;
        await Deno.writeTextFile(file, step.script);
        const out = await new Deno.Command(`${PG_BIN}/pgbench`, {
          args: [
            "-n",
            "-M",
            "extended",
            "-c",
            "10",
            "-j",
            "2",
            "-T",
            String(SECONDS),
            "-f",
            file,
            ctx.env.DB_URL,
          ],
          env: { PGOPTIONS: step.options ?? "" },
          stdout: "piped",
          stderr: "piped",
        }).output();
        const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
        const failed = text.match(/number of failed transactions: (\d+)/)?.[1];
        if (!out.success || failed !== "0") throw new Error(`pgbench failed on "${step.name}":\n${text}`);
        // jobs completed (or enqueued), counted in the database (a claim can come back empty)
        const tps = await step.done() / SECONDS;
        const figure = step.figure ?? "claim + complete";
        ctx.log(`decompose: ${figure}, ${step.name}: ${Math.round(tps)}/s`);
        rows.push({
          figure: `  ${figure}, ${step.name} (pgbench, 10 clients)`,
          measured: `${Math.round(tps).toLocaleString("en")}/s`,
          target: "",
          data: { jobs_per_second: tps, seconds: SECONDS },
        });
      }
    } finally {
      await admin.unsafe(
        "drop schema if exists bench_floor cascade; drop schema if exists bench_obligations cascade",
      )
        .simple();
      await cleanQueue(admin);
      await Deno.remove(dir, { recursive: true });
    }
    return rows;
  },
};
