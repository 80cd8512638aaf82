// Unit tests of shared/ and the function handlers that need no database: schemas, error mapping,
// authentication, CORS, 404/405/413/415, and the render-protocol classification against a local server.
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { z } from "zod";
import {
  authenticate,
  type Claim,
  closeDb,
  dispatchBody,
  dispatchToRenderer,
  EnqueueRequest,
  errorResponse,
  HttpError,
  MAX_BODY_BYTES,
  PermanentRenderError,
  prometheusText,
  RenderEvent,
  RetryableRenderError,
  StatusQuery,
  toHttpError,
} from "../shared/mod.ts";
import { handler as enqueue } from "../supabase/functions/enqueue/handler.ts";
import { handler as cancel } from "../supabase/functions/cancel/handler.ts";
import { handler as status } from "../supabase/functions/status/handler.ts";
import { handler as worker } from "../supabase/functions/video-queue-worker/handler.ts";

// Keys and environment ------------------------------------------------------------------------------------

const es256 = await generateKeyPair("ES256", { extractable: true });
const rs256 = await generateKeyPair("RS256", { extractable: true });
const stranger = await generateKeyPair("ES256", { extractable: true }); // not in the JWKS
const publicJwk = async (key: CryptoKey, kid: string): Promise<JWK> => ({ ...(await exportJWK(key)), kid });
const JWKS = JSON.stringify({
  keys: [await publicJwk(es256.publicKey, "es-1"), await publicJwk(rs256.publicKey, "rs-1")],
});
const JWT_SECRET = "legacy-jwt-secret-with-at-least-32-characters";
const SECRET_KEY = "sb_secret_unit_test_key";
const SERVICE_ROLE_KEY = "legacy-service-role-key";

/** The environment the functions get, for this test only (Deno.env is process-wide). */
async function withEnv(fn: () => Promise<void>, overrides: Record<string, string | undefined> = {}) {
  const vars: Record<string, string | undefined> = {
    SUPABASE_JWKS: JWKS,
    SUPABASE_JWT_SECRET: JWT_SECRET,
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET_KEY }),
    SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
    SUPABASE_URL: undefined, // no worker kicks from unit tests
    SUPABASE_DB_URL: "postgres://postgres@127.0.0.1:1/postgres", // nothing listens there
    ...overrides,
  };
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, Deno.env.get(k)]));
  const apply = (values: Record<string, string | undefined>) => {
    for (const [k, v] of Object.entries(values)) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
  };
  apply(vars);
  try {
    await fn();
  } finally {
    apply(saved);
  }
}

const userClaims = { sub: crypto.randomUUID(), role: "authenticated", app_metadata: { provider: "email" } };

async function sign(
  key: CryptoKey | Uint8Array,
  header: { alg: string; kid?: string },
  claims: Record<string, unknown> = userClaims,
  expiresIn: string | number = "1h",
): Promise<string> {
  return await new SignJWT(claims).setProtectedHeader({ typ: "JWT", ...header }).setIssuedAt()
    .setExpirationTime(expiresIn).sign(key);
}
const userToken = () => sign(es256.privateKey, { alg: "ES256", kid: "es-1" });

function unsignedToken(claims: Record<string, unknown>): string {
  const b64 = (v: unknown) =>
    btoa(JSON.stringify(v)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`;
}

function request(path: string, init: RequestInit & { token?: string; apikey?: string } = {}): Request {
  const headers = new Headers(init.headers);
  if (init.token) headers.set("authorization", `Bearer ${init.token}`);
  if (init.apikey) headers.set("apikey", init.apikey);
  return new Request(`http://localhost${path}`, { ...init, headers });
}
const postJson = (path: string, body: unknown, auth: { token?: string; apikey?: string } = {}) =>
  request(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
    ...auth,
  });

async function assertError(res: Response, status: number, code: string) {
  assert.equal(res.status, status);
  assert.equal(res.headers.get("access-control-allow-origin"), "*");
  const body = await res.json();
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.message.length > 0);
  assert.deepEqual(Object.keys(body).sort(), ["error"]);
  return body.error;
}

const validDoubt = { job_type: "doubt", payload: { question: "What is Article 370?" } };

// Schemas -------------------------------------------------------------------------------------------------

