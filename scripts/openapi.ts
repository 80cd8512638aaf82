// `deno task openapi`: writes docs/openapi.json, the OpenAPI 3.1 description of API.md, generated from the
// zod schemas the functions validate with (shared/schemas.ts, shared/render_protocol.ts). The test command
// regenerates it in memory and fails when the checked-in file differs (tests/openapi_test.ts).
import { z } from "zod";
import { MAX_BODY_BYTES } from "../shared/http.ts";
import { CancelNotice, DispatchBody, RenderAnswer, RenderEvent } from "../shared/render_protocol.ts";
import {
  AlertsAnswer,
  CancelRequest,
  EnqueueRequest,
  ERROR_CODES,
  ErrorBody,
  HistoryAnswer,
  HourlyPoint,
  Job,
  JobAnswer,
  JobResult,
  JobsAnswer,
  MAX_LIST_LIMIT,
  PauseRequest,
  PeakAnswer,
  PeakSchedule,
  QueueAlerts,
  RetryRequest,
  Stats,
  StatsAnswer,
  StatusQuery,
  WorkerPassSummary,
} from "../shared/schemas.ts";

export const OPENAPI_PATH = new URL("../docs/openapi.json", import.meta.url);

type Json = Record<string, unknown>;
type Status = keyof typeof ERROR_CODES;
type Auth = "userToken" | "secretKey" | "callbackToken";

// Components ------------------------------------------------------------------------------------------------

/** The named schemas, each with what it is; other schemas refer to them by $ref. */
const NAMED: [string, z.ZodType, string][] = [
  ["Job", Job, "A job, as every endpoint returns it (API.md, 'The job')."],
  ["JobResult", JobResult, "A completed job's result: at least video_url; more where the renderer gives it."],
  ["Stats", Stats, "The queue's stats: the object the SQL function get_queue_stats() returns."],
  ["HourlyPoint", HourlyPoint, "Jobs that finished in one hour (GET /status?view=history)."],
  ["ErrorBody", ErrorBody, "Every non-2xx answer."],
  ["JobAnswer", JobAnswer, "One job."],
  ["JobsAnswer", JobsAnswer, "Jobs, newest first."],
  ["StatsAnswer", StatsAnswer, "The queue's stats."],
  ["HistoryAnswer", HistoryAnswer, "Finished jobs per hour, oldest first."],
  ["QueueAlerts", QueueAlerts, "The alert thresholds (job_queue_config.alert_*) and the alerts in force."],
  ["AlertsAnswer", AlertsAnswer, "The alerts."],
  ["PeakSchedule", PeakSchedule, "The peak windows behind Stats' capacity.peak."],
  ["PeakAnswer", PeakAnswer, "The peak windows."],
  ["WorkerPassSummary", WorkerPassSummary, "What one worker pass did."],
  [
    "EnqueueRequest",
    EnqueueRequest,
    "A job to enqueue; the payload's schema follows job_type (unknown fields: 400).",
  ],
  ["CancelRequest", CancelRequest, "The job to cancel."],
  ["RetryRequest", RetryRequest, "The failed job to put back in the queue."],
  ["PauseRequest", PauseRequest, "{} for the whole queue, or one renderer."],
  ["RenderEvent", RenderEvent, "A render service's callback about one attempt."],
  ["DispatchBody", DispatchBody, "What the worker sends a render service: one attempt of one job."],
  [
    "CancelNotice",
    CancelNotice,
    "The worker tells a render service that an attempt was cancelled (best effort).",
  ],
  ["RenderAnswer", RenderAnswer, "A render service's 200 answer to a dispatch: the render is done already."],
];

/** JSON Schema 2020-12 for the named schemas, as the callers send them (defaults optional, loose objects open). */
function componentSchemas(): Record<string, Json> {
  const registry = z.registry<{ id: string; description: string }>();
  for (const [id, schema, description] of NAMED) registry.add(schema, { id, description });
  const { schemas } = z.toJSONSchema(registry, {
    io: "input",
    metadata: registry,
    uri: (id) => `#/components/schemas/${id}`,
  });
  return Object.fromEntries(
    Object.entries(schemas).map(([id, { $schema: _, $id: __, ...schema }]) => [id, schema as Json]),
  );
}

