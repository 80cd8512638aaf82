// GET /status: one job (its owner or an admin); for admins the stats, a filtered job list (view=jobs), the
// last 24 hours' outcomes (view=history), the alerts in force (view=alerts) or the peak windows (view=peak);
// Prometheus metrics.
// POST /status/retry: an admin puts a failed job back in the queue.
// POST /status/pause, /status/resume: an admin pauses or resumes the queue, or one renderer.
// Who is an admin is SQL's decision (is_queue_admin()): a non-admin gets its VQ403 as 403.
import {
  authenticate,
  getJob,
  getPeakSchedule,
  getQueueAlerts,
  getQueueHistory,
  getQueueMetrics,
  getQueueStats,
  json,
  kickWorker,
  listJobs,
  PauseRequest,
  prometheusText,
  readJson,
  retryJob,
  RetryRequest,
  router,
  setPaused,
  StatusQuery,
} from "../../../shared/mod.ts";

/** POST /status/pause and /status/resume: the same call, one flag apart. */
const pauseRoute = (paused: boolean) => async (req: Request) => {
  const caller = await authenticate(req);
  const { renderer } = PauseRequest.parse(await readJson(req));
  const stats = await setPaused(caller, paused, renderer);
  if (!paused) kickWorker("resume"); // resuming picks up at once, not at the next cron minute
  return json({ stats });
};

export const handler = router("status", {
  "": {
    GET: async (req, url) => {
      const caller = await authenticate(req);
      const query = StatusQuery.parse(Object.fromEntries(url.searchParams));
      const { job_id, view, ...filters } = query;
      if (job_id) return json({ job: await getJob(caller, job_id) });
      switch (view) {
        case "jobs":
          return json({ jobs: await listJobs(caller, filters) });
        case "history":
          return json({ history: await getQueueHistory(caller) });
        case "alerts":
          return json({ alerts: await getQueueAlerts(caller) });
        case "peak":
          return json({ peak: await getPeakSchedule(caller) });
        default:
          return json({ stats: await getQueueStats(caller) });
      }
    },
  },
  retry: {
    POST: async (req) => {
      const caller = await authenticate(req);
      const { job_id } = RetryRequest.parse(await readJson(req));
      const job = await retryJob(caller, job_id);
      kickWorker("retry");
      return json({ job });
    },
  },
  pause: { POST: pauseRoute(true) },
  resume: { POST: pauseRoute(false) },
  metrics: {
    GET: async (req) => {
      const caller = await authenticate(req);
      return new Response(prometheusText(await getQueueMetrics(caller)), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    },
  },
});