Deno.test("schemas: each job type accepts its payload and its optional fields", () => {
  assert.ok(EnqueueRequest.safeParse(validDoubt).success);
  assert.ok(
    EnqueueRequest.safeParse({
      job_type: "topic_short",
      payload: { topic: "Monsoon", duration_seconds: 60, language: "hi" },
      idempotency_key: "k".repeat(128),
      priority: "low",
      run_at: "2026-01-01T10:00:00+05:30",
      renderer: "revideo",
    }).success,
  );
  assert.ok(
    EnqueueRequest.safeParse({
      job_type: "daily_ca",
      payload: { date: "2026-03-01", headlines: Array(20).fill("h") },
    }).success,
  );
});

Deno.test("schemas: failures name every failing field, unknown fields included", () => {
  const cases: [unknown, string[]][] = [
    [{ job_type: "essay", payload: {} }, ["job_type"]],
    [{ job_type: "doubt", payload: { question: "", extra: 1 } }, ["payload.question", "payload.extra"]],
    [{ job_type: "doubt", payload: { question: "x".repeat(2001) } }, ["payload.question"]],
    [{ job_type: "topic_short", payload: { topic: "t", duration_seconds: 10 } }, [
      "payload.duration_seconds",
    ]],
    [{ job_type: "topic_short", payload: { topic: "t", duration_seconds: 181 } }, [
      "payload.duration_seconds",
    ]],
    [{ job_type: "daily_ca", payload: { date: "01/03/2026" } }, ["payload.date"]],
    [{ job_type: "daily_ca", payload: { date: "2026-03-01", headlines: Array(21).fill("h") } }, [
      "payload.headlines",
    ]],
    [{ ...validDoubt, idempotency_key: "k".repeat(129) }, ["idempotency_key"]],
    [{ ...validDoubt, priority: "urgent" }, ["priority"]],
    [{ ...validDoubt, run_at: "tomorrow" }, ["run_at"]],
    [{ ...validDoubt, renderer: "blender" }, ["renderer"]],
    [{ ...validDoubt, user_id: "someone-else" }, ["user_id"]],
    [{ job_type: "doubt" }, ["payload"]],
  ];
  for (const [body, fields] of cases) {
    const error = toHttpError(EnqueueRequest.safeParse(body).error);
    assert.equal(error.status, 400, JSON.stringify(body));
    const failing = (error.details as { field: string }[]).map((d) => d.field);
    assert.deepEqual(failing.sort(), [...fields].sort(), JSON.stringify(body));
  }
});

Deno.test("schemas: status query and render events", () => {
  assert.ok(StatusQuery.safeParse({ view: "jobs", status: "failed", limit: "200" }).success);
  assert.equal(StatusQuery.safeParse({ view: "jobs", limit: "201" }).success, false);
  assert.equal(StatusQuery.safeParse({ job_id: "not-a-uuid" }).success, false);
  assert.equal(StatusQuery.safeParse({ view: "everything" }).success, false);
  const ref = { job_id: crypto.randomUUID(), attempt: 1 };
  assert.equal(
    RenderEvent.parse({ ...ref, type: "progress", stage: "composing_video", progress: 59.6 }).type,
    "progress",
  );
  assert.ok(
    RenderEvent.safeParse({
      ...ref,
      type: "completed",
      result: { video_url: "https://x/v.mp4", file_size: 1 },
    }).success,
  );
  assert.equal(RenderEvent.safeParse({ ...ref, type: "completed", result: {} }).success, false);
  assert.deepEqual(RenderEvent.parse({ ...ref, type: "failed", error: "boom" }), {
    ...ref,
    type: "failed",
    error: "boom",
    retryable: true,
  });
  assert.equal(RenderEvent.safeParse({ ...ref, type: "progress", progress: 101 }).success, false);
});

// Error mapping -------------------------------------------------------------------------------------------

Deno.test("toHttpError: SQLSTATE VQnnn carries the status; MESSAGE (and HINT) reach the caller", async () => {
  const sqlError = (code: string, extra: Record<string, string> = {}) =>
    Object.assign(new Error("job 42 is completed and cannot be cancelled"), { code, ...extra });
  for (
    const [code, status, name] of [
      ["VQ400", 400, "invalid_request"],
      ["VQ401", 401, "unauthorized"],
      ["VQ403", 403, "forbidden"],
      ["VQ404", 404, "not_found"],
      ["VQ409", 409, "conflict"],
    ] as const
  ) {
    const res = errorResponse(sqlError(code));
    assert.equal(res.status, status);
    const { error } = await res.json();
    assert.equal(error.code, name);
    assert.match(error.message, /cannot be cancelled/);
  }
  const withHint = toHttpError(
    sqlError("VQ409", { hint: "Only queued or processing jobs can be cancelled." }),
  );
  assert.match(withHint.message, /Only queued/);
});

