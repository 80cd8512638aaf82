// Pure formatting for the dashboard: durations, times, wait reasons. No DOM, no state.
import type { Job } from "../../client/mod.ts";

const dash = "—";

/** 45 s, 4 min, 1 h 5 min; "—" for no value. */
export function duration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return dash;
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  const h = Math.floor(s / 3600);
  const m = Math.round((s % 3600) / 60);
  return m === 0 ? `${h} h` : `${h} h ${m} min`;
}

/** How long ago `iso` was, relative to `now` (ms): "12 s ago", "4 min ago", "3 h ago", else a date. */
export function ago(iso: string | null, now: number): string {
  if (!iso) return dash;
  const seconds = (now - Date.parse(iso)) / 1000;
  if (seconds < 0) return `in ${duration(-seconds)}`;
  if (seconds < 86_400) return `${duration(seconds)} ago`;
  return new Date(iso).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

/** 14:05 in `timeZone` (24-hour, as the peak windows are written). */
export function clock(iso: string | Date, timeZone: string): string {
  return new Date(iso).toLocaleTimeString("en-GB", {
    hour: "2-digit",
    minute: "2-digit",
    hour12: false,
    timeZone,
  });
}

/** 14:05:31, local. */
export function clockSeconds(at: Date): string {
  return at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** A count, or "—". */
export const count = (n: number | null | undefined) => (n === null || n === undefined ? dash : String(n));

/** The first 8 characters of a job id: enough to tell jobs apart on screen. */
export const shortId = (id: string) => id.slice(0, 8);

export const isUuid = (s: string) => /^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$/i.test(s.trim());

/** API.md's wait reasons, as a sentence fragment an operator reads. */
export const WAIT_REASON_TEXT: Record<NonNullable<Job["wait_reason"]>, string> = {
  paused: "paused",
  scheduled: "scheduled for later",
  retry_backoff: "waiting to retry",
  no_endpoint: "no healthy render endpoint",
  user_limit: "owner at their running-job limit",
  renderer_busy: "renderer at its cap",
  capacity: "all capacity in use",
  behind: "jobs ahead start first",
};

/** Stages as the render services name them ("composing_video" → "composing video"). */
export const stageText = (stage: string | null) => (stage ? stage.replaceAll("_", " ") : "starting");

/** 0.2 → "20 %". */
export const percent = (rate: number) => `${Math.round(rate * 100)}\u00a0%`;
