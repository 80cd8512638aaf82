// POST /cancel: the owner (or an admin) cancels a job. A processing job's render service is told, best effort.
import {
  authenticate,
  cancelJob,
  CancelRequest,
  json,
  kickWorker,
  notifyRenderCancel,
  readJson,
  router,
  runInBackground,
} from "../../../shared/mod.ts";

export const handler = router("cancel", {
  "": {
    POST: async (req) => {
      const caller = await authenticate(req);
      const { job_id, reason } = CancelRequest.parse(await readJson(req));
      const { job, cancelled_attempt } = await cancelJob(caller, job_id, reason);
      if (cancelled_attempt) {
        const { endpoint_url, attempt } = cancelled_attempt;
        if (endpoint_url) {
          runInBackground("notify_render_cancel", () => notifyRenderCancel(endpoint_url, job_id, attempt));
        }
        kickWorker("cancel"); // a render slot was freed
      }
      return json({ job });
    },
  },
});
