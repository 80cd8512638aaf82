// Our queue as its callers use it, and the fixtures the figures fill it with.
//
// Each call is what shared/db.ts's asCaller sends (its callAs): one message, one transaction, that takes on
// the caller's identity (`set local role`, `request.jwt.claims`), then makes the one SQL call shared/queue.ts
// makes, with the same named arguments. It runs on a pool of its own so that 10 concurrent callers get 10
// connections (one functions instance keeps 4) and so that its sessions carry their own application_name.
import postgres from "postgres";
import { callAs, type CallSql, type Statement } from "../../shared/db.ts";
import type { Claim, Job, Stats } from "../../shared/queue.ts";
import { resetQueue } from "../../tests/support/reset_queue.ts";
import { COUNT_INSERTED_OUTCOMES } from "../../tests/support/count_outcomes.ts";

/** Who a call runs as: a user (role authenticated, their claims) or a secret-key holder (service_role). */
export type Identity = { role: "authenticated" | "service_role"; claims: Record<string, unknown> };

export const SERVICE_ROLE: Identity = { role: "service_role", claims: { role: "service_role" } };

/** A signed-in user: the claims of a Supabase Auth access token that SQL reads (sub, role, aud, app_metadata). */
export function asUser(userId: string): Identity {
  return {
    role: "authenticated",
    claims: { sub: userId, role: "authenticated", aud: "authenticated", app_metadata: { provider: "email" } },
  };
}

/** The job type every measured enqueue uses (a `doubt`: high priority, the orchestrator renders it). */
const JOB_TYPE = "doubt";

export class OurQueue {
  static readonly APPLICATION_NAME = "bench-ours";
  readonly sql: postgres.Sql;

  constructor(dbUrl: string, connections = 10) {
    this.sql = postgres(dbUrl, {
      max: connections,
      prepare: false, // as shared/db.ts: Supabase's pooler runs in transaction mode
      fetch_types: false,
      onnotice: () => {},
      connection: { application_name: OurQueue.APPLICATION_NAME },
    });
  }

  /** One transaction as `who`, making the one call `query` selects `as result`. */
  call<T>(who: Identity, query: (sql: CallSql) => Statement): Promise<T> {
    return callAs<T>(this.sql, who.role, who.claims, query);
  }

  /** queue.enqueue_job as the enqueue function calls it (no idempotency key, priority, schedule or renderer). */
  enqueue(who: Identity, i: number): Promise<{ job: Job; created: boolean }> {
    return this.call(who, (tx) =>
      tx`select queue.enqueue_job(
           p_job_type => ${JOB_TYPE}, p_payload => ${tx.json({ question: `Benchmark question ${i}` })},
           p_idempotency_key => ${null}, p_priority => ${null},
           p_run_at => ${null}::timestamptz, p_renderer => ${null},
           p_expires_at => ${null}::timestamptz) as result`);
  }

  /** queue.claim_jobs for ONE job, as the service role (the worker's identity). */
  async claimOne(workerId: string): Promise<Claim | undefined> {
    const claims = await this.call<Claim[]>(
      SERVICE_ROLE,
      (tx) => tx`select queue.claim_jobs(p_worker_id => ${workerId}, p_limit => 1) as result`,
    );
    return claims[0];
  }

  /** queue.complete_job as a render service's `completed` callback reaches it. */
  complete(claim: Claim): Promise<Job> {
    return this.call(
      SERVICE_ROLE,
      (tx) =>
        tx`select queue.complete_job(p_job_id => ${claim.job_id}::uuid, p_attempt => ${claim.attempt}::int,
           p_token => ${claim.callback_token},
           p_result => ${tx.json({ video_url: `https://cdn.example.test/${claim.job_id}.mp4` })}) as result`,
    );
  }

  /** One job with its exact position and estimate, as the status function reads it. */
  getJob(who: Identity, jobId: string): Promise<Job> {
    return this.call(who, (tx) => tx`select queue.get_job(p_job_id => ${jobId}::uuid) as result`);
  }

  /** The queue's stats, as the worker reads them after each pass. */
  stats(): Promise<Stats> {
    return this.call(SERVICE_ROLE, (tx) => tx`select queue.get_queue_stats() as result`);
  }

  close(): Promise<void> {
    return this.sql.end({ timeout: 5 });
  }
}

// Fixtures (as the superuser; never what is measured) -------------------------------------------------------

/** The clean queue of the pgTAP files: no jobs, the seed's config (caps and per-user limits), no pauses. */
export async function cleanQueue(admin: postgres.Sql): Promise<void> {
  await resetQueue(admin);
}

/** `count` users in auth.users (the local stand-in of Supabase Auth's table); returns their ids. */
export async function createUsers(admin: postgres.Sql, count: number, tag: string): Promise<string[]> {
  const rows = await admin<{ id: string }[]>`
    insert into auth.users (email)
    select ${tag} || '-' || g || '@bench.example.test' from generate_series(1, ${count}) g
    returning id`;
  return rows.map((r) => r.id);
}

/**
 * `count` waiting jobs of the three types (as the enqueue function makes them), created over the last two
 * hours, owned round-robin by `owners`; then VACUUM ANALYZE, the state autovacuum leaves a busy table in.
 */
export async function fillWaiting(admin: postgres.Sql, count: number, owners: string[]): Promise<void> {
  if (count > 0) {
    await admin`insert into public.jobs (job_type, status, payload, user_id, created_at)
      select (array['doubt', 'topic_short', 'daily_ca'])[1 + g % 3], 'queued',
             jsonb_build_object('question', 'background ' || g),
             (${owners}::uuid[])[1 + g % ${owners.length}],
             now() - interval '2 hours' + g * (interval '2 hours' / ${count})
        from generate_series(0, ${count - 1}) g`;
  }
  await vacuumAnalyze(admin);
}

export async function vacuumAnalyze(admin: postgres.Sql): Promise<void> {
  await admin.unsafe("vacuum analyze public.jobs");
}

/**
 * `count` finished (completed) jobs spread over the last 29 days, as retention keeps them. Written with the
 * jobs triggers off (session_replication_role = replica: twice as fast for a million rows), so the columns
 * its BEFORE INSERT trigger derives are given here the same way (priority and renderer from job_types), and
 * the outcome counts its statement trigger keeps are added from the inserted rows (COUNT_INSERTED_OUTCOMES).
 * The other triggers count queued rows only.
 */
export async function fillFinished(admin: postgres.Sql, count: number): Promise<void> {
  await admin.begin(async (tx) => {
    await tx`set local session_replication_role = replica`;
    await tx`with ins as (
        insert into public.jobs (job_type, priority, renderer, status, payload, result, attempt,
                                 created_at, started_at, completed_at, updated_at)
        select t.job_type, t.priority, t.default_renderer, 'completed', '{"question": "finished"}',
               '{"video_url": "https://cdn.example.test/v.mp4"}', 1,
               at.t - interval '3 minutes', at.t - interval '2 minutes', at.t, at.t
          from generate_series(1, ${count}) g
          join public.job_types t on t.job_type = (array['doubt', 'topic_short', 'daily_ca'])[1 + g % 3]
          cross join lateral (select now() - g * (interval '29 days' / ${count})) as at(t)
        returning status, cancel_reason, created_at, started_at, completed_at)
      ${tx.unsafe(COUNT_INSERTED_OUTCOMES)}`;
  });
}
