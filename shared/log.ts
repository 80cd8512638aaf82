// One JSON line per event, so logs can be queried by field (job_id, attempt, worker_id, duration_ms).
// Callers pass only identifiers and measurements: never a token, a key or a request body.

export type LogFields = Record<string, unknown>;

/** Writes one JSON log line: `{"ts", "event", ...fields}`. */
export function log(event: string, fields: LogFields = {}): void {
  console.log(JSON.stringify({ ts: new Date().toISOString(), event, ...fields }));
}

/** Milliseconds since `start` (a `performance.now()` reading), rounded for logs. */
export function since(start: number): number {
  return Math.round(performance.now() - start);
}

/** A `log` that writes with one scope's fields (job_id, attempt, worker_id, …) on every line. */
export type ScopedLog = (event: string, fields?: LogFields) => void;

/** `scopedLog({ job_id, attempt, worker_id })("job_released")`: the scope once, not rebuilt at every line. */
export const scopedLog = (scope: LogFields): ScopedLog => (event, fields = {}) =>
  log(event, { ...scope, ...fields });
