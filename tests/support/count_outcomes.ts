// Fills that insert finished jobs with the jobs triggers off (session_replication_role = replica, for speed)
// add the outcome counts the statement trigger would have kept (private.job_outcome_buckets) with this: an
// `insert ... returning status, cancel_reason, created_at, started_at, completed_at` in a CTE named `ins`, then
// `${sql.unsafe(COUNT_INSERTED_OUTCOMES)}`. It reads the returned rows, never the table (a read would set the
// hint bits a fresh table lacks): grouped per minute of completed_at and per offsets of created_at and
// started_at, each group counted through private.job_outcome_of once (exact: a bucket is whole minutes).
export const COUNT_INSERTED_OUTCOMES = `,
  inserted_groups as (
    select status, cancel_reason, created_at - completed_at as c, started_at - completed_at as s,
           date_trunc('minute', completed_at), count(*) as n, max(completed_at) as last
      from ins where completed_at is not null group by 1, 2, 3, 4, 5)
  select private.job_outcome_add(f.bucket, f.outcome, sum(m.n)::bigint, sum(m.n * f.timed)::bigint,
                                 sum(m.n * f.wait_seconds), sum(m.n * f.processing_seconds), max(m.last))
    from inserted_groups m
   cross join lateral private.job_outcome_of(m.status, m.cancel_reason, m.last + m.c, m.last + m.s, m.last) f
   group by f.bucket, f.outcome`;
