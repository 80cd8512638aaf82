/// <reference lib="dom" />
// The dashboard once signed in: header, alerts, counters, capacity, the queue by priority, the charts and
// the jobs; the access-denied state for a signed-in non-admin.
import { useEffect, useMemo, useState } from "preact/hooks";
import type { PeakSchedule, Stats } from "../../client/mod.ts";
import { type Action, ConfirmDialog, OutcomeBanner, useActions } from "./actions.tsx";
import { HourlyCharts } from "./charts.tsx";
import type { DashboardConfig } from "./config.ts";
import { clock, clockSeconds, count, duration, percent } from "./format.ts";
import { Jobs } from "./jobs.tsx";
import { type DashboardData, LiveQueue, type LiveState, POLL_MS } from "./live.ts";
import type { Session } from "./session.ts";

type Props = { config: DashboardConfig; session: Session; onSignOut: (why?: string) => void };

export function Dashboard({ config, session, onSignOut }: Props) {
  const live = useMemo(() => new LiveQueue(session, config), [session, config]);
  const [state, setState] = useState<LiveState>(live.state);
  useEffect(() => {
    const stop = live.subscribe(setState);
    live.start();
    return () => (stop(), live.stop());
  }, [live]);
  useEffect(() => {
    if (state.signedOut) onSignOut(`Signed out: ${state.signedOut}`);
  }, [state.signedOut]);
  const actions = useActions(() => void live.refresh());

  if (state.access === "denied") return <AccessDenied who={session.who} onSignOut={() => onSignOut()} />;
  const { data } = state;
  return (
    <>
      <Header
        state={state}
        who={session.who}
        onSignOut={() => onSignOut()}
        ask={actions.ask}
        session={session}
      />
      <main class="page" aria-busy={!data}>
        <OutcomeBanner outcome={actions.outcome} onClose={actions.clearOutcome} />
        {state.error && (
          <div class="banner warning" role="alert" data-testid="refresh-error">
            <span>
              Could not refresh: {state.error}
              {state.updatedAt && ` Showing the data from ${clockSeconds(state.updatedAt)}.`}
            </span>
            <button type="button" onClick={() => void live.refresh()}>Try again</button>
          </div>
        )}
        {data
          ? (
            <>
              <AlertBanners data={data} />
              <Counters stats={data.stats} />
              <div class="grid-2">
                <Capacity stats={data.stats} peak={data.peak} ask={actions.ask} session={session} />
                <Priorities stats={data.stats} />
              </div>
              <HourlyCharts history={data.history} />
            </>
          )
          : !state.error && <Skeleton />}
        <Jobs
          jobs={data?.jobs}
          loading={state.jobsLoading}
          renderers={data ? Object.keys(data.stats.by_renderer) : []}
          onQuery={(q) => live.setQuery(q)}
          ask={actions.ask}
          session={session}
        />
      </main>
      <ConfirmDialog
        action={actions.pending}
        running={actions.running}
        onConfirm={actions.confirm}
        onCancel={actions.dismiss}
      />
    </>
  );
}

type Ask = (action: Action) => void;

function Header(
  { state, who, onSignOut, ask, session }: {
    state: LiveState;
    who: string;
    onSignOut: () => void;
    ask: Ask;
    session: Session;
  },
) {
  const paused = state.data?.stats.paused;
  return (
    <header class="top">
      <div class="title">
        <h1>Video queue</h1>
        <span class="live" data-mode={state.mode}>
          {state.mode === "realtime" ? "● Live" : `Refreshing every ${POLL_MS / 1000} s`}
          {state.updatedAt && ` · updated ${clockSeconds(state.updatedAt)}`}
        </span>
      </div>
      <div class="header-actions">
        {paused !== undefined && (
          <button
            type="button"
            class={paused ? "primary" : ""}
            data-testid="queue-pause-toggle"
            onClick={() => ask(pauseAction(session, !paused))}
          >
            {paused ? "Resume queue" : "Pause queue"}
          </button>
        )}
        <span class="who" title={who}>{who}</span>
        <button type="button" class="link" onClick={onSignOut}>Sign out</button>
      </div>
    </header>
  );
}

