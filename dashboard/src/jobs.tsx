/// <reference lib="dom" />
// The jobs: filters (status, type, renderer, owner), search by id, and a table that becomes a list on a
// phone. Each row says what matters for its state (position, estimate and why it waits; stage and progress;
// the error) and offers what can be done (retry a failed job, cancel a queued or running one).
import { useEffect, useState } from "preact/hooks";
import type { Job } from "../../client/mod.ts";
import { JOB_STATUSES, JOB_TYPES } from "../../shared/schemas.ts";
import type { Action } from "./actions.tsx";
import { ago, duration, isUuid, shortId, stageText, WAIT_REASON_TEXT } from "./format.ts";
import type { JobQuery } from "./live.ts";
import type { Session } from "./session.ts";

type Props = {
  jobs?: Job[];
  loading: boolean;
  renderers: string[];
  onQuery: (query: JobQuery) => void;
  ask: (action: Action) => void;
  session: Session;
};

export function Jobs({ jobs, loading, renderers, onQuery, ask, session }: Props) {
  const [query, setQuery] = useState<JobQuery>({});
  const [userText, setUserText] = useState("");
  const [now, setNow] = useState(Date.now());
  useEffect(() => onQuery(query), [query]);
  useEffect(() => setNow(Date.now()), [jobs]);

  const set = (patch: Partial<JobQuery>) => setQuery((q) => ({ ...q, ...patch }));
  const userInvalid = userText.trim() !== "" && !isUuid(userText);
  const filtered = Object.values(query).some((v) => v);

  return (
    <section class="panel jobs" aria-labelledby="jobs-title">
      <div class="jobs-head">
        <h2 id="jobs-title">Jobs</h2>
        <span class="muted small">newest first{loading && " · loading…"}</span>
      </div>
      <form class="filters" onSubmit={(e) => e.preventDefault()} role="search">
        <label>
          Status
          <select name="status" onChange={(e) => set({ status: value(e) as Job["status"] | undefined })}>
            <option value="">All</option>
            {JOB_STATUSES.map((s) => <option value={s} key={s}>{s}</option>)}
          </select>
        </label>
        <label>
          Type
          <select
            name="job_type"
            onChange={(e) => set({ job_type: value(e) as Job["job_type"] | undefined })}
          >
            <option value="">All</option>
            {JOB_TYPES.map((t) => <option value={t} key={t}>{t}</option>)}
          </select>
        </label>
        <label>
          Renderer
          <select name="renderer" onChange={(e) => set({ renderer: value(e) })}>
            <option value="">All</option>
            {renderers.map((r) => <option value={r} key={r}>{r}</option>)}
          </select>
        </label>
        <label>
          User id
          <input
            name="user_id"
            placeholder="any user"
            value={userText}
            aria-invalid={userInvalid}
            onInput={(e) => {
              const text = (e.currentTarget as HTMLInputElement).value;
              setUserText(text);
              if (text.trim() === "" || isUuid(text)) set({ user_id: text.trim() || undefined });
            }}
          />
          {userInvalid && <small class="error-text">A whole user id (UUID)</small>}
        </label>
        <label class="search">
          Job id
          <input
            name="search"
            type="search"
            placeholder="a whole id, or its start"
            onInput={(e) => set({ search: value(e) })}
          />
        </label>
      </form>

      {jobs === undefined
        ? <p class="muted empty">Loading jobs…</p>
        : jobs.length === 0
        ? (
          <p class="empty" data-testid="jobs-empty">
            {filtered ? "No job matches these filters." : "No jobs yet: the queue is empty."}
          </p>
        )
        : (
          <table class="job-table" data-loading={loading}>
            <thead>
              <tr>
                <th>Job</th>
                <th>Status</th>
                <th>Renderer</th>
                <th>Created</th>
                <th class="details">Details</th>
                <th>
                  <span class="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {jobs.map((job) => <JobRow job={job} now={now} key={job.id} ask={ask} session={session} />)}
            </tbody>
          </table>
        )}
    </section>
  );
}

