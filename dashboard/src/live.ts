// The dashboard's data, kept fresh: stats, the filtered job list and the alerts every refresh; the 24-hour
// history and the peak windows every minute. Live through Realtime (`queue:admin`, each `stats` event
// triggers a refresh) where the project has it, else a refresh every 5 s. A refresh replaces the data only
// when it has all of it, so the page never blanks or flickers; a failure keeps the last data and says so.
import {
  ForbiddenError,
  type HourlyPoint,
  type Job,
  type JobListFilter,
  NotFoundError,
  type PeakSchedule,
  type QueueAlerts,
  type Stats,
  UnauthorizedError,
} from "../../client/mod.ts";
import type { DashboardConfig } from "./config.ts";
import { isUuid } from "./format.ts";
import type { Session } from "./session.ts";

export const POLL_MS = 5_000;
const SLOW_MS = 60_000; // history and peak windows change slowly
const REALTIME_SAFETY_MS = 30_000; // broadcast is best effort: refresh now and then anyway
const JOB_LIMIT = 50;

/** What the jobs table asks for: the list's filters and a search by job id. */
export type JobQuery = Omit<JobListFilter, "limit"> & { search?: string };

export type DashboardData = {
  stats: Stats;
  jobs: Job[];
  alerts: QueueAlerts;
  history: HourlyPoint[];
  peak: PeakSchedule;
};

export type LiveState = {
  data?: DashboardData;
  updatedAt?: Date;
  /** The last refresh failed: what to tell the operator (the data shown is from updatedAt). */
  error?: string;
  /** "denied": signed in, but not a queue admin (403). */
  access: "unknown" | "granted" | "denied";
  /** The session is no longer valid (401): why, for the sign-in form. */
  signedOut?: string;
  mode: "realtime" | "polling";
  /** The job list is being fetched for a new query (the old rows stay until it arrives). */
  jobsLoading: boolean;
};

export class LiveQueue {
  state: LiveState = { access: "unknown", mode: "polling", jobsLoading: true };
  #listeners = new Set<(state: LiveState) => void>();
  #query: JobQuery = {};
  #running?: Promise<void>;
  #again = false;
  #slowAt = 0;
  #slow?: { history: HourlyPoint[]; peak: PeakSchedule };
  #timer?: ReturnType<typeof setInterval>;
  #debounce?: ReturnType<typeof setTimeout>;
  #stopRealtime?: () => void;

  constructor(readonly session: Session, readonly config: DashboardConfig) {}

  subscribe(listener: (state: LiveState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  start(): void {
    if (this.config.realtime) {
      this.#stopRealtime = this.session.queue.admin.onQueueChange(
        (stats) => {
          if (this.state.data) this.#set({ data: { ...this.state.data, stats } });
          clearTimeout(this.#debounce);
          this.#debounce = setTimeout(() => void this.refresh(), 300); // a burst of changes, one refresh
        },
        (channel) => this.#set({ mode: channel === "SUBSCRIBED" ? "realtime" : "polling" }),
      );
    }
    void this.refresh();
    this.#timer = setInterval(() => {
      const age = Date.now() - (this.state.updatedAt?.getTime() ?? 0);
      if (this.state.mode === "polling" || age >= REALTIME_SAFETY_MS) void this.refresh();
    }, POLL_MS);
  }

  stop(): void {
    clearInterval(this.#timer);
    clearTimeout(this.#debounce);
    this.#stopRealtime?.();
    this.#listeners.clear();
  }

  /** Shows jobs for `query` from the next refresh on (at once). */
  setQuery(query: JobQuery): void {
    this.#query = query;
    this.#set({ jobsLoading: true });
    void this.refresh();
  }

  /** One refresh; calls while one runs coalesce into one more after it. */
  refresh(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.#load();
      } while (this.#again && this.state.access !== "denied" && !this.state.signedOut);
    })().finally(() => this.#running = undefined);
    return this.#running;
  }

  async #load(): Promise<void> {
    const query = this.#query;
    const admin = this.session.queue.admin;
    try {
      const slowDue = !this.#slow || Date.now() - this.#slowAt >= SLOW_MS;
      const [stats, jobs, alerts, slow] = await Promise.all([
        admin.stats(),
        this.#jobs(query),
        admin.alerts(),
        slowDue ? Promise.all([admin.history(), admin.peak()]) : undefined,
      ]);
      if (slow) {
        this.#slow = { history: slow[0], peak: slow[1] };
        this.#slowAt = Date.now();
      }
      if (query !== this.#query) this.#again = true; // the filters changed meanwhile: these jobs are stale
      const shown = query === this.#query ? jobs : this.state.data?.jobs ?? [];
      this.#set({
        data: { stats, jobs: shown, alerts, ...this.#slow! },
        updatedAt: new Date(),
        error: undefined,
        access: "granted",
        jobsLoading: query !== this.#query,
      });
    } catch (err) {
      if (err instanceof ForbiddenError) this.#set({ access: "denied", data: undefined });
      else if (err instanceof UnauthorizedError) this.#set({ signedOut: err.message });
      else this.#set({ error: err instanceof Error ? err.message : String(err), jobsLoading: false });
    }
  }

  /** The job list for `query`: one job when the search is a whole id; otherwise the newest matching. */
  async #jobs({ search, ...filters }: JobQuery): Promise<Job[]> {
    const id = search?.trim() ?? "";
    if (isUuid(id)) {
      try {
        return [await this.session.queue.status(id)];
      } catch (err) {
        if (err instanceof NotFoundError) return [];
        throw err;
      }
    }
    const jobs = await this.session.queue.admin.listJobs({ ...filters, limit: JOB_LIMIT });
    return id ? jobs.filter((j) => j.id.startsWith(id.toLowerCase())) : jobs;
  }

  #set(patch: Partial<LiveState>): void {
    this.state = { ...this.state, ...patch };
    for (const listener of this.#listeners) listener(this.state);
  }
}