/** Pause or resume the whole queue (no renderer) or one renderer. */
function pauseAction(session: Session, pause: boolean, renderer?: string): Action {
  const scope = renderer ? `renderer ${renderer}` : "the queue";
  return {
    title: `${pause ? "Pause" : "Resume"} ${scope}`,
    body: pause
      ? `Nothing new starts on ${scope}; running jobs finish, and queued jobs keep their places.`
      : `Queued jobs on ${scope} start again as capacity allows.`,
    confirm: pause ? "Pause" : "Resume",
    danger: pause,
    run: async () => {
      await (pause ? session.queue.admin.pause(renderer) : session.queue.admin.resume(renderer));
      return `${renderer ? `Renderer ${renderer}` : "The queue"} is ${pause ? "paused" : "running again"}.`;
    },
  };
}

function AlertBanners({ data }: { data: DashboardData }) {
  const { stats, alerts } = data;
  const paused = Object.entries(stats.by_renderer).filter(([, r]) => r.paused).map(([name]) => name);
  return (
    <div class="alerts" data-testid="alerts">
      {stats.paused && (
        <div class="banner info" role="alert" data-alert="paused">
          The queue is paused: nothing new starts until it is resumed.
        </div>
      )}
      {!stats.paused && paused.length > 0 && (
        <div class="banner info" role="alert" data-alert="renderer_paused">
          Paused {paused.length === 1 ? "renderer" : "renderers"}: {paused.join(", ")}.
        </div>
      )}
      {alerts.active.map((a) => (
        <div class="banner danger" role="alert" data-alert={a.kind} key={`${a.kind}:${a.renderer ?? ""}`}>
          {a.message}
        </div>
      ))}
    </div>
  );
}

function Counters({ stats }: { stats: Stats }) {
  const cards: [string, string, string, string?][] = [
    ["queued", "Queued", count(stats.queued)],
    ["processing", "Processing", count(stats.processing), `of ${stats.capacity.effective} slots`],
    ["completed_today", "Completed today", count(stats.completed_today)],
    ["failed_today", "Failed today", count(stats.failed_today), `${stats.cancelled_today} cancelled`],
    ["avg_wait_seconds", "Average wait", duration(stats.avg_wait_seconds), "last hour"],
    ["avg_processing_seconds", "Average render", duration(stats.avg_processing_seconds), "last hour"],
    ["throughput_last_hour", "Finished, last hour", count(stats.throughput_last_hour)],
    ["oldest_queued_seconds", "Oldest waiting", duration(stats.oldest_queued_seconds)],
  ];
  return (
    <section class="cards" aria-label="Queue counters">
      {cards.map(([key, label, value, note]) => (
        <div class={`card ${key === "failed_today" && stats.failed_today > 0 ? "bad" : ""}`} key={key}>
          <span class="label">{label}</span>
          <b data-stat={key}>{value}</b>
          {note && <span class="note">{note}</span>}
        </div>
      ))}
    </section>
  );
}

/** A bar of `used` against `of`; a capacity meter turns amber when full. */
function Meter(
  { used, of, label, capacity }: { used: number; of: number; label: string; capacity?: boolean },
) {
  const share = of > 0 ? Math.min(100, (100 * used) / of) : used > 0 ? 100 : 0;
  return (
    <span
      class="meter"
      role="meter"
      aria-label={label}
      aria-valuenow={used}
      aria-valuemin={0}
      aria-valuemax={of}
    >
      <i style={{ width: `${share}%` }} class={capacity && share >= 100 ? "full" : ""} />
    </span>
  );
}