Deno.test("toHttpError: VQ429 sets Retry-After from DETAIL; a bad DETAIL still gives one", () => {
  const limited = toHttpError(Object.assign(new Error("too many queued jobs"), {
    code: "VQ429",
    detail: '{"retry_after_seconds": 12.2}',
  }));
  assert.equal(limited.status, 429);
  assert.equal(limited.code, "rate_limited");
  assert.equal(limited.headers["Retry-After"], "13");
  assert.deepEqual(limited.details, { retry_after_seconds: 13 });
  const noDetail = toHttpError(Object.assign(new Error("slow down"), { code: "VQ429", detail: "nope" }));
  assert.ok(Number(noDetail.headers["Retry-After"]) > 0);
});

Deno.test("toHttpError: connection failures are 503 with Retry-After; anything else is a bare 500", async () => {
  for (const code of ["ECONNREFUSED", "CONNECT_TIMEOUT", "CONNECTION_CLOSED", "08006", "57P03"]) {
    const e = toHttpError(Object.assign(new Error("connect failed"), { code }));
    assert.equal(e.status, 503, code);
    assert.equal(e.code, "unavailable");
    assert.ok(Number(e.headers["Retry-After"]) > 0);
  }
  const leaky = Object.assign(new Error('relation "jobs" violates check; password=hunter2'), {
    code: "23514",
    stack: "at secret.ts:1",
  });
  const res = errorResponse(leaky);
  assert.equal(res.status, 500);
  const text = await res.text();
  assert.doesNotMatch(text, /jobs|hunter2|secret\.ts|23514/);
  assert.equal(JSON.parse(text).error.code, "internal");
  assert.equal(toHttpError(new TypeError("x is undefined")).status, 500);
  assert.equal(toHttpError(Object.assign(new Error("?"), { code: "VQ999" })).status, 500);
});

Deno.test("toHttpError: zod errors are 400 invalid_request with details", () => {
  const e = toHttpError(z.strictObject({ a: z.string() }).safeParse({ a: 1, b: 2 }).error);
  assert.equal(e.code, "invalid_request");
  assert.deepEqual((e.details as { field: string }[]).map((d) => d.field).sort(), ["a", "b"]);
});

Deno.test("metrics: Prometheus text with HELP/TYPE, labels, counters and summaries; null is NaN", () => {
  const text = prometheusText({
    queued_by_priority: { high: 3, medium: 0, low: 1 },
    processing_by_renderer: { manim: 2, 'we"ird': 0 },
    renderer_limit: { manim: 4 },
    capacity: { max_concurrent: 10, effective: 15, peak: true, multiplier: 1.5 },
    oldest_queued_seconds: null,
    counters: {
      jobs_completed_total: 7,
      jobs_retried_total: 2,
      wait_seconds_sum: 12.5,
      wait_seconds_count: 7,
    },
    wait_seconds_quantiles: { "0.5": 1.5, "0.9": null },
    processing_seconds_quantiles: {},
  });
  const lines = text.trimEnd().split("\n");
  for (
    const expected of [
      "# TYPE video_queue_queued_jobs gauge",
      'video_queue_queued_jobs{priority="high"} 3',
      'video_queue_processing_jobs{renderer="we\\"ird"} 0',
      "video_queue_capacity_effective 15",
      "video_queue_peak 1",
      "video_queue_oldest_queued_seconds NaN",
      "# TYPE video_queue_jobs_completed_total counter",
      "video_queue_jobs_retried_total 2",
      "# TYPE video_queue_wait_seconds summary",
      'video_queue_wait_seconds{quantile="0.5"} 1.5',
      'video_queue_wait_seconds{quantile="0.9"} NaN',
      "video_queue_wait_seconds_sum 12.5",
      "video_queue_wait_seconds_count 7",
    ]
  ) assert.ok(lines.includes(expected), expected);
  assert.ok(!text.includes("video_queue_wait_seconds_sum_total"));
  for (const line of lines) assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{.*\})? (-?[\d.e+]+|NaN))$/);
});