const ref = (id: string) => ({ $ref: `#/components/schemas/${id}` });
const jsonContent = (schema: Json) => ({ "application/json": { schema } });

/** When each error status is answered (API.md "Errors"). */
const WHEN: Record<Status, string> = {
  400:
    "Malformed JSON, wrong types, an unknown job_type, a payload failing its schema: details lists the failing fields ([{field, message}]).",
  401: "No credential, a bad signature, an expired token.",
  403:
    "A valid caller asking for what it may not do (e.g. a non-admin asking for stats or setting priority).",
  404: "An unknown job, or one that is not the caller's (no existence leak).",
  405: "The wrong verb for the path.",
  409:
    "A conflict with the job's state (cancel of a finished job, retry of one that has not failed, a callback of an attempt that is no longer current).",
  413: `The body is over ${MAX_BODY_BYTES / 1024} KiB.`,
  415: "The body is not JSON (Content-Type: application/json).",
  429: "A per-user limit (queued jobs per user, enqueues per minute); details: {retry_after_seconds}.",
  500: "Something unexpected; the body holds no stack trace, SQL or secret.",
  503: "The database is unreachable.",
};

const retryAfterHeader = {
  "Retry-After": {
    description: "Seconds to wait before trying again.",
    schema: { type: "integer", minimum: 0 },
  },
};

/** One reusable response per error status, its body the error shape with that status's code. */
function errorResponses(): Record<string, Json> {
  return Object.fromEntries(
    (Object.entries(ERROR_CODES) as unknown as [Status, string][]).map(([status, code]) => [
      errorName(status),
      {
        description: `${status} ${code}: ${WHEN[status]}`,
        ...(status == 429 || status == 503 ? { headers: retryAfterHeader } : {}),
        content: jsonContent({
          allOf: [ref("ErrorBody"), {
            type: "object",
            properties: { error: { type: "object", properties: { code: { const: code } } } },
          }],
        }),
      },
    ]),
  );
}
const errorName = (status: Status | number) =>
  ERROR_CODES[status as Status].split("_").map((w) => w[0].toUpperCase() + w.slice(1)).join("");

const securitySchemes = {
  userToken: {
    type: "http",
    scheme: "bearer",
    bearerFormat: "JWT",
    description:
      'A Supabase Auth access token (role authenticated, sub = user id). A user may enqueue and cancel or read their own jobs; a user whose app_metadata.queue_role is "admin" may do everything on any job.',
  },
  secretKey: {
    type: "apiKey",
    in: "header",
    name: "apikey",
    description:
      "A secret key (sb_secret_…, or the legacy service-role key): an admin, and the only caller of a worker pass.",
  },
  callbackToken: {
    type: "http",
    scheme: "bearer",
    description: "The per-attempt callback token a render service was handed at dispatch (callback.token).",
  },
};

// Paths -----------------------------------------------------------------------------------------------------

type Operation = {
  summary: string;
  description?: string;
  auth: Auth[];
  body?: { schema: Json; example?: unknown };
  parameters?: Json[];
  ok: Record<number, Json>;
  errors: Status[];
};

function operation(id: string, op: Operation): Json {
  return {
    operationId: id,
    summary: op.summary,
    ...(op.description ? { description: op.description } : {}),
    security: op.auth.map((name) => ({ [name]: [] })),
    ...(op.parameters ? { parameters: op.parameters } : {}),
    ...(op.body
      ? {
        requestBody: {
          required: true,
          content: {
            "application/json": {
              schema: op.body.schema,
              ...(op.body.example ? { example: op.body.example } : {}),
            },
          },
        },
      }
      : {}),
    responses: {
      ...Object.fromEntries(Object.entries(op.ok).map(([status, response]) => [status, response])),
      ...Object.fromEntries(
        op.errors.map((s) => [String(s), { $ref: `#/components/responses/${errorName(s)}` }]),
      ),
    },
  };
}

