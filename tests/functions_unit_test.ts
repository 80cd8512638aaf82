// Unit tests of shared/ and the function handlers that need no database: schemas, error mapping,
// authentication, CORS, 404/405/413/415, and the render-protocol classification against a local server.
import assert from "node:assert/strict";
import { exportJWK, generateKeyPair, type JWK, SignJWT } from "jose";
import { z } from "zod";
import {
  authenticate,
  CancelRequest,
  type Claim,
  closeDb,
  dispatchBody,
  dispatchToRenderer,
  EnqueueRequest,
  errorResponse,
  HttpError,
  isSafeText,
  jsonIssues,
  MAX_BODY_BYTES,
  MAX_INT4,
  MAX_JSON_DEPTH,
  MAX_RUN_AT_DAYS_AHEAD,
  prometheusText,
  RenderAnswer,
  RenderEvent,
  StatusQuery,
  toHttpError,
} from "../shared/mod.ts";
import { handler as enqueue } from "../supabase/functions/enqueue/handler.ts";
import { handler as cancel } from "../supabase/functions/cancel/handler.ts";
import { handler as status } from "../supabase/functions/status/handler.ts";
import { handler as worker } from "../supabase/functions/video-queue-worker/handler.ts";
import { fakeRenderService } from "./support/render_service.ts";

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

/** SUPABASE_URL of the unit tests (a trailing slash, as operators sometimes write it, is trimmed). */
const PROJECT_URL = "https://project.example/";
const ISSUER = "https://project.example/auth/v1";

