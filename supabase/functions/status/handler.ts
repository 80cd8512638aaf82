// GET /status: one job (its owner or an admin), queue stats or a job list (admins), Prometheus metrics.
// POST /status/retry: an admin puts a failed job back in the queue.
// Who is an admin is SQL's decision (is_queue_admin()): a non-admin gets its VQ403 as 403.
import {
  authenticate,
  getJob,
  getQueueMetrics,
  getQueueStats,
  json,
  kickWorker,
  listJobs,
  prometheusText,
  readJson,
  retryJob,
  RetryRequest,
  router,
  StatusQuery,
} from "../../../shared/mod.ts";

export const handler = router("status", {
  "": {
    GET: async (req, url) => {
      const caller = await authenticate(req);
      const query = StatusQuery.parse(Object.fromEntries(url.searchParams));
      if (query.job_id) return json({ job: await getJob(caller, query.job_id) });
      if (query.view === "jobs") return json({ jobs: await listJobs(caller, query.status, query.limit) });
      return json({ stats: await getQueueStats(caller) });
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
  metrics: {
    GET: async (req) => {
      const caller = await authenticate(req);
      return new Response(prometheusText(await getQueueMetrics(caller)), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    },
  },
});