const answer = (description: string, schema: Json) => ({ description, content: jsonContent(schema) });
const USER: Auth[] = ["userToken", "secretKey"];
const POST_ERRORS: Status[] = [400, 401, 405, 413, 415, 500, 503];

/** `GET /status` query parameters, from StatusQuery (output form: what the values mean once read). */
function statusParameters(): Json[] {
  const about: Record<string, string> = {
    job_id: "One job (its owner or an admin).",
    view:
      "jobs: a job list (admin); history: finished jobs per hour (admin); alerts: thresholds and alerts in force (admin); peak: the peak windows (admin). Without job_id and view: stats (admin).",
    status: "With view=jobs: only jobs in this status.",
    limit: `With view=jobs: at most this many (1..${MAX_LIST_LIMIT}).`,
    job_type: "With view=jobs: only jobs of this type.",
    renderer: "With view=jobs: only jobs for this renderer.",
    user_id: "With view=jobs: only this user's jobs.",
  };
  return Object.entries(StatusQuery.shape).map(([name, schema]) => {
    const { $schema: _, ...json } = z.toJSONSchema(schema as z.ZodType, { io: "output" });
    return { name, in: "query", required: false, description: about[name] ?? name, schema: json };
  });
}

function paths(): Json {
  return {
    "/enqueue": {
      post: operation("enqueue", {
        summary: "Enqueue a video job",
        description:
          "Priority follows the type (doubt: high, topic_short: medium, daily_ca: low); only an admin may set priority or renderer. A job not started by its expires_at ends cancelled.",
        auth: USER,
        body: {
          schema: ref("EnqueueRequest"),
          example: {
            job_type: "doubt",
            payload: { question: "What is Article 370?" },
            idempotency_key: "q-42",
          },
        },
        ok: {
          201: answer("The new job.", ref("JobAnswer")),
          200: answer(
            "The same user repeated an idempotency_key: the first job, and no second one.",
            ref("JobAnswer"),
          ),
        },
        errors: [...POST_ERRORS, 403, 429].sort() as Status[],
      }),
    },
    "/cancel": {
      post: operation("cancel", {
        summary: "Cancel a queued or processing job",
        description:
          "A queued job is never started afterwards; a processing job is cancelled at once, its render service is told (best effort) and its late callbacks get 409.",
        auth: USER,
        body: { schema: ref("CancelRequest") },
        ok: { 200: answer("The job, now cancelled.", ref("JobAnswer")) },
        errors: [...POST_ERRORS, 404, 409].sort() as Status[],
      }),
    },
    "/status": {
      get: operation("status", {
        summary:
          "One job, or (admin) the queue's stats, a job list, the hourly history, the alerts or the peak windows",
        description:
          "?job_id=<uuid>: {job} with a fresh position and estimate. No parameters (admin): {stats}. ?view=jobs&status=&job_type=&renderer=&user_id=&limit= (admin): {jobs}, newest first. ?view=history (admin): {history}. ?view=alerts (admin): {alerts}. ?view=peak (admin): {peak}.",
        auth: USER,
        parameters: statusParameters(),
        ok: {
          200: answer("{job}, {stats}, {jobs}, {history}, {alerts} or {peak}, by the query.", {
            oneOf: [
              ref("JobAnswer"),
              ref("StatsAnswer"),
              ref("JobsAnswer"),
              ref("HistoryAnswer"),
              ref("AlertsAnswer"),
              ref("PeakAnswer"),
            ],
          }),
        },
        errors: [400, 401, 403, 404, 405, 500, 503],
      }),
    },
    "/status/metrics": {
      get: operation("metrics", {
        summary: "Prometheus metrics (admin or secret key)",
        description:
          "Queue depth by priority, processing by renderer, effective capacity, completed / failed / retried counters, wait and processing time summaries.",
        auth: USER,
        ok: {
          200: {
            description: "Prometheus text exposition format.",
            content: { "text/plain": { schema: { type: "string" } } },
          },
        },
        errors: [401, 403, 405, 500, 503],
      }),
    },
    "/status/retry": {
      post: operation("retry", {
        summary: "Put a failed job back in the queue, its retries reset (admin)",
        auth: USER,
        body: { schema: ref("RetryRequest") },
        ok: { 200: answer("The job, queued again.", ref("JobAnswer")) },
        errors: [...POST_ERRORS, 403, 404, 409].sort() as Status[],
      }),
    },
    ...Object.fromEntries((["pause", "resume"] as const).map((verb) => [`/status/${verb}`, {
      post: operation(verb, {
        summary: `${verb === "pause" ? "Pause" : "Resume"} the whole queue ({}) or one renderer (admin)`,
        description: verb === "pause"
          ? "A paused scope starts nothing new; running jobs finish; queued jobs keep their order and positions and show wait_reason paused."
          : "Starts a worker pass at once.",
        auth: USER,
        body: { schema: ref("PauseRequest"), example: { renderer: "manim" } },
        ok: { 200: answer("The queue's stats, paused flags included.", ref("StatsAnswer")) },
        errors: [...POST_ERRORS, 403].sort() as Status[],
      }),
    }])),
    "/video-queue-worker": {
      post: operation("workerPass", {
        summary: "One worker pass (secret key)",
        description: "Recover expired attempts, claim what capacity allows, dispatch.",
        auth: ["secretKey"],
        ok: { 200: answer("What the pass did.", ref("WorkerPassSummary")) },
        errors: [401, 403, 405, 500, 503],
      }),
    },
    "/video-queue-worker/events": {
      post: operation("renderCallback", {
        summary: "A render service reports on its attempt (callback token)",
        description:
          "Every callback of the current attempt is a sign of life. A token of an attempt that is no longer current: 409, and the job is not touched. Repeating the same completed callback is harmless.",
        auth: ["callbackToken"],
        body: {
          schema: ref("RenderEvent"),
          example: { job_id: "<uuid>", attempt: 1, type: "progress", stage: "composing_video", progress: 60 },
        },
        ok: { 200: answer("The job after the callback.", ref("JobAnswer")) },
        errors: [...POST_ERRORS, 404, 409].sort() as Status[],
      }),
    },
  };
}