// Authentication ------------------------------------------------------------------------------------------

const authFails = async (req: Request, why: string) => {
  await assert.rejects(authenticate(req), (e: unknown) => e instanceof HttpError && e.status === 401, why);
};

Deno.test("auth: a user token signed with a JWKS key (ES256, RS256) names the user", () =>
  withEnv(async () => {
    const es = await authenticate(request("/status", { token: await userToken() }));
    assert.equal(es.kind, "user");
    assert.equal(es.kind === "user" && es.userId, userClaims.sub);
    assert.equal(es.kind === "user" && es.admin, false);
    const admin = await authenticate(request("/status", {
      token: await sign(rs256.privateKey, { alg: "RS256", kid: "rs-1" }, {
        ...userClaims,
        app_metadata: { queue_role: "admin" },
      }),
    }));
    assert.equal(admin.kind === "user" && admin.admin, true);
  }));

Deno.test("auth: forged, expired, alg none, wrong role, missing sub are all 401", () =>
  withEnv(async () => {
    const forged = await sign(stranger.privateKey, { alg: "ES256", kid: "es-1" });
    await authFails(request("/status", { token: forged }), "forged signature");
    const [header, , signature] = (await userToken()).split(".");
    const adminClaims = btoa(JSON.stringify({ ...userClaims, app_metadata: { queue_role: "admin" } }));
    await authFails(
      request("/status", { token: `${header}.${adminClaims}.${signature}` }),
      "tampered claims",
    );
    const expired = await sign(
      es256.privateKey,
      { alg: "ES256", kid: "es-1" },
      userClaims,
      Math.floor(Date.now() / 1000) - 10,
    );
    await assert.rejects(authenticate(request("/status", { token: expired })), /expired/);
    await authFails(
      request("/status", { token: unsignedToken({ ...userClaims, exp: 9999999999 }) }),
      "alg none",
    );
    await authFails(
      request("/status", {
        token: await sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, { ...userClaims, role: "anon" }),
      }),
      "anon role",
    );
    await authFails(
      request("/status", {
        token: await sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, { role: "authenticated" }),
      }),
      "no sub",
    );
    await authFails(request("/status"), "no credential");
    await authFails(request("/status", { token: "not.a.jwt" }), "garbage");
    await authFails(
      request("/status", { apikey: "sb_publishable_xyz", token: "sb_publishable_xyz" }),
      "publishable key",
    );
  }));

Deno.test("auth: legacy HS256 works only with the configured secret", () =>
  withEnv(async () => {
    const secret = new TextEncoder().encode(JWT_SECRET);
    const good = await sign(secret, { alg: "HS256" });
    assert.equal((await authenticate(request("/status", { token: good }))).kind, "user");
    const wrong = await sign(new TextEncoder().encode("another-secret-another-secret-another"), {
      alg: "HS256",
    });
    await authFails(request("/status", { token: wrong }), "wrong HS256 secret");
    await withEnv(() => authFails(request("/status", { token: good }), "HS256 without a configured secret"), {
      SUPABASE_JWT_SECRET: undefined,
    });
  }));

Deno.test("auth: secret keys (apikey or Bearer, new or legacy) make the caller service_role", () =>
  withEnv(async () => {
    assert.equal((await authenticate(request("/status", { apikey: SECRET_KEY }))).kind, "service");
    assert.equal((await authenticate(request("/status", { token: SECRET_KEY }))).kind, "service");
    assert.equal((await authenticate(request("/status", { apikey: SERVICE_ROLE_KEY }))).kind, "service");
    await authFails(request("/status", { apikey: SECRET_KEY + "x" }), "wrong secret key");
    await authFails(request("/status", { apikey: SECRET_KEY.slice(0, -1) }), "prefix of a secret key");
  }));

// HTTP behaviour of the handlers (no database reached) ---------------------------------------------------

Deno.test("http: OPTIONS preflight answers 200 ok with the CORS headers, on every function", async () => {
  for (
    const [h, path] of [[enqueue, "/enqueue"], [cancel, "/cancel"], [status, "/status/metrics"], [
      worker,
      "/video-queue-worker/events",
    ]] as const
  ) {
    const res = await h(request(path, { method: "OPTIONS" }));
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "ok");
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.match(
      res.headers.get("access-control-allow-headers") ?? "",
      /authorization.*x-client-info.*apikey.*content-type/,
    );
  }
});