function Capacity(
  { stats, peak, ask, session }: { stats: Stats; peak: PeakSchedule; ask: Ask; session: Session },
) {
  const { capacity } = stats;
  const windows = peak.windows.map((w) => `${w.start}–${w.end}`).join(", ");
  const next = peak.next_boundary_at ? clock(peak.next_boundary_at, peak.time_zone) : null;
  return (
    <section class="panel" aria-labelledby="capacity-title">
      <h2 id="capacity-title">Capacity</h2>
      <div class="capacity-total">
        <div>
          <b data-stat="capacity_in_use">{stats.processing}</b> of{" "}
          <b data-stat="effective">{capacity.effective}</b> slots in use
        </div>
        <Meter used={stats.processing} of={capacity.effective} label="Capacity in use" capacity />
      </div>
      <p class="muted small" data-testid="peak">
        {capacity.peak
          ? <>Peak hours: ×{capacity.multiplier} on {capacity.max_concurrent}</>
          : <>Off-peak: {capacity.max_concurrent} (×{capacity.multiplier} in peak hours)</>}
        {windows ? ` · windows ${windows} (${peak.time_zone})` : " · no peak windows"}
        {next && ` · ${capacity.peak ? "until" : "peak from"} ${next}`}
      </p>
      <table class="renderers">
        <thead>
          <tr>
            <th>Renderer</th>
            <th>Running</th>
            <th class="wide">Load</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          {Object.entries(stats.by_renderer).map(([name, r]) => (
            <tr key={name} data-renderer={name}>
              <td>
                {name} {r.paused && <span class="badge paused">paused</span>}
              </td>
              <td>
                <span data-renderer-stat="processing">{r.processing}</span> / {r.limit}
              </td>
              <td class="wide">
                <Meter used={r.processing} of={r.limit} label={`${name} load`} capacity />
              </td>
              <td class="row-actions">
                <button
                  type="button"
                  class="small"
                  onClick={() => ask(pauseAction(session, !r.paused, name))}
                  aria-label={`${r.paused ? "Resume" : "Pause"} ${name}`}
                >
                  {r.paused ? "Resume" : "Pause"}
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Priorities({ stats }: { stats: Stats }) {
  const rows = (["high", "medium", "low"] as const).map((p) => ({ p, ...stats.by_priority[p] }));
  const most = Math.max(1, ...rows.map((r) => r.queued));
  return (
    <section class="panel" aria-labelledby="priority-title">
      <h2 id="priority-title">Queue by priority</h2>
      <table class="priorities">
        <thead>
          <tr>
            <th>Priority</th>
            <th>Queued</th>
            <th>Running</th>
            <th class="wide"></th>
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={r.p} data-priority={r.p}>
              <td>
                <span class={`badge prio-${r.p}`}>{r.p}</span>
              </td>
              <td data-priority-stat="queued">{r.queued}</td>
              <td data-priority-stat="processing">{r.processing}</td>
              <td class="wide">
                <Meter used={r.queued} of={most} label={`${r.p} priority queued`} />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <p class="muted small">
        Average wait {duration(stats.avg_wait_seconds)} · average render{" "}
        {duration(stats.avg_processing_seconds)}{" "}
        (jobs completed in the last hour){stats.throughput_last_hour > 0 &&
          ` · failure share today ${
            percent(stats.failed_today / Math.max(1, stats.failed_today + stats.completed_today))
          }`}
      </p>
    </section>
  );
}

function Skeleton() {
  return (
    <section class="cards skeleton" aria-label="Loading">
      {Array.from({ length: 8 }, (_, i) => <div class="card" key={i} />)}
    </section>
  );
}

function AccessDenied({ who, onSignOut }: { who: string; onSignOut: () => void }) {
  return (
    <main class="centered">
      <div class="panel narrow" data-testid="access-denied" role="alert">
        <h1>Access denied</h1>
        <p>
          <b>{who}</b>{" "}
          is signed in but is not a queue admin. The dashboard shows queue data to admins only (a user whose
          {" "}
          <code>app_metadata.queue_role</code> is <code>"admin"</code>).
        </p>
        <button type="button" class="primary" onClick={onSignOut}>Sign in as someone else</button>
      </div>
    </main>
  );
}