/** The environment the functions get, for this test only (Deno.env is process-wide). */
async function withEnv(fn: () => Promise<void>, overrides: Record<string, string | undefined> = {}) {
  const vars: Record<string, string | undefined> = {
    SUPABASE_JWKS: JWKS,
    SUPABASE_JWT_SECRET: JWT_SECRET,
    SUPABASE_SECRET_KEYS: JSON.stringify({ default: SECRET_KEY }),
    SUPABASE_SERVICE_ROLE_KEY: SERVICE_ROLE_KEY,
    // The project URL: user tokens must come from its Auth (iss). No worker kick is ever sent: nothing
    // here reaches a successful enqueue or callback (the database is unreachable).
    SUPABASE_URL: PROJECT_URL,
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

/** What Supabase Auth puts in a user's access token (iat and exp are set by sign()). */
const userClaims = {
  sub: crypto.randomUUID(),
  role: "authenticated",
  iss: ISSUER,
  aud: "authenticated",
  app_metadata: { provider: "email" },
};

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
  // A renderer's name is checked for its form only: which renderers exist is SQL's to say (VQ400).
  assert.ok(EnqueueRequest.safeParse({ ...validDoubt, renderer: "blender" }).success);
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
    [{ ...validDoubt, renderer: "Blender 3" }, ["renderer"]],
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

/** The fields a failed parse names in its details (as the error body lists them). */
function failingFields(result: { error?: unknown }): string[] {
  assert.ok(result.error, "expected the parse to fail");
  return (toHttpError(result.error).details as { field: string }[]).map((d) => d.field);
}

const BAD_TEXT = [
  ["NUL", "a\u0000b"],
  ["lone high surrogate", "a\ud800b"],
  ["lone low surrogate", "\udc00"],
  [
    "high surrogate at the end",
    "abc\udbff",
  ],
] as const;

Deno.test("schemas: NUL and lone surrogates are refused in every string field, each named in details", () => {
  const ref = { job_id: crypto.randomUUID(), attempt: 1 };
  for (const [why, bad] of BAD_TEXT) {
    const cases: [{ safeParse(v: unknown): { error?: unknown } }, unknown, string][] = [
      [EnqueueRequest, { job_type: "doubt", payload: { question: bad } }, "payload.question"],
      [EnqueueRequest, { ...validDoubt, payload: { question: "q", language: bad } }, "payload.language"],
      [EnqueueRequest, { job_type: "topic_short", payload: { topic: bad } }, "payload.topic"],
      [
        EnqueueRequest,
        { job_type: "daily_ca", payload: { date: "2026-03-01", headlines: ["fine", bad] } },
        "payload.headlines.1",
      ],
      [EnqueueRequest, { ...validDoubt, idempotency_key: bad }, "idempotency_key"],
      [CancelRequest, { job_id: ref.job_id, reason: bad }, "reason"],
      [RenderEvent, { ...ref, type: "progress", stage: bad, progress: 5 }, "stage"],
      [RenderEvent, { ...ref, type: "failed", error: bad }, "error"],
      [RenderEvent, { ...ref, type: "completed", result: { video_url: bad } }, "result.video_url"],
      [
        RenderEvent,
        {
          ...ref,
          type: "completed",
          result: { video_url: "https://v/1.mp4", meta: { tags: ["x", { t: bad }] } },
        },
        "result.meta.tags.1.t",
      ],
      [
        RenderEvent,
        { ...ref, type: "completed", result: { video_url: "https://v/1.mp4", [`key${bad}`]: 1 } },
        `result.key${bad}`,
      ],
      [RenderAnswer, { result: { video_url: "https://v/1.mp4", note: bad } }, "result.note"],
    ];
    for (const [schema, body, field] of cases) {
      assert.deepEqual(failingFields(schema.safeParse(body)), [field], `${why} in ${field}`);
    }
  }
  // Well-formed text of any script, emoji (surrogate pairs) included, is fine.
  assert.ok(
    EnqueueRequest.safeParse({ job_type: "doubt", payload: { question: "क्या है? 😀 ½ \ufeff" } }).success,
  );
  assert.ok(isSafeText("😀") && !isSafeText("\ud83d") && !isSafeText("\u0000"));
});

Deno.test("schemas: attempt fits Postgres integer; run_at lies between 1970 and 365 days ahead", () => {
  const ref = { job_id: crypto.randomUUID(), type: "progress", progress: 1 };
  assert.ok(RenderEvent.safeParse({ ...ref, attempt: MAX_INT4 }).success);
  for (const attempt of [MAX_INT4 + 1, 2 ** 53, 0, -1, 1.5, "1"]) {
    assert.deepEqual(failingFields(RenderEvent.safeParse({ ...ref, attempt })), ["attempt"], String(attempt));
  }
  const day = 86_400_000;
  const at = (ms: number) => new Date(ms).toISOString();
  for (
    const runAt of [
      "1970-01-01T00:00:00Z",
      "2001-05-05T12:00:00+05:30",
      at(Date.now()),
      at(Date.now() + (MAX_RUN_AT_DAYS_AHEAD - 1) * day),
    ]
  ) assert.ok(EnqueueRequest.safeParse({ ...validDoubt, run_at: runAt }).success, runAt);
  for (
    const runAt of [
      "2100-01-01T00:00:00Z",
      "9999-12-31T23:59:59Z",
      "0000-01-01T00:00:00Z",
      "1969-12-31T23:59:59Z",
      "1970-01-01T00:00:00+01:00", // 1969 in UTC
      at(Date.now() + (MAX_RUN_AT_DAYS_AHEAD + 1) * day),
    ]
  ) {
    assert.deepEqual(
      failingFields(EnqueueRequest.safeParse({ ...validDoubt, run_at: runAt })),
      ["run_at"],
      runAt,
    );
  }
});

Deno.test("schemas: a callback's loose result is checked to any depth; nesting past MAX_JSON_DEPTH is refused", () => {
  const ref = { job_id: crypto.randomUUID(), attempt: 1, type: "completed" };
  const nested = (depth: number, leaf: unknown = "ok") => {
    let value = leaf;
    for (let i = 0; i < depth; i++) value = { n: value };
    return value;
  };
  const extras = { file_size: 1, duration_seconds: 5.5, resolution: "1080x1920", tags: ["a"], meta: null };
  assert.ok(RenderEvent.safeParse({ ...ref, result: { video_url: "https://v/1.mp4", ...extras } }).success);
  // the result itself is level 0: MAX_JSON_DEPTH - 1 more objects below `deep` still pass
  assert.ok(
    RenderEvent.safeParse({ ...ref, result: { video_url: "u", deep: nested(MAX_JSON_DEPTH - 1) } }).success,
  );
  const tooDeep = failingFields(
    RenderEvent.safeParse({ ...ref, result: { video_url: "u", deep: nested(MAX_JSON_DEPTH) } }),
  );
  assert.equal(tooDeep.length, 1);
  assert.match(tooDeep[0], /^result\.deep(\.n)+$/);
  const unsafeLeaf = failingFields(
    RenderEvent.safeParse({ ...ref, result: { video_url: "u", d: nested(5, "\u0000") } }),
  );
  assert.deepEqual(unsafeLeaf, ["result.d.n.n.n.n.n"]);

  // jsonIssues walks without recursion: a value far deeper than the call stack is checked, not a crash.
  let deep: unknown = [];
  for (let i = 0; i < 200_000; i++) deep = [deep];
  assert.equal(jsonIssues(deep).length, 1);
  // and it stops after `limit` issues, whatever the size
  assert.equal(jsonIssues(Array(1000).fill("\u0000"), [], 10).length, 10);
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
        token: await sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, { ...userClaims, sub: undefined }),
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

Deno.test("auth: iss must be SUPABASE_URL/auth/v1 and aud authenticated, as Supabase Auth issues them", () =>
  withEnv(async () => {
    const es = (claims: Record<string, unknown>) =>
      sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, claims);
    const hs = (claims: Record<string, unknown>) =>
      sign(new TextEncoder().encode(JWT_SECRET), { alg: "HS256" }, claims);
    for (const mint of [es, hs]) {
      assert.equal((await authenticate(request("/status", { token: await mint(userClaims) }))).kind, "user");
      for (
        const [why, claims] of [
          ["another project's issuer", { ...userClaims, iss: "https://other.example/auth/v1" }],
          ["the project URL without /auth/v1", { ...userClaims, iss: "https://project.example" }],
          ["an issuer with the trailing slash kept", {
            ...userClaims,
            iss: "https://project.example//auth/v1",
          }],
          ["no issuer", { ...userClaims, iss: undefined }],
          ["the anon audience", { ...userClaims, aud: "anon" }],
          ["no audience", { ...userClaims, aud: undefined }],
        ] as const
      ) await authFails(request("/status", { token: await mint(claims) }), `${mint.name}: ${why}`);
    }
    // Without a trailing slash in SUPABASE_URL the issuer is the same; without SUPABASE_URL no token passes.
    const token = await es(userClaims);
    await withEnv(async () => {
      assert.equal((await authenticate(request("/status", { token }))).kind, "user");
    }, { SUPABASE_URL: "https://project.example" });
    await withEnv(() => authFails(request("/status", { token }), "no SUPABASE_URL"), {
      SUPABASE_URL: undefined,
    });
  }));

Deno.test("auth: a sub that is not a UUID, or claims SQL could not read back (NUL, lone surrogate), are 401", () =>
  withEnv(async () => {
    const es = (claims: Record<string, unknown>) =>
      sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, claims);
    for (
      const [why, claims] of [
        ["sub not a UUID", { ...userClaims, sub: "user-42" }],
        ["sub empty", { ...userClaims, sub: "" }],
        ["sub a UUID with more", { ...userClaims, sub: `${userClaims.sub}x` }],
        ["sub a number", { ...userClaims, sub: 42 }],
        ["NUL in a claim", { ...userClaims, email: "a\u0000@example.test" }],
        ["lone surrogate in app_metadata", { ...userClaims, app_metadata: { provider: "\ud800" } }],
      ] as const
    ) {
      const res = await enqueue(postJson("/enqueue", validDoubt, { token: await es(claims) }));
      assert.equal(res.status, 401, why);
      await assertError(res, 401, "unauthorized");
    }
    // Upper case is still a UUID (Postgres reads it the same).
    const upper = await es({ ...userClaims, sub: userClaims.sub.toUpperCase() });
    assert.equal((await authenticate(request("/status", { token: upper }))).kind, "user");
  }));

Deno.test("auth: the worker pass answers a signed-in user's token with 403, anything else without a secret key with 401", () =>
  withEnv(async () => {
    const pass = (init: { token?: string; apikey?: string }) =>
      worker(request("/video-queue-worker", { method: "POST", ...init }));
    await assertError(await pass({ token: await userToken() }), 403, "forbidden");
    const admin = await sign(rs256.privateKey, { alg: "RS256", kid: "rs-1" }, {
      ...userClaims,
      app_metadata: { queue_role: "admin" },
    });
    await assertError(await pass({ token: admin }), 403, "forbidden");
    await assertError(
      await pass({ token: await sign(new TextEncoder().encode(JWT_SECRET), { alg: "HS256" }) }),
      403,
      "forbidden",
    );
    for (
      const [why, init] of [
        ["no credential", {}],
        ["garbage", { token: "not.a.jwt" }],
        ["forged", { token: await sign(stranger.privateKey, { alg: "ES256", kid: "es-1" }) }],
        ["wrong issuer", {
          token: await sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, { ...userClaims, iss: "x" }),
        }],
        ["expired", {
          token: await sign(es256.privateKey, { alg: "ES256", kid: "es-1" }, userClaims, 1),
        }],
        ["a user token as apikey", { apikey: await userToken() }],
        ["wrong secret key", { apikey: `${SECRET_KEY}x` }],
      ] as const
    ) await assertError(await pass(init), 401, "unauthorized").catch((e) => assert.fail(`${why}: ${e}`));
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

Deno.test("http: hostile values are 400 naming the field before any SQL runs (SQL would answer 503 here)", () =>
  withEnv(async () => {
    const token = await userToken();
    const ref = { job_id: crypto.randomUUID(), attempt: 1 };
    const cases: [(req: Request) => Promise<Response>, string, unknown, string][] = [
      [enqueue, "/enqueue", { job_type: "doubt", payload: { question: "a\u0000b" } }, "payload.question"],
      [enqueue, "/enqueue", { ...validDoubt, idempotency_key: "\ud800" }, "idempotency_key"],
      [enqueue, "/enqueue", { ...validDoubt, run_at: "2100-01-01T00:00:00Z" }, "run_at"],
      [enqueue, "/enqueue", { ...validDoubt, run_at: "0000-01-01T00:00:00Z" }, "run_at"],
      [cancel, "/cancel", { job_id: ref.job_id, reason: "\u0000" }, "reason"],
      [
        worker,
        "/video-queue-worker/events",
        { ...ref, attempt: 2147483648, type: "progress", progress: 1 },
        "attempt",
      ],
      [
        worker,
        "/video-queue-worker/events",
        { ...ref, type: "progress", stage: "\u0000", progress: 1 },
        "stage",
      ],
      [worker, "/video-queue-worker/events", { ...ref, type: "failed", error: "\udfff" }, "error"],
      [
        worker,
        "/video-queue-worker/events",
        { ...ref, type: "completed", result: { video_url: "\ud800" } },
        "result.video_url",
      ],
      [
        worker,
        "/video-queue-worker/events",
        { ...ref, type: "completed", result: { video_url: "u", extra: { a: ["\u0000"] } } },
        "result.extra.a.0",
      ],
    ];
    for (const [handle, path, body, field] of cases) {
      const error = await assertError(await handle(postJson(path, body, { token })), 400, "invalid_request");
      assert.deepEqual(error.details.map((d: { field: string }) => d.field), [field], `${path} ${field}`);
    }
  }));

Deno.test("http: a body that is not UTF-8, or that breaks off while it is read, is 400", () =>
  withEnv(async () => {
    const token = await userToken();
    const post = (body: BodyInit) =>
      enqueue(
        request("/enqueue", { method: "POST", body, headers: { "content-type": "application/json" }, token }),
      );
    // '{"job_type":"doubt","payload":{"question":"<bytes>"}}' with bytes that are no UTF-8
    const json = (bytes: number[]) =>
      new Uint8Array([
        ...new TextEncoder().encode('{"job_type":"doubt","payload":{"question":"'),
        ...bytes,
        ...new TextEncoder().encode('"}}'),
      ]);
    for (const bytes of [[0xff], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xe2, 0x82]]) {
      const error = await assertError(await post(json(bytes)), 400, "invalid_request");
      assert.match(error.message, /UTF-8/);
    }
    const broken = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"job_type":"doubt",'));
        controller.error(new Error("connection reset by peer"));
      },
    });
    const error = await assertError(await post(broken), 400, "invalid_request");
    assert.doesNotMatch(error.message, /reset by peer/);
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

Deno.test("dispatch: 202 is accepted, 200 with a result is completed, the body follows the protocol", () =>
  withEnv(async () => {
    {
      await using service = await fakeRenderService();
      const claim = claimFor(service.url);
      assert.deepEqual(await dispatchToRenderer(claim), { kind: "accepted" });
      const [received] = service.dispatches;
      assert.deepEqual(received, dispatchBody(claim));
      assert.deepEqual(Object.keys(received).sort(), [
        "attempt",
        "callback",
        "deadline",
        "job_id",
        "job_type",
        "payload",
      ]);
      assert.equal(received.callback.url, "https://project.example/functions/v1/video-queue-worker/events");
    }
    await using service = await fakeRenderService(() =>
      Response.json({ result: { video_url: "https://cdn/v.mp4" } })
    );
    assert.deepEqual(await dispatchToRenderer(claimFor(service.url)), {
      kind: "completed",
      result: { video_url: "https://cdn/v.mp4" },
    });
  }, { SUPABASE_URL: "https://project.example" }));

Deno.test("dispatch: a 429 is busy, not failed: released, endpoint skipped for its Retry-After", async () => {
  for (const [retryAfter, cooldown] of [["7", 7], [null, 10], ["soon", 10]] as const) {
    const headers: Record<string, string> = retryAfter ? { "retry-after": retryAfter } : {};
    await using service = await fakeRenderService(() => new Response("busy", { status: 429, headers }));
    assert.deepEqual(await dispatchToRenderer(claimFor(service.url)), {
      kind: "busy",
      reason: "render service is busy (429)",
      cooldownSeconds: cooldown,
    });
  }
});

Deno.test("dispatch: a redirect is busy too: not followed, released, the endpoint cooled down", async () => {
  await using elsewhere = await fakeRenderService();
  await using redirecting = await fakeRenderService(() =>
    new Response(null, { status: 307, headers: { location: elsewhere.url } })
  );
  assert.deepEqual(await dispatchToRenderer(claimFor(redirecting.url)), {
    kind: "busy",
    reason: "render service answered 307 (a redirect, not followed)",
    cooldownSeconds: "default",
  });
  assert.deepEqual(elsewhere.requests, []);
});

Deno.test("dispatch: 4xx is a permanent failure; 5xx and a bad 200 are retryable, the endpoint kept", async () => {
  const cases: [number, string, boolean][] = [
    [400, "{}", false],
    [422, "unsupported payload", false],
    [500, "", true],
    [503, "", true],
    [200, "{}", true],
  ];
  for (const [code, body, retryable] of cases) {
    await using service = await fakeRenderService(() => new Response(body, { status: code }));
    const outcome = await dispatchToRenderer(claimFor(service.url));
    assert.ok(outcome.kind === "failed", `${code} → ${outcome.kind}`);
    assert.deepEqual([outcome.retryable, outcome.cooldownSeconds], [retryable, undefined], `${code}`);
  }
});

Deno.test("dispatch: a refused connection is busy and cools the endpoint down; a time-out is a retryable failure that does too", async () => {
  const listener = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const deadPort = (listener.addr as Deno.NetAddr).port;
  listener.close();
  assert.deepEqual(await dispatchToRenderer(claimFor(`http://127.0.0.1:${deadPort}/render`)), {
    kind: "busy",
    reason: "render service unreachable",
    cooldownSeconds: "default",
  });

  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  await using service = await fakeRenderService(async () => {
    await released;
    return new Response(null, { status: 202 });
  });
  assert.deepEqual(await dispatchToRenderer(claimFor(service.url), 100), {
    kind: "failed",
    error: "render service gave no answer within 100 ms",
    retryable: true,
    cooldownSeconds: "default",
  });
  release();
});

Deno.test("dispatch: a 200 whose body stalls is a time-out too, not a bad answer", async () => {
  // The status line and headers of a 200, then nothing of the promised body.
  const stalled = Deno.listen({ port: 0, hostname: "127.0.0.1" });
  const held: Deno.Conn[] = [];
  const serving = (async () => {
    for await (const conn of stalled) {
      held.push(conn);
      await conn.read(new Uint8Array(64 * 1024));
      await conn.write(new TextEncoder().encode(
        'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n{"result":',
      ));
    }
  })().catch(() => {});
  const url = `http://127.0.0.1:${(stalled.addr as Deno.NetAddr).port}/render`;
  try {
    assert.deepEqual(await dispatchToRenderer(claimFor(url), 200), {
      kind: "failed",
      error: "render service gave no answer within 200 ms",
      retryable: true,
      cooldownSeconds: "default",
    });
  } finally {
    stalled.close();
    for (const conn of held) conn.close();
    await serving;
  }
});