Deno.test("http: wrong verb is 405, unknown sub-path is 404, both with CORS and the error shape", async () => {
  await assertError(await enqueue(request("/enqueue")), 405, "method_not_allowed");
  await assertError(await cancel(request("/cancel", { method: "GET" })), 405, "method_not_allowed");
  await assertError(await status(request("/status", { method: "POST" })), 405, "method_not_allowed");
  await assertError(await worker(request("/video-queue-worker")), 405, "method_not_allowed");
  await assertError(
    await worker(request("/video-queue-worker/events", { method: "GET" })),
    405,
    "method_not_allowed",
  );
  assert.match((await enqueue(request("/enqueue", { method: "PUT" }))).headers.get("allow") ?? "", /POST/);
  await assertError(await status(request("/status/nothing")), 404, "not_found");
});

Deno.test("http: no credential or a bad one is 401 before the body is looked at", () =>
  withEnv(async () => {
    await assertError(await enqueue(postJson("/enqueue", validDoubt)), 401, "unauthorized");
    await assertError(
      await cancel(postJson("/cancel", { job_id: crypto.randomUUID() })),
      401,
      "unauthorized",
    );
    await assertError(await status(request("/status")), 401, "unauthorized");
    await assertError(await status(request("/status/metrics", { token: "x" })), 401, "unauthorized");
    // A user token is no secret key: the worker pass refuses it.
    await assertError(
      await worker(request("/video-queue-worker", { method: "POST", token: await userToken() })),
      401,
      "unauthorized",
    );
    await assertError(
      await worker(
        postJson("/video-queue-worker/events", {
          job_id: crypto.randomUUID(),
          attempt: 1,
          type: "progress",
          progress: 1,
        }),
      ),
      401,
      "unauthorized",
    );
  }));

Deno.test("http: 415 for non-JSON, 413 over the limit (declared or streamed), 400 for bad JSON or shape", () =>
  withEnv(async () => {
    const token = await userToken();
    const post = (body: BodyInit, headers: Record<string, string>) =>
      enqueue(request("/enqueue", { method: "POST", body, headers, token }));
    await assertError(
      await post(JSON.stringify(validDoubt), { "content-type": "text/plain" }),
      415,
      "unsupported_media_type",
    );
    await assertError(
      await post("question=hi", { "content-type": "application/x-www-form-urlencoded" }),
      415,
      "unsupported_media_type",
    );
    const big = JSON.stringify({ ...validDoubt, payload: { question: "x".repeat(MAX_BODY_BYTES) } });
    await assertError(await post(big, { "content-type": "application/json" }), 413, "payload_too_large");
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    await assertError(await post(stream, { "content-type": "application/json" }), 413, "payload_too_large");
    await assertError(
      await post("{not json", { "content-type": "application/json" }),
      400,
      "invalid_request",
    );
    const bad = await assertError(
      await post(JSON.stringify({ job_type: "doubt", payload: { question: "" } }), {
        "content-type": "application/json; charset=utf-8",
      }),
      400,
      "invalid_request",
    );
    assert.deepEqual(bad.details.map((d: { field: string }) => d.field), ["payload.question"]);
    await assertError(await cancel(postJson("/cancel", { job_id: "42" }, { token })), 400, "invalid_request");
    await assertError(
      await status(request("/status?view=jobs&limit=500", { token })),
      400,
      "invalid_request",
    );
    await assertError(
      await worker(
        postJson(
          "/video-queue-worker/events",
          { job_id: crypto.randomUUID(), attempt: 1, type: "exploded" },
          { token: "cb" },
        ),
      ),
      400,
      "invalid_request",
    );
  }));

Deno.test("http: an unreachable database is 503 unavailable with Retry-After", () =>
  withEnv(async () => {
    try {
      const res = await enqueue(postJson("/enqueue", validDoubt, { apikey: SECRET_KEY }));
      const error = await assertError(res, 503, "unavailable");
      assert.ok(Number(res.headers.get("retry-after")) > 0);
      assert.doesNotMatch(JSON.stringify(error), /127\.0\.0\.1|postgres:/);
    } finally {
      await closeDb();
    }
  }));

// Render protocol classification ----------------------------------------------------------------------------