function JobRow({ job, now, ask, session }: { job: Job; now: number; ask: Props["ask"]; session: Session }) {
  return (
    <tr data-job-id={job.id} data-status={job.status}>
      <Cell label="Job">
        <code title={job.id}>{shortId(job.id)}</code> <span class="job-type">{job.job_type}</span>{" "}
        <span class={`badge prio-${job.priority}`}>{job.priority}</span>
      </Cell>
      <Cell label="Status">
        <span class={`badge status-${job.status}`}>{job.status}</span>
      </Cell>
      <Cell label="Renderer">{job.renderer}</Cell>
      <Cell label="Created">
        <time dateTime={job.created_at} title={new Date(job.created_at).toLocaleString()}>
          {ago(job.created_at, now)}
        </time>
      </Cell>
      <Cell label="Details" class="details">
        <JobDetails job={job} />
      </Cell>
      <td class="row-actions">
        {job.status === "failed" && (
          <button
            type="button"
            class="small"
            onClick={() => ask(retryAction(session, job))}
          >
            Retry
          </button>
        )}
        {(job.status === "queued" || job.status === "processing") && (
          <button
            type="button"
            class="small danger-outline"
            onClick={() => ask(cancelAction(session, job))}
          >
            Cancel
          </button>
        )}
      </td>
    </tr>
  );
}

/** A cell whose label shows beside it when the table is a list (phones); its content stays one block. */
function Cell(
  { label, class: className, children }: {
    label: string;
    class?: string;
    children: preact.ComponentChildren;
  },
) {
  return (
    <td data-label={label} class={className}>
      <div>{children}</div>
    </td>
  );
}

function JobDetails({ job }: { job: Job }) {
  switch (job.status) {
    case "queued":
      return (
        <span class="waiting" data-testid="wait">
          <b>#{job.queue_position}</b>
          {job.estimated_wait_seconds === null
            ? " · no estimate"
            : ` · ~${duration(job.estimated_wait_seconds)}${
              job.estimate_basis === "default" ? " (default)" : ""
            }`}
          {job.wait_reason && <span class="reason">{WAIT_REASON_TEXT[job.wait_reason]}</span>}
        </span>
      );
    case "processing":
      return (
        <span class="progress-cell" data-testid="progress">
          <span class="stage">{stageText(job.stage)}</span>
          <span
            class="meter"
            role="progressbar"
            aria-valuenow={job.progress}
            aria-valuemin={0}
            aria-valuemax={100}
          >
            <i style={{ width: `${job.progress}%` }} />
          </span>
          <span class="pct">{job.progress}%</span>
        </span>
      );
    case "failed":
      return (
        <span class="error-text" data-testid="error">
          {job.error_message}
          <span class="muted">{` · ${job.retry_count}/${job.max_retries} retries`}</span>
        </span>
      );
    case "completed": {
      const seconds = job.started_at && job.completed_at
        ? (Date.parse(job.completed_at) - Date.parse(job.started_at)) / 1000
        : null;
      return (
        <span>
          rendered in {duration(seconds)}
          {job.result?.video_url && (
            <>
              {" · "}
              <a href={job.result.video_url} target="_blank" rel="noopener noreferrer">video</a>
            </>
          )}
        </span>
      );
    }
    case "cancelled":
      return <span class="muted">{job.error_message ?? "cancelled"}</span>;
  }
}

function retryAction(session: Session, job: Job): Action {
  return {
    title: `Retry job ${shortId(job.id)}`,
    body: `The ${job.job_type} job goes back to the queue with its retries reset. It failed with: ${
      job.error_message ?? "no message"
    }`,
    confirm: "Retry",
    run: async () => {
      const after = await session.queue.admin.retry(job.id);
      return `Job ${shortId(job.id)} is ${after.status}${
        after.queue_position ? `, position ${after.queue_position}` : ""
      }.`;
    },
  };
}

function cancelAction(session: Session, job: Job): Action {
  return {
    title: `Cancel job ${shortId(job.id)}`,
    body: job.status === "processing"
      ? `The ${job.job_type} job stops now (${job.progress}% done); its render service is told.`
      : `The ${job.job_type} job leaves the queue (position ${job.queue_position}) and never starts.`,
    confirm: "Cancel job",
    danger: true,
    run: async () => {
      await session.queue.cancel(job.id, "cancelled by an admin from the dashboard");
      return `Job ${shortId(job.id)} is cancelled.`;
    },
  };
}

const value = (e: Event) => (e.currentTarget as HTMLInputElement | HTMLSelectElement).value || undefined;
