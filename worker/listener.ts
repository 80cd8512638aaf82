// LISTEN video_queue_wakeup on a connection of its own (migration 20261202000700 says when SQL notifies).
// postgres.js's own sql.listen() re-listens once when its connection closes and gives up silently if the
// database is still away; this one retries until it listens again, and then asks for a pass, since whatever
// was notified meanwhile is lost.
import postgres from "postgres";
import { log } from "../shared/mod.ts";

export const WAKEUP_CHANNEL = "video_queue_wakeup";
const RETRY_MS = [250, 500, 1_000, 2_000, 5_000];
/** How long one renewal of the listener row lasts (renewed every third of it). */
const HOLD_SECONDS = 15;

// `onnotify` is the hook postgres.js's own sql.listen() uses (src/connection.js, NotificationResponse); its
// type declarations leave it out.
type ListenOptions = postgres.Options<Record<string, never>> & {
  onnotify: (channel: string, payload: string) => void;
};

export interface WakeupListener {
  /** Whether the LISTEN connection is up now. */
  readonly listening: boolean;
  /** Stops listening and closes the connection. */
  close(): Promise<void>;
}

/** Calls `onWakeup(reason)` for every notification, and with "listening" each time the LISTEN (re)starts. */
export function listenForWakeups(dbUrl: string, onWakeup: (reason: string) => void): WakeupListener {
  let listening = false;
  let closed = false;
  let failures = 0;
  let retry: ReturnType<typeof setTimeout> | undefined;

  const options: ListenOptions = {
    max: 1,
    prepare: false,
    idle_timeout: 0,
    max_lifetime: null,
    connect_timeout: 5,
    fetch_types: false,
    onnotice: () => {},
    onnotify: (channel, payload) => channel === WAKEUP_CHANNEL && onWakeup(payload),
    onclose: () => {
      if (!listening) return; // a failed connect: listen() schedules the retry
      listening = false;
      log("worker_listen_lost");
      later();
    },
    connection: { application_name: "video-queue-worker-listen" },
  };
  const sql = postgres(dbUrl, options);

  const listen = async () => {
    retry = undefined;
    if (closed) return;
    try {
      await sql.unsafe(`listen ${WAKEUP_CHANNEL}`);
      await holdListener();
      listening = true;
      failures = 0;
      log("worker_listening", { channel: WAKEUP_CHANNEL });
      onWakeup("listening");
    } catch (err) {
      if (failures++ === 0) log("worker_listen_failed", { error: String((err as Error)?.message ?? err) });
      later();
    }
  };
  const later = () => {
    if (closed || retry !== undefined) return;
    retry = setTimeout(listen, RETRY_MS[Math.min(failures, RETRY_MS.length - 1)]);
  };

  // SQL notifies only while some session holds a listener row (migration 20261202000700): renew ours.
  const holdListener = () => sql`select queue.hold_wakeup_listener(${HOLD_SECONDS})`;
  const renew = setInterval(() => {
    if (listening) holdListener().catch(() => {}); // a lost connection re-listens (and holds) by itself
  }, (HOLD_SECONDS * 1000) / 3);

  void listen();
  return {
    get listening() {
      return listening;
    },
    async close() {
      closed = true;
      clearTimeout(retry);
      clearInterval(renew);
      if (listening) await sql`select queue.hold_wakeup_listener(0)`.catch(() => {});
      listening = false;
      await sql.end({ timeout: 1 }).catch(() => {});
    },
  };
}