/** A one-shot render service answering every dispatch with `answer`. */
async function withRenderService(
  answer: (req: Request) => Response | Promise<Response>,
  fn: (url: string) => Promise<void>,
) {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, answer);
  try {
    await fn(`http://127.0.0.1:${server.addr.port}/render`);
  } finally {
    await server.shutdown();
  }
}

const claimFor = (url: string): Claim => ({
  job_id: crypto.randomUUID(),
  attempt: 2,
  callback_token: "cb-token",
  job_type: "doubt",
  renderer: "manim",
  payload: { question: "q" },
  deadline: new Date(Date.now() + 600_000).toISOString(),
  endpoint: { id: crypto.randomUUID(), url },
});

Deno.test("dispatch: 202 is async, 200 with a result is done, the body follows the protocol", () =>
  withEnv(async () => {
    let received: unknown;
    await withRenderService(async (req) => {
      received = await req.json();
      return new Response(null, { status: 202 });
    }, async (url) => {
      const claim = claimFor(url);
      assert.deepEqual(await dispatchToRenderer(claim), { accepted: "async" });
      assert.deepEqual(received, dispatchBody(claim));
      assert.deepEqual(Object.keys(received as object).sort(), [
        "attempt",
        "callback",
        "deadline",
        "job_id",
        "job_type",
        "payload",
      ]);
      assert.equal(
        (received as { callback: { url: string } }).callback.url,
        "https://project.example/functions/v1/video-queue-worker/events",
      );
    });
    await withRenderService(
      () => Response.json({ result: { video_url: "https://cdn/v.mp4" } }),
      async (url) => {
        assert.deepEqual(await dispatchToRenderer(claimFor(url)), {
          accepted: "done",
          result: { video_url: "https://cdn/v.mp4" },
        });
      },
    );
  }, { SUPABASE_URL: "https://project.example" }));

Deno.test("dispatch: a 429 is busy, not failed: undelivered, endpoint skipped for its Retry-After", async () => {
  for (const [retryAfter, cooldown] of [["7", 7], [null, 10], ["soon", 10]] as const) {
    const headers: Record<string, string> = retryAfter ? { "retry-after": retryAfter } : {};
    await withRenderService(() => new Response("busy", { status: 429, headers }), async (url) => {
      await assert.rejects(dispatchToRenderer(claimFor(url)), (e: unknown) => {
        assert.ok(e instanceof RetryableRenderError);
        assert.deepEqual([e.delivered, e.endpointDown, e.cooldownSeconds], [false, true, cooldown]);
        return true;
      });
    });
  }
});

Deno.test("dispatch: 4xx is permanent; 5xx and a bad 200 are retryable and delivered", async () => {
  const cases: [number, string, typeof PermanentRenderError | typeof RetryableRenderError][] = [
    [400, "{}", PermanentRenderError],
    [422, "unsupported payload", PermanentRenderError],
    [500, "", RetryableRenderError],
    [503, "", RetryableRenderError],
    [200, "{}", RetryableRenderError],
  ];
  for (const [code, body, kind] of cases) {
    await withRenderService(() => new Response(body, { status: code }), async (url) => {
      await assert.rejects(dispatchToRenderer(claimFor(url)), (e: unknown) => {
        assert.ok(e instanceof kind, `${code} → ${kind.name}`);
        if (e instanceof RetryableRenderError) assert.deepEqual([e.delivered, e.endpointDown], [true, false]);
        return true;
      });
    });
  }
});

Deno.test("dispatch: a refused connection is undelivered and marks the endpoint down; a time-out is delivered", async () => {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const deadPort = (listener.addr as Deno.NetAddr).port;
  listener.close();
  await assert.rejects(dispatchToRenderer(claimFor(`http://127.0.0.1:${deadPort}/render`)), (e: unknown) => {
    assert.ok(e instanceof RetryableRenderError);
    assert.deepEqual([e.delivered, e.endpointDown], [false, true]);
    return true;
  });

  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  await withRenderService(async () => {
    await released;
    return new Response(null, { status: 202 });
  }, async (url) => {
    await assert.rejects(dispatchToRenderer(claimFor(url), 100), (e: unknown) => {
      assert.ok(e instanceof RetryableRenderError);
      assert.deepEqual([e.delivered, e.endpointDown], [true, true]);
      return true;
    });
    release();
  });
});
