// POST /enqueue: a user (or a secret-key holder) adds a job. 201 for a new job, 200 for an idempotent repeat.
import {
  authenticate,
  enqueueJob,
  EnqueueRequest,
  json,
  kickWorker,
  readJson,
  router,
} from "../../../shared/mod.ts";

export const handler = router("enqueue", {
  "": {
    POST: async (req) => {
      const caller = await authenticate(req);
      const request = EnqueueRequest.parse(await readJson(req));
      const { job, created } = await enqueueJob(caller, request);
      if (created) kickWorker("enqueue"); // fill a free slot now, not at the next cron minute
      return json({ job }, created ? 201 : 200);
    },
  },
});
