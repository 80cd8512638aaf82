// Webhooks for servers, signed the Standard Webhooks way (standardwebhooks.com): the worker sends what the
// outbox holds. SQL writes one delivery per endpoint in the transaction that ends a job, leases due ones to a
// worker (SKIP LOCKED) and decides after each attempt: delivered (2xx), retried after a backoff, or given up.
// This module only signs, POSTs and reports. It runs beside the worker's passes, never in their way.
import { runInBackground } from "./background.ts";
import { mapConcurrently } from "./concurrency.ts";
import { postJson } from "./dispatch.ts";
import { log, since } from "./log.ts";
import { claimWebhookDeliveries, recordWebhookAttempt, type WebhookDelivery } from "./queue.ts";

/** How long a receiver may take to answer; receivers are asked to answer at once and work afterwards. */
export const WEBHOOK_TIMEOUT_MS = 10_000;
/** Receivers contacted at once, so one slow receiver holds up only its own delivery. */
const WEBHOOK_CONCURRENCY = 4;
/** Deliveries claimed per round. */
const WEBHOOK_BATCH = 16;
/** After this a run claims no more; what it holds still ends within the time-out. */
const WEBHOOK_BUDGET_MS = 30_000;

export type DeliveryOptions = {
  /** The queue's clock for leases and backoff (tests); the signature's timestamp is always the real time. */
  now?: Date;
  timeoutMs?: number;
  budgetMs?: number;
};

/** What one attempt's receiver answered, as record_webhook_attempt takes it (status null: no answer). */
type AttemptAnswer = { status: number | null; error: string | null; durationMs: number };

/** Sends every due delivery (a round of claims at a time, within the budget); answers how many went out. */
export async function deliverDueWebhooks(
  options: DeliveryOptions = {},
): Promise<{ delivered: number; failed: number }> {
  const { now, timeoutMs = WEBHOOK_TIMEOUT_MS, budgetMs = WEBHOOK_BUDGET_MS } = options;
  // The lease outlasts a round (each lane sends its share of the batch one after another, each within the
  // time-out), so no other worker sends the same delivery while this one still holds it.
  const leaseSeconds = Math.ceil(timeoutMs / 1000) * Math.ceil(WEBHOOK_BATCH / WEBHOOK_CONCURRENCY) + 30;
  const start = performance.now();
  const counts = { delivered: 0, failed: 0 };
  while (performance.now() - start < budgetMs) {
    const due = await claimWebhookDeliveries(WEBHOOK_BATCH, leaseSeconds, now);
    await mapConcurrently(due, WEBHOOK_CONCURRENCY, async (delivery) => {
      const answer = await sendWebhook(delivery, timeoutMs);
      counts[answer.error === null ? "delivered" : "failed"] += 1;
      await report(delivery, answer, now);
    });
    if (due.length < WEBHOOK_BATCH) break;
  }
  return counts;
}

let running = false;
let runAgain = false;

/**
 * Starts a delivery run after the response (EdgeRuntime.waitUntil), so no receiver can delay a worker pass.
 * One run per instance at a time: a call during a run makes it go round once more instead.
 */
export function deliverWebhooksInBackground(): void {
  if (running) {
    runAgain = true;
    return;
  }
  running = true;
  runInBackground("deliver_webhooks", async () => {
    try {
      do {
        runAgain = false;
        await deliverDueWebhooks();
      } while (runAgain);
    } finally {
      running = false;
    }
  });
}

/** The Standard Webhooks signature: `v1,` + base64 HMAC-SHA256 of `<id>.<timestamp>.<body>` under the secret. */
export async function signWebhook(
  secret: string,
  messageId: string,
  timestamp: number,
  body: string,
): Promise<string> {
  const keyBytes = Uint8Array.from(atob(secret.replace(/^whsec_/, "")), (c) => c.charCodeAt(0));
  const key = await crypto.subtle.importKey("raw", keyBytes, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = new Uint8Array(
    await crypto.subtle.sign("HMAC", key, new TextEncoder().encode(`${messageId}.${timestamp}.${body}`)),
  );
  return `v1,${btoa(String.fromCharCode(...mac))}`;
}

/**
 * One attempt: POSTs the delivery's body with the webhook-id / -timestamp / -signature headers. Any 2xx
 * delivers; a redirect is never followed (a 3xx is a failed attempt: only the registered URL gets the
 * body); the answer's body is never read. Nothing a receiver does makes it throw.
 */
async function sendWebhook(delivery: WebhookDelivery, timeoutMs: number): Promise<AttemptAnswer> {
  const start = performance.now();
  const answer = (status: number | null, error: string | null) => ({
    status,
    error,
    durationMs: since(start),
  });
  if (!delivery.secret) {
    return answer(null, "the endpoint's signing secret is missing from Vault; nothing sent");
  }
  const timestamp = Math.floor(Date.now() / 1000);
  let res: Response;
  try {
    res = await postJson(delivery.url, delivery.body, timeoutMs, {
      "webhook-id": delivery.message_id,
      "webhook-timestamp": String(timestamp),
      "webhook-signature": await signWebhook(delivery.secret, delivery.message_id, timestamp, delivery.body),
    });
    await res.body?.cancel();
  } catch (err) {
    if ((err as Error)?.name === "TimeoutError") {
      return answer(null, `receiver gave no answer within ${timeoutMs} ms`);
    }
    return answer(null, `receiver unreachable: ${String((err as Error)?.message ?? err).slice(0, 200)}`);
  }
  if (res.status >= 200 && res.status < 300) return answer(res.status, null);
  if (res.status >= 300 && res.status < 400) {
    return answer(res.status, `receiver answered ${res.status} (a redirect, not followed)`);
  }
  return answer(res.status, `receiver answered ${res.status}`);
}

/** Records the attempt and logs what SQL made of it; a failure to record is logged (the lease brings it back). */
async function report(delivery: WebhookDelivery, answer: AttemptAnswer, now?: Date): Promise<void> {
  const fields = {
    delivery_id: delivery.id,
    job_id: delivery.job_id,
    event_type: delivery.event_type,
    attempt: delivery.attempt,
    status: answer.status,
    duration_ms: answer.durationMs,
  };
  try {
    const state = await recordWebhookAttempt(delivery, answer, now);
    if (answer.error === null) log("webhook_delivered", fields);
    else if (state.gave_up_at) log("webhook_gave_up", { ...fields, error: answer.error });
    else log("webhook_failed", { ...fields, error: answer.error, next_attempt_at: state.next_attempt_at });
  } catch (err) {
    log("webhook_record_failed", { ...fields, error: String((err as Error)?.message ?? err) });
  }
}