/** What the queue sends to render services: OpenAPI 3.1 `webhooks` (requests the API makes, not receives). */
function webhooks(): Json {
  return {
    renderDispatch: {
      post: {
        summary: "POST <render endpoint url>: render one attempt of one job",
        requestBody: { required: true, content: jsonContent(ref("DispatchBody")) },
        responses: {
          202: { description: "Accepted: it will call back (POST /video-queue-worker/events)." },
          200: answer("Done already.", ref("RenderAnswer")),
          "4XX": {
            description:
              "The job cannot succeed: it fails now, no retry (429: busy, released, no retry used).",
          },
          "5XX": { description: "Retry later (so does no answer in time)." },
        },
      },
    },
    renderCancel: {
      post: {
        summary: "POST <render endpoint url>/cancel: that attempt was cancelled (best effort)",
        requestBody: { required: true, content: jsonContent(ref("CancelNotice")) },
        responses: { 200: { description: "Acknowledged." } },
      },
    },
  };
}

/** The whole document. */
export function openApiDocument(): Json {
  return {
    openapi: "3.1.0",
    info: {
      title: "Video queue",
      version: "1.0.0",
      description:
        "The public contract of the video-generation job queue (API.md), generated from the zod schemas the functions validate with. Bodies are JSON; every function answers CORS preflight (OPTIONS). Job progress is also broadcast on the private Realtime topic job:<id> (event job, payload a Job), queue stats on queue:admin (event stats).",
    },
    servers: [{
      url: "{supabaseUrl}/functions/v1",
      variables: { supabaseUrl: { default: "https://your-project.supabase.co" } },
    }],
    paths: paths(),
    webhooks: webhooks(),
    components: { schemas: componentSchemas(), responses: errorResponses(), securitySchemes },
  };
}

/** The file's text: the document as indented JSON. */
export const openApiText = () => JSON.stringify(openApiDocument(), null, 2) + "\n";

if (import.meta.main) {
  await Deno.writeTextFile(OPENAPI_PATH, openApiText());
  console.log(`wrote ${OPENAPI_PATH.pathname}`);
}
