// GET /status: one job (its owner or an admin), queue stats or a job list (admins), Prometheus metrics.
// Who is an admin is SQL's decision (is_queue_admin()): a non-admin gets its VQ403 as 403.
import {
  authenticate,
  getJob,
  getQueueMetrics,
  getQueueStats,
  json,
  listJobs,
  prometheusText,
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
  metrics: {
    GET: async (req) => {
      const caller = await authenticate(req);
      return new Response(prometheusText(await getQueueMetrics(caller)), {
        headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
      });
    },
  },
});
