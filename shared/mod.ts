// queue-utils: the one public entry of the code the Edge Functions share. Implementation files sit beside it.
export {
  authenticate,
  bearerToken,
  type Caller,
  isSecretKey,
  requireSecretKey,
  type ServiceCaller,
  type UserCaller,
  verifyUserToken,
} from "./auth.ts";
export { backgroundTasksSettled, functionUrl, kickWorker, runInBackground } from "./background.ts";
export { asCaller, closeDb, db, inTransaction } from "./db.ts";
export { DISPATCH_TIMEOUT_MS, dispatchBody, dispatchToRenderer, notifyRenderCancel } from "./dispatch.ts";
export { errorResponse, HttpError, toHttpError } from "./errors.ts";
export { corsHeaders, json, MAX_BODY_BYTES, readJson, router, type Routes } from "./http.ts";
export { log, type LogFields, type ScopedLog, scopedLog, since } from "./log.ts";
export { prometheusText, type QueueMetrics } from "./metrics.ts";
export * from "./queue.ts";
export * from "./render_protocol.ts";
export * from "./schemas.ts";
export {
  applyRenderEvent,
  claimsInHand,
  type PassOptions,
  type PassSummary,
  releaseClaimsInHand,
  workerPass,
} from "./worker_pass.ts";
export {
  deliverDueWebhooks,
  deliverWebhooksInBackground,
  type DeliveryOptions,
  signWebhook,
  WEBHOOK_TIMEOUT_MS,
} from "./webhooks.ts";
