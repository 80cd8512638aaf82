// POST /video-queue-worker (secret key): one worker pass — recover expired attempts, claim what capacity
// allows, dispatch each claim to its render endpoint. POST /video-queue-worker/events (callback token):
// a render service reports progress or the outcome of one attempt. Both live in shared/worker_pass.ts.
import {
  applyRenderEvent,
  bearerToken,
  HttpError,
  json,
  readJson,
  RenderEvent,
  requireSecretKey,
  router,
  workerPass,
} from "../../../shared/mod.ts";

export const handler = router("video-queue-worker", {
  "": {
    POST: async (req) => {
      await requireSecretKey(req);
      return json(await workerPass());
    },
  },
  events: {
    POST: async (req) => {
      const token = bearerToken(req);
      if (!token) {
        throw new HttpError(401, "Send the attempt's callback token as Authorization: Bearer <token>.");
      }
      const event = RenderEvent.parse(await readJson(req));
      return json({ job: await applyRenderEvent(event, token) });
    },
  },
});
