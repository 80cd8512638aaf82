// Fuzzing every endpoint over real HTTP on the local stack, with fast-check: bodies (malformed, deeply
// nested, huge, wrong types, unicode, NUL, lone surrogates, injection strings), methods, paths, headers,
// query strings, content types, declared content lengths and tokens. Every answer must have a status of
// API.md's set and its error shape, never a 500, a stack trace, SQL text or a secret; no caller sees a job
// it may not see; a refused request changes nothing in jobs / job_attempts.
// The seed is printed at the start; `FUZZ_SEED=<seed> deno task test tests/fuzz_test.ts` replays a run.
import assert from "node:assert/strict";
import fc from "fast-check";
import { generateKeyPair, importJWK, SignJWT } from "jose";
import { userTokenIssuer } from "../scripts/stack/tokens.ts";
import type { DispatchBody } from "../shared/mod.ts";
import { db, env, fnUrl, mintUser, resetData, setQueueCronActive, test, type TestUser } from "./harness.ts";
import { fakeRenderService } from "./support/render_service.ts";

const SEED = Number(Deno.env.get("FUZZ_SEED") || Math.floor(Math.random() * 2 ** 31));
/** FUZZ_SCALE=<n> runs n times as many requests per property (a longer hunt; the default keeps the file fast). */
const SCALE = Number(Deno.env.get("FUZZ_SCALE") || 1);
console.log(
  `fuzz_test: fast-check seed ${SEED} (replay: FUZZ_SEED=${SEED} deno task test tests/fuzz_test.ts)`,
);

/** Largest body the functions accept (shared/http.ts MAX_BODY_BYTES, documented in the README). */
const MAX_BODY_BYTES = 64 * 1024;

// The contract (API.md "Errors") -------------------------------------------------------------------------

const CODES: Record<number, string> = {
  400: "invalid_request",
  401: "unauthorized",
  403: "forbidden",
  404: "not_found",
  405: "method_not_allowed",
  409: "conflict",
  413: "payload_too_large",
  415: "unsupported_media_type",
  429: "rate_limited",
  503: "unavailable",
};
const SUCCESS = new Set([200, 201]);

/** What no answer may contain: secrets of the stack, stack traces, SQL error text. */
function leakPatterns(): RegExp[] {
  const escape = (s: string) => new RegExp(s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const jwk = JSON.parse(Deno.readTextFileSync(env.SIGNING_KEY_PATH));
  return [
    ...[env.SECRET_KEY, env.SERVICE_ROLE_KEY, env.JWT_SECRET, env.DB_URL, jwk.d].filter(Boolean).map(escape),
    /postgres(ql)?:\/\//i,
    /\n\s+at\s/,
    /file:\/\//,
    /\.ts:\d+/,
    escape(Deno.cwd()),
    /SQLSTATE|syntax error at or near|violates (check|foreign key|not-null|unique)|invalid input syntax/i,
    /out of range for type|unsupported Unicode escape|invalid byte sequence|stack depth limit/i,
    /PL\/pgSQL|current transaction is aborted|relation "|column "/i,
  ];
}

// The world the requests are sent into ---------------------------------------------------------------------

type JobRow = { id: string; user_id: string | null };

/** Who sends a request, and which jobs it may see in an answer. */
type Principal = { name: string; headers: Record<string, string>; sees: (job: JobRow) => boolean };

interface World {
  owner: TestUser;
  attacker: TestUser;
  admin: TestUser;
  /** Job ids of the fixture: owner's processing / cancelled (stale attempt) / queued; attacker's processing / queued. */
  jobs: { ownerRunning: string; ownerCancelled: string; ownerQueued: string; attackerRunning: string };
  /** The distinctive question of each fixture job: it may only appear in answers to callers who see the job. */
  markers: Map<string, string>;
  dispatches: { ownerRunning: DispatchBody; ownerCancelled: DispatchBody; attackerRunning: DispatchBody };
  principals: Principal[];
  /** Each dispatch with the principal that holds its callback token. */
  callers: { dispatch: DispatchBody; principal: Principal }[];
  close(): Promise<void>;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** A user access token signed with the stack's key, as Supabase Auth issues them, with `claims` on top. */
async function signUserToken(userId: string, claims: Record<string, unknown> = {}, key?: CryptoKey) {
  const jwk = JSON.parse(await Deno.readTextFile(env.SIGNING_KEY_PATH));
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({
    sub: userId,
    role: "authenticated",
    iss: userTokenIssuer(env),
    aud: "authenticated",
    iat: now,
    exp: now + 3600,
    ...claims,
  }).setProtectedHeader({ alg: "ES256", kid: jwk.kid, typ: "JWT" })
    .sign(key ?? await importJWK(jwk, "ES256"));
}

async function hs256Token(userId: string, secret: string) {
  const now = Math.floor(Date.now() / 1000);
  return await new SignJWT({
    sub: userId,
    role: "authenticated",
    iss: userTokenIssuer(env),
    aud: "authenticated",
    iat: now,
    exp: now + 3600,
  }).setProtectedHeader({ alg: "HS256", typ: "JWT" }).sign(new TextEncoder().encode(secret));
}

function algNoneToken(claims: Record<string, unknown>): string {
  const b64 = (v: unknown) =>
    btoa(JSON.stringify(v)).replace(/=+$/, "").replace(/\+/g, "-").replace(/\//g, "_");
  return `${b64({ alg: "none", typ: "JWT" })}.${b64(claims)}.`;
}

async function enqueueOver(token: string, question: string): Promise<string> {
  const res = await fetch(fnUrl("enqueue"), {
    method: "POST",
    headers: { ...bearer(token), "content-type": "application/json" },
    body: JSON.stringify({ job_type: "doubt", payload: { question } }),
  });
  const body = await res.json();
  assert.equal(res.status, 201, JSON.stringify(body));
  return body.job.id;
}

/**
 * From the migrations' data: an owner with a processing job, a cancelled one (its attempt is stale) and a
 * queued one; an attacker with a processing job; an admin. Then every render endpoint is disabled, so no
 * worker pass (kicked by a successful fuzz request) can change a job while the fuzz runs.
 */
async function world(): Promise<World> {
  await resetData();
  await setQueueCronActive(false);
  const service = await fakeRenderService();
  const dispatchOf = (jobId: string) =>
    service.until(`the dispatch of ${jobId}`, () => service.dispatches.find((d) => d.job_id === jobId));
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  const [owner, attacker, admin] = [await mintUser(), await mintUser(), await mintUser({ admin: true })];
  const markers = new Map<string, string>();
  const marked = async (user: TestUser) => {
    const marker = `marker-${crypto.randomUUID()}`;
    const id = await enqueueOver(user.token, marker);
    markers.set(id, marker);
    return id;
  };
  const ownerRunning = await marked(owner);
  const ownerCancelled = await marked(owner);
  const attackerRunning = await marked(attacker);
  const dispatches = {
    ownerRunning: await dispatchOf(ownerRunning),
    ownerCancelled: await dispatchOf(ownerCancelled),
    attackerRunning: await dispatchOf(attackerRunning),
  };
  const cancel = await fetch(fnUrl("cancel"), {
    method: "POST",
    headers: { ...bearer(owner.token), "content-type": "application/json" },
    body: JSON.stringify({ job_id: ownerCancelled }),
  });
  assert.equal(cancel.status, 200, await cancel.text());
  await db`update render_endpoints set disabled = true`;
  const ownerQueued = await marked(owner);

  const sees = (userId: string) => (job: JobRow) => job.user_id === userId;
  const nothing = () => false;
  const everything = () => true;
  const stranger = await generateKeyPair("ES256");
  const principals: Principal[] = [
    { name: "no credential", headers: {}, sees: nothing },
    { name: "owner", headers: bearer(owner.token), sees: sees(owner.userId) },
    { name: "attacker", headers: bearer(attacker.token), sees: sees(attacker.userId) },
    {
      name: "attacker (legacy HS256)",
      headers: bearer(await hs256Token(attacker.userId, env.JWT_SECRET)),
      sees: sees(attacker.userId),
    },
    { name: "admin", headers: bearer(admin.token), sees: everything },
    { name: "secret key", headers: { apikey: env.SECRET_KEY }, sees: everything },
    { name: "secret key as Bearer", headers: bearer(env.SECRET_KEY), sees: everything },
    { name: "legacy service-role key", headers: { apikey: env.SERVICE_ROLE_KEY }, sees: everything },
    { name: "publishable key", headers: { apikey: env.PUBLISHABLE_KEY }, sees: nothing },
    { name: "anon key", headers: bearer(env.ANON_KEY), sees: nothing },
    { name: "user token as apikey", headers: { apikey: owner.token }, sees: nothing },
    { name: "expired", headers: bearer((await mintUser({ expiresInSeconds: -30 })).token), sees: nothing },
    {
      name: "wrong key",
      headers: bearer(await signUserToken(owner.userId, {}, stranger.privateKey)),
      sees: nothing,
    },
    {
      name: "HS256 with a wrong secret",
      headers: bearer(await hs256Token(owner.userId, "x".repeat(40))),
      sees: nothing,
    },
    {
      name: "alg none",
      headers: bearer(algNoneToken({
        sub: owner.userId,
        role: "authenticated",
        iss: userTokenIssuer(env),
        aud: "authenticated",
        exp: 9999999999,
        app_metadata: { queue_role: "admin" },
      })),
      sees: nothing,
    },
    {
      name: "wrong iss",
      headers: bearer(await signUserToken(owner.userId, { iss: "https://elsewhere.example/auth/v1" })),
      sees: nothing,
    },
    {
      name: "wrong aud",
      headers: bearer(await signUserToken(owner.userId, { aud: "service_role" })),
      sees: nothing,
    },
    { name: "no iss", headers: bearer(await signUserToken(owner.userId, { iss: undefined })), sees: nothing },
    { name: "sub not a UUID", headers: bearer(await signUserToken("owner")), sees: nothing },
    {
      name: "sub of no user",
      headers: bearer(await signUserToken(crypto.randomUUID())),
      sees: nothing,
    },
    {
      name: "callback token of the owner's running attempt",
      headers: bearer(dispatches.ownerRunning.callback.token),
      sees: (job) => job.id === ownerRunning,
    },
    {
      name: "callback token of a cancelled attempt",
      headers: bearer(dispatches.ownerCancelled.callback.token),
      sees: (job) => job.id === ownerCancelled,
    },
    {
      name: "callback token of the attacker's attempt",
      headers: bearer(dispatches.attackerRunning.callback.token),
      sees: (job) => job.id === attackerRunning,
    },
  ];
  return {
    owner,
    attacker,
    admin,
    jobs: { ownerRunning, ownerCancelled, ownerQueued, attackerRunning },
    markers,
    dispatches,
    principals,
    callers: Object.values(dispatches).map((dispatch) => ({
      dispatch,
      principal: principals.find((p) => p.headers.authorization === `Bearer ${dispatch.callback.token}`)!,
    })),
    close: service.close,
  };
}

// Sending a request and judging the answer ---------------------------------------------------------------

type Body =
  | { kind: "none" }
  | { kind: "text"; text: string }
  | { kind: "bytes"; bytes: Uint8Array }
  | { kind: "stream"; chunks: string[] };

type FuzzRequest = {
  method: string;
  /** After /functions/v1/, with the query string. */
  path: string;
  principal: Principal;
  headers: Record<string, string>;
  body: Body;
};

type Answer = { status: number; headers: Headers; text: string };

async function send(r: FuzzRequest): Promise<Answer> {
  const headers = new Headers({ ...r.principal.headers, ...r.headers });
  const noBody = ["GET", "HEAD"].includes(r.method.toUpperCase()) || r.body.kind === "none";
  let body: BodyInit | undefined;
  if (!noBody) {
    if (r.body.kind === "text") body = r.body.text;
    else if (r.body.kind === "bytes") body = new Uint8Array(r.body.bytes);
    else if (r.body.kind === "stream") {
      const chunks = r.body.chunks.map((c) => new TextEncoder().encode(c));
      body = new ReadableStream({
        pull(controller) {
          const next = chunks.shift();
          if (next) controller.enqueue(next);
          else controller.close();
        },
      });
    }
  }
  const res = await fetch(fnUrl(r.path), { method: r.method, headers, body });
  return { status: res.status, headers: res.headers, text: await res.text() };
}

/** jobs and job_attempts as JSON text, to compare before and after a request. */
async function snapshot(): Promise<{ jobs: string; attempts: string }> {
  const [row] = await db`select
      (select coalesce(jsonb_agg(to_jsonb(j) order by j.id), '[]') from jobs j)::text as jobs,
      (select coalesce(jsonb_agg(to_jsonb(a) order by a.job_id, a.attempt), '[]') from job_attempts a)::text
        as attempts`;
  return { jobs: row.jobs, attempts: row.attempts };
}

function describe(r: FuzzRequest, a?: Answer): string {
  const body = r.body.kind === "text"
    ? r.body.text
    : r.body.kind === "stream"
    ? r.body.chunks.join("")
    : r.body.kind === "bytes"
    ? `<${r.body.bytes.length} bytes>`
    : "";
  const request = `${r.method} /functions/v1/${r.path} as ${r.principal.name} ${JSON.stringify(r.headers)} ${
    JSON.stringify(body.slice(0, 300))
  }`;
  return `${request}\n  → ${a ? `${a.status} ${a.text.slice(0, 500)}` : "(no answer)"}\n  (seed ${SEED})`;
}

function requestText(r: FuzzRequest): string {
  const body = r.body.kind === "text" ? r.body.text : r.body.kind === "stream" ? r.body.chunks.join("") : "";
  return decodeURIComponentSafe(r.path) + r.path + body;
}

function decodeURIComponentSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Checks one answer against the contract (status set, error shape, CORS, no leaks). */
function checkAnswer(r: FuzzRequest, a: Answer, patterns: RegExp[]) {
  const why = describe(r, a);
  assert.ok(SUCCESS.has(a.status) || a.status in CODES, `status outside the contract: ${why}`);
  assert.equal(a.headers.get("access-control-allow-origin"), "*", `no CORS header: ${why}`);
  for (const pattern of patterns) assert.doesNotMatch(a.text, pattern, `leaks ${pattern}: ${why}`);
  const method = r.method.toUpperCase(); // fetch normalizes "post", "get", …
  if (method === "HEAD") return;
  if (method === "OPTIONS") {
    assert.deepEqual([a.status, a.text], [200, "ok"], `preflight: ${why}`);
    return;
  }
  if (SUCCESS.has(a.status)) {
    if (r.path.startsWith("status/metrics")) {
      assert.match(a.headers.get("content-type") ?? "", /^text\/plain/, why);
    } else {
      // one of the contract's answers: a job, a job list, stats, or a worker pass's counts
      const body = JSON.parse(a.text);
      assert.ok(["job", "jobs", "stats", "claimed"].some((key) => key in body), `unknown answer: ${why}`);
    }
    return;
  }
  assert.match(a.headers.get("content-type") ?? "", /^application\/json/, `error not JSON: ${why}`);
  const body = JSON.parse(a.text);
  assert.deepEqual(Object.keys(body), ["error"], `error shape: ${why}`);
  const keys = Object.keys(body.error);
  assert.ok(
    keys.includes("code") && keys.includes("message") &&
      keys.every((k) => ["code", "message", "details"].includes(k)),
    `error keys: ${why}`,
  );
  assert.equal(body.error.code, CODES[a.status], `error code: ${why}`);
  assert.ok(typeof body.error.message === "string" && body.error.message.length > 0, `message: ${why}`);
  if (a.status === 405) assert.ok(a.headers.get("allow"), `405 without Allow: ${why}`);
  if (a.status === 429 || a.status === 503) {
    assert.ok(Number(a.headers.get("retry-after")) > 0, `no Retry-After: ${why}`);
  }
}

/** No answer names a job (or shows a fixture job's payload, or another user's id) its caller may not see. */
async function checkNoLeak(w: World, r: FuzzRequest, a: Answer) {
  const jobs = await db<JobRow[]>`select id, user_id from jobs`;
  const asked = requestText(r).toLowerCase(); // SQL echoes a UUID in its canonical (lower) case
  for (const job of jobs) {
    if (r.principal.sees(job)) continue;
    const why = `${r.principal.name} saw job ${job.id}: ${describe(r, a)}`;
    // An error message may repeat the id the caller sent itself ("job … not found"); nothing else may.
    if (!(a.status >= 400 && asked.includes(job.id))) assert.ok(!a.text.includes(job.id), why);
    const marker = w.markers.get(job.id);
    if (marker) assert.ok(!a.text.includes(marker), why);
    if (job.user_id && !asked.includes(job.user_id)) assert.ok(!a.text.includes(job.user_id), why);
  }
}

/** Sends `r` and checks the answer; a refused request (or any read) must leave the tables as they were. */
async function probe(w: World, r: FuzzRequest, patterns: RegExp[]): Promise<Answer> {
  const before = await snapshot();
  let answer: Answer;
  try {
    answer = await send(r);
  } catch (err) {
    throw new Error(`request failed (${err}): ${describe(r)}`);
  }
  statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
  checkAnswer(r, answer, patterns);
  await checkNoLeak(w, r, answer);
  if (!SUCCESS.has(answer.status) || r.method.toUpperCase() !== "POST") {
    assert.deepEqual(
      await snapshot(),
      before,
      `a refused request changed the database: ${describe(r, answer)}`,
    );
  }
  return answer;
}

/** How many answers of each status the current property got (printed, to show what the fuzz reached). */
let statuses: Record<number, number> = {};

/** Runs a property with the printed seed; no shrinking (the stack's state moves on with every request). */
async function fuzz<T>(arb: fc.Arbitrary<T>, numRuns: number, check: (value: T) => Promise<void>) {
  statuses = {};
  numRuns = Math.max(1, Math.round(numRuns * SCALE));
  await fc.assert(fc.asyncProperty(arb, check), { seed: SEED, numRuns, endOnFailure: true });
  console.log(`seed ${SEED}, ${numRuns} requests, answers by status: ${JSON.stringify(statuses)}`);
}

// Arbitraries ------------------------------------------------------------------------------------------------

const HOSTILE_STRINGS = [
  "",
  " ",
  "\u0000",
  "a\u0000b",
  "\ud800",
  "\udfff",
  "x\ud83d",
  "\ude00x",
  "\ud83d\ude00",
  "\ufeff\u202e\u200b",
  "\uffff\ufffe",
  "'; drop table jobs; --",
  '" or 1=1 --',
  "$$; select pg_sleep(10); $$",
  "\\x00\\u0000",
  "%s%n%x",
  "{{7*7}}${7*7}",
  "<script>alert(1)</script>",
  "../../../../etc/passwd",
  "\r\n\tHeader: injected",
  "null",
  "x".repeat(129),
  "é".repeat(2001),
];

/** Text Postgres cannot take: a NUL or a lone surrogate somewhere inside. */
const unsafeString = fc.tuple(
  fc.string({ maxLength: 12 }),
  fc.constantFrom("\u0000", "\ud800", "\udbff", "\udc00", "\udfff"),
  fc.string({ maxLength: 12 }),
).map(([before, bad, after]) => before + bad + after);

/** Strings that break things: NUL, lone surrogates, injections, long and unicode text. */
const hostileString: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...HOSTILE_STRINGS) },
  { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  { weight: 3, arbitrary: unsafeString },
  { weight: 1, arbitrary: fc.string({ minLength: 100, maxLength: 3000 }) },
);

/** Any JSON value, with hostile strings inside. */
const hostileJson: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    hostileString,
    fc.double(),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("value"), { maxLength: 4 }),
    fc.dictionary(hostileString, tie("value"), { maxKeys: 4 }),
  ),
})).value;

/** A value nested `depth` arrays deep (kept shallow enough for JSON.stringify; deeper ones are text). */
function nest(depth: number): unknown {
  let value: unknown = "bottom";
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** JSON text nested `depth` deep: arrays, or objects. */
const deepJson = fc.tuple(fc.integer({ min: 1, max: 30_000 }), fc.boolean()).map(([depth, arrays]) =>
  arrays ? "[".repeat(depth) + "]".repeat(depth) : '{"a":'.repeat(depth) + "1" + "}".repeat(depth)
);

const attemptValue = fc.oneof(
  fc.constantFrom(1, 2, 0, -1, 2147483647, 2147483648, 9007199254740993, 1.5, "1", null, 1e300),
  fc.integer(),
  fc.double(),
);

const runAtValue = fc.oneof(
  fc.constantFrom(
    "2100-01-01T00:00:00Z",
    "0000-01-01T00:00:00Z",
    "1969-12-31T23:59:59Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59+14:00",
    "2026-02-29T00:00:00Z",
    "tomorrow",
  ),
  fc.date({ noInvalidDate: true }).map((d) => d.toISOString()),
  fc.integer({ min: -400, max: 400 }).map((days) => new Date(Date.now() + days * 86_400_000).toISOString()),
  hostileString,
);

const maybe = <T>(arb: fc.Arbitrary<T>) => fc.option(arb, { nil: undefined, freq: 2 });

/** Ordinary text, as a client app sends it. */
const plainText = fc.string({ minLength: 1, maxLength: 40 });

/** `valid` with at most one field replaced by something hostile. */
function mutated(valid: fc.Arbitrary<Record<string, unknown>>, keys: string[]) {
  const hostileValue = fc.oneof(
    { weight: 3, arbitrary: unsafeString },
    { weight: 1, arbitrary: hostileString },
    { weight: 1, arbitrary: hostileJson },
    { weight: 1, arbitrary: attemptValue },
    { weight: 1, arbitrary: runAtValue },
  );
  return fc.tuple(valid, fc.option(fc.tuple(fc.constantFrom(...keys), hostileValue), { freq: 2 }))
    .map(([value, change]) => change ? { ...value, [change[0]]: change[1] } : value);
}

/** A valid enqueue body (for users: no priority or renderer), or one with a single hostile field. */
const validEnqueueBody = mutated(
  fc.record({
    job_type: fc.constant("doubt"),
    payload: mutated(fc.record({ question: plainText }), ["question", "language", "extra"]),
    idempotency_key: maybe(plainText),
    run_at: maybe(
      fc.integer({ min: -30, max: 300 }).map((days) =>
        new Date(Date.now() + days * 86_400_000).toISOString()
      ),
    ),
  }, { requiredKeys: ["job_type", "payload"] }),
  ["job_type", "payload", "idempotency_key", "run_at", "priority", "renderer"],
);

/** A valid callback for dispatch `d`, or one with a single hostile field (of those its type reads). */
function validCallbackBody(d: DispatchBody): fc.Arbitrary<unknown> {
  const ref = { job_id: fc.constant(d.job_id), attempt: fc.constant(d.attempt) };
  const result = mutated(
    fc.record({
      video_url: plainText.map((s) => `https://cdn.example/${encodeURIComponent(s)}.mp4`),
      file_size: maybe(fc.nat()),
      meta: maybe(fc.dictionary(plainText, plainText, { maxKeys: 3 })),
    }, { requiredKeys: ["video_url"] }),
    ["video_url", "file_size", "meta"],
  );
  return fc.oneof(
    mutated(
      fc.record({
        ...ref,
        type: fc.constant("progress"),
        stage: maybe(plainText),
        progress: fc.integer({ min: 0, max: 100 }),
      }),
      ["job_id", "attempt", "stage", "progress"],
    ),
    mutated(
      fc.record({
        ...ref,
        type: fc.constant("completed"),
        result: fc.tuple(result, fc.option(fc.tuple(unsafeString, plainText), { freq: 4 }))
          .map(([r, key]) => key ? { ...r, [key[0]]: key[1] } : r),
      }),
      ["job_id", "attempt", "result"],
    ),
    mutated(
      fc.record({ ...ref, type: fc.constant("failed"), error: plainText, retryable: maybe(fc.boolean()) }),
      ["job_id", "attempt", "error", "retryable"],
    ),
    mutated(fc.record({ ...ref, type: fc.constant("heartbeat") }), ["job_id", "attempt"]),
  );
}

/** An enqueue body: field by field plausible, with hostile values mixed in. */
const enqueueBody = fc.record({
  job_type: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom("doubt", "topic_short", "daily_ca") },
    { weight: 1, arbitrary: hostileJson },
  ),
  payload: fc.oneof(
    { weight: 3, arbitrary: fc.record({ question: hostileString, language: maybe(hostileString) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        topic: hostileString,
        duration_seconds: maybe(fc.oneof(fc.integer({ min: 10, max: 200 }), fc.double())),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        date: fc.oneof(fc.constantFrom("2026-03-01", "0000-01-01", "2026-02-30"), hostileString),
        headlines: maybe(fc.array(hostileString, { maxLength: 25 })),
      }),
    },
    { weight: 1, arbitrary: hostileJson },
  ),
  idempotency_key: maybe(hostileString),
  priority: maybe(fc.oneof(fc.constantFrom("high", "medium", "low"), hostileString)),
  run_at: maybe(runAtValue),
  renderer: maybe(fc.oneof(fc.constantFrom("manim", "revideo", "orchestrator"), hostileString)),
  user_id: maybe(fc.uuid()),
}, { requiredKeys: [] });

/** Bodies of every kind, around `structured` (a plausible request body for the path). */
function bodies(structured: fc.Arbitrary<unknown>): fc.Arbitrary<Body> {
  return fc.oneof(
    {
      weight: 10,
      arbitrary: structured.map((v) => ({ kind: "text" as const, text: JSON.stringify(v) ?? "" })),
    },
    {
      weight: 1,
      arbitrary: hostileJson.map((v) => ({ kind: "text" as const, text: JSON.stringify(v) ?? "" })),
    },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }).map((text) => ({ kind: "text" as const, text })) },
    {
      weight: 1,
      arbitrary: structured.chain((v) => {
        const text = JSON.stringify(v) ?? "";
        return fc.nat({ max: Math.max(text.length - 1, 0) }).map((n) => ({
          kind: "text" as const,
          text: text.slice(0, n),
        }));
      }),
    },
    { weight: 1, arbitrary: deepJson.map((text) => ({ kind: "text" as const, text })) },
    {
      weight: 1,
      arbitrary: fc.integer({ min: MAX_BODY_BYTES - 64, max: MAX_BODY_BYTES + 64 }).map((n) => ({
        kind: "text" as const,
        text: JSON.stringify({ job_type: "doubt", payload: { question: "x".repeat(n - 40) } }),
      })),
    },
    {
      weight: 1,
      arbitrary: fc.uint8Array({ maxLength: 300 }).map((bytes) => ({ kind: "bytes" as const, bytes })),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        // a UTF-8-encoded lone surrogate (CESU-8), an overlong NUL, a raw NUL inside a string
        { kind: "bytes" as const, bytes: new Uint8Array([0x22, 0xed, 0xa0, 0x80, 0x22]) },
        { kind: "bytes" as const, bytes: new Uint8Array([0x22, 0xc0, 0x80, 0x22]) },
        { kind: "bytes" as const, bytes: new TextEncoder().encode('{"question":"a\u0000b"}') },
        { kind: "text" as const, text: '{"__proto__":{"queue_role":"admin"},"job_type":"doubt"}' },
        { kind: "text" as const, text: '{"job_type":"doubt","job_type":"daily_ca","payload":{}}' },
        { kind: "text" as const, text: "\ufeff{}" },
        { kind: "text" as const, text: "1e999" },
        { kind: "text" as const, text: "" },
        { kind: "none" as const },
      ),
    },
    {
      weight: 1,
      arbitrary: fc.tuple(structured, fc.integer({ min: 1, max: 5 })).map(([v, parts]) => {
        const text = JSON.stringify(v) ?? "";
        const size = Math.ceil(text.length / parts) || 1;
        const chunks = [];
        for (let i = 0; i < text.length; i += size) chunks.push(text.slice(i, i + size));
        return { kind: "stream" as const, chunks };
      }),
    },
    {
      weight: 1,
      arbitrary: fc.integer({ min: 2, max: 20 }).map((n) => ({
        kind: "stream" as const,
        chunks: Array(n).fill("x".repeat(MAX_BODY_BYTES / 10)),
      })),
    },
  );
}

const JSON_TYPES = [
  "application/json",
  "application/json; charset=utf-8",
  "Application/JSON",
  "application/vnd.api+json",
];
const OTHER_TYPES = [
  "text/plain",
  "text/json",
  "application/jsonx",
  "application/x-www-form-urlencoded",
  "multipart/form-data; boundary=x",
  "",
];
const contentType = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom(...JSON_TYPES) },
  { weight: 1, arbitrary: fc.constantFrom(...OTHER_TYPES) },
);

/** Header values a client can send (visible ASCII); names are tokens. */
const headerValue = fc.string({
  unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  maxLength: 300,
});
const extraHeaders = fc.dictionary(
  fc.constantFrom(
    "x-client-info",
    "origin",
    "x-forwarded-for",
    "content-encoding",
    "accept",
    "x-fuzz",
    "prefer",
  ),
  headerValue,
  { maxKeys: 3 },
);

/** The world's principals that may call the user-facing endpoints (so the fuzz gets past authentication). */
const VALID_CALLERS = [
  "owner",
  "attacker",
  "attacker (legacy HS256)",
  "admin",
  "secret key",
  "secret key as Bearer",
  "legacy service-role key",
];

/** Any principal: valid callers, the world's bad credentials, and credentials made up on the spot. */
function principals(w: World): fc.Arbitrary<Principal> {
  const garbage = fc.oneof(
    headerValue.map((s) => ({ name: "garbage Bearer", headers: bearer(s || "x"), sees: () => false })),
    headerValue.map((s) => ({ name: "garbage apikey", headers: { apikey: s || "x" }, sees: () => false })),
    fc.tuple(headerValue, headerValue, headerValue).map(([a, b, c]) => ({
      name: "garbage JWT",
      headers: bearer(`${a}.${b}.${c}`),
      sees: () => false,
    })),
    fc.constantFrom(
      { name: "Basic auth", headers: { authorization: "Basic b3duZXI6cGFzcw==" }, sees: () => false },
      { name: "empty Bearer", headers: { authorization: "Bearer " }, sees: () => false },
      { name: "two Bearer tokens", headers: { authorization: `Bearer a b` }, sees: () => false },
      { name: "long token", headers: bearer("e".repeat(4000)), sees: () => false },
    ),
  );
  const valid = w.principals.filter((p) => VALID_CALLERS.includes(p.name));
  const others = w.principals.filter((p) => !VALID_CALLERS.includes(p.name));
  return fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...valid) },
    { weight: 3, arbitrary: fc.constantFrom(...others) },
    { weight: 1, arbitrary: garbage },
  );
}

/** A job id: the world's, a fresh UUID, or not a UUID at all. */
function jobIds(w: World): fc.Arbitrary<unknown> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...Object.values(w.jobs)) },
    { weight: 1, arbitrary: fc.uuid() },
    { weight: 1, arbitrary: fc.constantFrom(Object.values(w.jobs)[0].toUpperCase(), "42", null, 7) },
    { weight: 1, arbitrary: hostileString },
  );
}

function post(w: World, path: string, structured: fc.Arbitrary<unknown>): fc.Arbitrary<FuzzRequest> {
  return fc.record({
    method: fc.constant("POST"),
    path: fc.constant(path),
    principal: principals(w),
    headers: fc.tuple(contentType, extraHeaders).map(([type, extra]) => ({ ...extra, "content-type": type })),
    body: bodies(structured),
  });
}

/** A render callback: plausible for one of the world's attempts, with hostile values mixed in. */
function callbackBody(w: World): fc.Arbitrary<unknown> {
  return fc.record({
    job_id: jobIds(w),
    attempt: attemptValue,
    type: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom("progress", "heartbeat", "completed", "failed") },
      { weight: 1, arbitrary: hostileJson },
    ),
    stage: maybe(hostileString),
    progress: maybe(fc.oneof(fc.constantFrom(0, 100, 100.4, 100.5, -0.4), fc.double(), hostileString)),
    result: maybe(fc.oneof(
      fc.record({ video_url: hostileString, extra: maybe(hostileJson) }, { requiredKeys: ["video_url"] }),
      fc.dictionary(hostileString, hostileJson, { maxKeys: 3 }).map((o) => ({
        video_url: "https://v/x.mp4",
        ...o,
      })),
      fc.integer({ min: 1, max: 200 }).map((depth) => ({
        video_url: "https://v/x.mp4",
        nested: nest(depth),
      })),
      hostileJson,
    )),
    error: maybe(hostileString),
    retryable: maybe(fc.oneof(fc.boolean(), hostileJson)),
  }, { requiredKeys: ["job_id", "attempt", "type"] });
}

/** A callback with one of the world's callback tokens (or any other credential) for any attempt. */
function callbacks(w: World): fc.Arbitrary<FuzzRequest> {
  const tokens = w.principals.filter((p) => p.name.startsWith("callback token"));
  const matched = fc.constantFrom(...w.callers).chain(({ dispatch, principal }) =>
    fc.record({
      method: fc.constant("POST"),
      path: fc.constant("video-queue-worker/events"),
      principal: fc.constant(principal),
      headers: fc.tuple(contentType, extraHeaders).map(([type, extra]) => ({
        ...extra,
        "content-type": type,
      })),
      body: bodies(validCallbackBody(dispatch)),
    })
  );
  const any = fc.record({
    method: fc.constant("POST"),
    path: fc.constant("video-queue-worker/events"),
    principal: fc.oneof({ weight: 3, arbitrary: fc.constantFrom(...tokens) }, {
      weight: 1,
      arbitrary: principals(w),
    }),
    headers: fc.tuple(contentType, extraHeaders).map(([type, extra]) => ({ ...extra, "content-type": type })),
    body: fc.oneof(
      { weight: 8, arbitrary: bodies(callbackBody(w)) },
      {
        weight: 1,
        arbitrary: fc.tuple(fc.constantFrom(...Object.values(w.dispatches)), deepJson).map(([d, deep]) => ({
          kind: "text" as const,
          text: `{"job_id":"${d.job_id}","attempt":${d.attempt},"type":"completed",` +
            `"result":{"video_url":"https://v/x.mp4","deep":${deep}}}`,
        })),
      },
    ),
  });
  return fc.oneof({ weight: 1, arbitrary: matched }, { weight: 1, arbitrary: any });
}

/** A query string for GET /status: its parameters with hostile values, repeated, unknown or malformed. */
function statusQueries(w: World): fc.Arbitrary<string> {
  const param = fc.tuple(
    fc.oneof(fc.constantFrom("job_id", "view", "status", "limit"), hostileString),
    fc.oneof(
      jobIds(w).map(String),
      fc.constantFrom("jobs", "queued", "failed", "1", "200", "201", "0", "-1", "1e2", "Infinity", "NaN", ""),
      hostileString,
    ),
  );
  return fc.oneof(
    {
      weight: 5,
      arbitrary: fc.array(param, { maxLength: 4 }).map((ps) => new URLSearchParams(ps).toString()),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        "job_id=%00",
        "job_id=%ED%A0%80",
        "job_id=%ZZ",
        "view=jobs&limit=%00",
        "job_id[]=1",
        "&&&=",
      ),
    },
  ).map((q) => q ? `?${q}` : "");
}

const METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "FOO", "get", "post"];
const ROUTES = [
  "enqueue",
  "cancel",
  "status",
  "status/metrics",
  "status/retry",
  "video-queue-worker",
  "video-queue-worker/events",
];

/** Any method on any path of the four functions (known routes, unknown sub-paths), any query string. */
function anyRequest(w: World): fc.Arbitrary<FuzzRequest> {
  const path = fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(...ROUTES) },
    {
      weight: 1,
      arbitrary: fc.tuple(
        fc.constantFrom("enqueue", "cancel", "status", "video-queue-worker"),
        fc.oneof(
          fc.stringMatching(/^[A-Za-z0-9_~-]{1,20}$/),
          fc.constantFrom("%00", "%C3%28", "%F0%9F%98%80", "events/extra", "metrics/", "retry%2F", "EVENTS"),
        ),
      ).map(([fn, sub]) => `${fn}/${sub}`),
    },
  );
  return fc.record({
    method: fc.constantFrom(...METHODS),
    path: fc.tuple(path, statusQueries(w)).map(([p, q]) => p + q),
    principal: principals(w),
    headers: fc.tuple(fc.option(fc.constantFrom(...JSON_TYPES, ...OTHER_TYPES)), extraHeaders).map((
      [type, extra],
    ) => (type === null ? extra : { ...extra, "content-type": type })),
    body: bodies(
      fc.oneof(enqueueBody, callbackBody(w), fc.record({ job_id: jobIds(w), reason: maybe(hostileString) })),
    ),
  });
}

// Examples that must always be tried (the inputs that once reached Postgres and gave 500) ----------------

type Case = { path: string; body: unknown; principal: string; field: string };

function hostileCases(w: World): Case[] {
  const running = w.dispatches.ownerRunning;
  const event = (extra: Record<string, unknown>) => ({
    job_id: running.job_id,
    attempt: running.attempt,
    ...extra,
  });
  const doubt = (extra: Record<string, unknown> = {}, payload: Record<string, unknown> = {}) => ({
    job_type: "doubt",
    payload: { question: "Why is the sky blue?", ...payload },
    ...extra,
  });
  const cases: Case[] = [];
  for (const bad of ["a\u0000b", "a\ud800b"]) {
    const owner = "owner", cb = "callback token of the owner's running attempt";
    cases.push(
      { path: "enqueue", principal: owner, body: doubt({}, { question: bad }), field: "payload.question" },
      { path: "enqueue", principal: owner, body: doubt({}, { language: bad }), field: "payload.language" },
      { path: "enqueue", principal: owner, body: doubt({ idempotency_key: bad }), field: "idempotency_key" },
      {
        path: "enqueue",
        principal: owner,
        body: { job_type: "topic_short", payload: { topic: bad } },
        field: "payload.topic",
      },
      {
        path: "enqueue",
        principal: owner,
        body: { job_type: "daily_ca", payload: { date: "2026-03-01", headlines: ["ok", bad] } },
        field: "payload.headlines.1",
      },
      {
        path: "cancel",
        principal: owner,
        body: { job_id: w.jobs.ownerQueued, reason: bad },
        field: "reason",
      },
      {
        path: "video-queue-worker/events",
        principal: cb,
        body: event({ type: "progress", stage: bad, progress: 10 }),
        field: "stage",
      },
      {
        path: "video-queue-worker/events",
        principal: cb,
        body: event({ type: "failed", error: bad }),
        field: "error",
      },
      {
        path: "video-queue-worker/events",
        principal: cb,
        body: event({ type: "completed", result: { video_url: bad } }),
        field: "result.video_url",
      },
      {
        path: "video-queue-worker/events",
        principal: cb,
        body: event({
          type: "completed",
          result: { video_url: "https://v/1.mp4", meta: { tags: ["x", bad] } },
        }),
        field: "result.meta.tags.1",
      },
      {
        path: "video-queue-worker/events",
        principal: cb,
        body: event({ type: "completed", result: { video_url: "https://v/1.mp4", [`k${bad}`]: 1 } }),
        field: `result.k${bad}`,
      },
    );
  }
  cases.push(
    {
      path: "video-queue-worker/events",
      principal: "callback token of the attacker's attempt",
      body: event({ type: "progress", attempt: 2147483648, progress: 1 }),
      field: "attempt",
    },
    {
      path: "video-queue-worker/events",
      principal: "callback token of the owner's running attempt",
      body: event({ type: "progress", attempt: 2147483648, progress: 1 }),
      field: "attempt",
    },
    {
      path: "video-queue-worker/events",
      principal: "callback token of the owner's running attempt",
      body: event({
        type: "completed",
        result: { video_url: "https://v/1.mp4", deep: JSON.parse("[".repeat(5000) + "]".repeat(5000)) },
      }),
      field: "result.deep",
    },
    { path: "enqueue", principal: "owner", body: doubt({ run_at: "2100-01-01T00:00:00Z" }), field: "run_at" },
    { path: "enqueue", principal: "owner", body: doubt({ run_at: "0000-01-01T00:00:00Z" }), field: "run_at" },
    { path: "enqueue", principal: "owner", body: doubt({ run_at: "1969-12-31T23:59:59Z" }), field: "run_at" },
    { path: "enqueue", principal: "admin", body: doubt({ run_at: "2100-01-01T00:00:00Z" }), field: "run_at" },
  );
  return cases;
}

function principal(w: World, name: string): Principal {
  const found = w.principals.find((p) => p.name === name);
  assert.ok(found, name);
  return found;
}

// Tests ------------------------------------------------------------------------------------------------------

test("hostile values (NUL, lone surrogates, int4 overflow, run_at out of range, deep JSON) are 400 naming the field", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    for (const c of hostileCases(w)) {
      const r: FuzzRequest = {
        method: "POST",
        path: c.path,
        principal: principal(w, c.principal),
        headers: { "content-type": "application/json" },
        body: { kind: "text", text: JSON.stringify(c.body) },
      };
      const answer = await probe(w, r, patterns);
      assert.equal(answer.status, 400, describe(r, answer));
      const error = JSON.parse(answer.text).error;
      assert.equal(error.code, "invalid_request");
      const fields = (error.details as { field: string }[]).map((d) => d.field);
      assert.ok(fields.some((f) => f === c.field || f.startsWith(`${c.field}.`)), describe(r, answer));
    }
  } finally {
    await w.close();
  }
});

test("tokens: wrong iss or aud, no iss, a sub that is no UUID are 401; a user token on the worker pass is 403", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    const asked = (path: string, who: string, method = "GET", body?: unknown): FuzzRequest => ({
      method,
      path,
      principal: principal(w, who),
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? { kind: "none" } : { kind: "text", text: JSON.stringify(body) },
    });
    for (const who of ["wrong iss", "wrong aud", "no iss", "sub not a UUID", "alg none", "wrong key"]) {
      for (
        const r of [
          asked(`status?job_id=${w.jobs.ownerQueued}`, who),
          asked("enqueue", who, "POST", { job_type: "doubt", payload: { question: "q" } }),
          asked("cancel", who, "POST", { job_id: w.jobs.ownerQueued }),
        ]
      ) {
        const answer = await probe(w, r, patterns);
        assert.equal(answer.status, 401, describe(r, answer));
      }
    }
    for (const who of ["owner", "admin", "attacker (legacy HS256)"]) {
      const r = asked("video-queue-worker", who, "POST", {});
      const answer = await probe(w, r, patterns);
      assert.equal(answer.status, 403, describe(r, answer));
    }
    for (const who of ["no credential", "publishable key", "expired", "wrong iss", "user token as apikey"]) {
      const r = asked("video-queue-worker", who, "POST", {});
      const answer = await probe(w, r, patterns);
      assert.equal(answer.status, 401, describe(r, answer));
    }
    // The minted tokens themselves pass: the owner reads the queued job.
    const own = await probe(w, asked(`status?job_id=${w.jobs.ownerQueued}`, "owner"), patterns);
    assert.equal(own.status, 200);
  } finally {
    await w.close();
  }
});

test("callbacks: another attempt's token is 401, a cancelled attempt's is 409, and neither changes anything", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    const { ownerRunning, ownerCancelled, attackerRunning } = w.dispatches;
    const callback = (d: DispatchBody, who: string, event: Record<string, unknown>): FuzzRequest => ({
      method: "POST",
      path: "video-queue-worker/events",
      principal: principal(w, who),
      headers: { "content-type": "application/json" },
      body: { kind: "text", text: JSON.stringify({ job_id: d.job_id, attempt: d.attempt, ...event }) },
    });
    const events = [
      { type: "progress", stage: "composing_video", progress: 60 },
      { type: "completed", result: { video_url: "https://cdn.example/stolen.mp4" } },
      { type: "failed", error: "sabotage", retryable: false },
    ];
    for (const event of events) {
      for (
        const [d, who, status] of [
          [ownerRunning, "callback token of the attacker's attempt", 401],
          [attackerRunning, "callback token of the owner's running attempt", 401],
          [ownerRunning, "callback token of a cancelled attempt", 401],
          [ownerCancelled, "callback token of a cancelled attempt", 409],
          [ownerRunning, "owner", 401],
          [ownerRunning, "secret key as Bearer", 401],
        ] as const
      ) {
        const r = callback(d, who, event);
        const answer = await probe(w, r, patterns);
        assert.equal(answer.status, status, describe(r, answer));
      }
    }
  } finally {
    await w.close();
  }
});

test("declared Content-Length: over the limit is 413, shorter or longer than the body is 400, malformed never reaches a function", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    const body = JSON.stringify({ job_id: w.jobs.ownerQueued });
    const owner = principal(w, "owner");
    for (
      const [declared, status] of [
        [String(MAX_BODY_BYTES + 1), 413],
        [String(10 * MAX_BODY_BYTES), 413],
        [String(body.length + 50), 400], // the body ends early
        ["5", 400], // a prefix of the body
        ["0", 400],
      ] as const
    ) {
      const before = await snapshot();
      const answer = await raw("cancel", owner.headers, declared, body);
      const r: FuzzRequest = {
        method: "POST",
        path: "cancel",
        principal: owner,
        headers: { "content-length": declared },
        body: { kind: "text", text: body },
      };
      checkAnswer(r, answer, patterns);
      assert.equal(answer.status, status, describe(r, answer));
      assert.deepEqual(await snapshot(), before);
    }
    // Not a number: the HTTP server refuses it (400, empty body) before any function runs.
    for (const declared of ["abc", "-1", "1e3"]) {
      const before = await snapshot();
      const answer = await raw("cancel", owner.headers, declared, body);
      assert.equal(answer.status, 400, `${declared}: ${answer.status} ${answer.text}`);
      assert.deepEqual(await snapshot(), before);
    }
  } finally {
    await w.close();
  }
});

test("fuzz: POST /enqueue bodies, content types and credentials", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    const structured = fc.oneof(validEnqueueBody, enqueueBody);
    await fuzz(post(w, "enqueue", structured), 200, async (r) => void await probe(w, r, patterns));
  } finally {
    await w.close();
  }
});

test("fuzz: render callbacks with every attempt's token, hostile events and results", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    await fuzz(callbacks(w), 150, async (r) => void await probe(w, r, patterns));
  } finally {
    await w.close();
  }
});

test("fuzz: POST /cancel and /status/retry, GET /status queries, as every kind of caller", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    const jobBody = fc.oneof(
      mutated(fc.record({ job_id: jobIds(w), reason: maybe(plainText) }), ["job_id", "reason", "extra"]),
      fc.record({ job_id: jobIds(w), reason: maybe(hostileString), extra: maybe(hostileJson) }, {
        requiredKeys: ["job_id"],
      }),
    );
    const reads = fc.record({
      method: fc.constant("GET"),
      path: fc.tuple(fc.constantFrom("status", "status/metrics"), statusQueries(w)).map(([p, q]) => p + q),
      principal: principals(w),
      headers: extraHeaders,
      body: fc.constant({ kind: "none" } as Body),
    });
    await fuzz(
      fc.oneof(post(w, "cancel", jobBody), post(w, "status/retry", jobBody), reads),
      200,
      async (r) => void await probe(w, r, patterns),
    );
  } finally {
    await w.close();
  }
});

test("fuzz: any method, path, query, header, content type and body on every function", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    await fuzz(anyRequest(w), 150, async (r) => void await probe(w, r, patterns));
  } finally {
    await w.close();
  }
});

test("fuzz: declared Content-Length against the actual body (raw HTTP/1.1)", async () => {
  const w = await world();
  const patterns = leakPatterns();
  try {
    const arb = fc.record({
      path: fc.constantFrom("enqueue", "cancel", "status/retry", "video-queue-worker/events"),
      principal: principals(w),
      body: fc.oneof(
        enqueueBody.map((v) => JSON.stringify(v)),
        callbackBody(w).map((v) => JSON.stringify(v)),
        fc.string({ maxLength: 100 }),
      ),
      declared: fc.oneof(
        fc.constant(-1), // the body's own length
        fc.nat({ max: 300 }),
        fc.integer({ min: MAX_BODY_BYTES + 1, max: 100 * MAX_BODY_BYTES }),
      ),
    });
    await fuzz(arb, 40, async ({ path, principal, body, declared }) => {
      const bytes = new TextEncoder().encode(body);
      const length = String(declared < 0 ? bytes.length : declared);
      const r: FuzzRequest = {
        method: "POST",
        path,
        principal,
        headers: { "content-length": length },
        body: { kind: "text", text: body },
      };
      // No header value a client cannot send: skip principals whose value fetch would also refuse.
      const before = await snapshot();
      const answer = await raw(path, principal.headers, length, body);
      statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
      checkAnswer(r, answer, patterns);
      await checkNoLeak(w, r, answer);
      if (!SUCCESS.has(answer.status)) assert.deepEqual(await snapshot(), before, describe(r, answer));
    });
  } finally {
    await w.close();
  }
});

// Raw HTTP/1.1, for what fetch will not send (a Content-Length other than the body's) --------------------------

async function raw(
  path: string,
  headers: Record<string, string>,
  contentLength: string,
  body: string,
): Promise<Answer> {
  const base = new URL(env.FUNCTIONS_URL);
  const head = [
    `POST ${base.pathname}/${path} HTTP/1.1`,
    `Host: ${base.host}`,
    "Content-Type: application/json",
    `Content-Length: ${contentLength}`,
    "Connection: close",
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    "",
    "",
  ].join("\r\n");
  const conn = await Deno.connect({ hostname: base.hostname, port: Number(base.port) });
  const timer = setTimeout(() => conn.close(), 10_000); // a hung answer fails the test below
  const received: number[] = [];
  try {
    // One write, so the server reads the whole request at once (bytes it never reads would make its
    // close a reset that can destroy the answer in flight).
    const request = new TextEncoder().encode(head + body);
    for (let written = 0; written < request.length;) written += await conn.write(request.subarray(written));
    // A body shorter than declared ends here (the server would wait for the rest). A complete one does not:
    // a client that half-closes after a whole request is taken as gone, and gets no answer.
    if (Number(contentLength) > new TextEncoder().encode(body).length) await conn.closeWrite();
    const buffer = new Uint8Array(16 * 1024);
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buffer);
      } catch (err) {
        if (err instanceof Deno.errors.ConnectionReset && received.length > 0) break; // answered, then reset
        throw err;
      }
      if (n === null) break;
      received.push(...buffer.subarray(0, n));
    }
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch { /* closed by the timer */ }
  }
  return parseHttpResponse(new Uint8Array(received));
}

function parseHttpResponse(bytes: Uint8Array): Answer {
  let split = -1;
  for (let i = 0; i + 3 < bytes.length; i++) {
    if (bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10) {
      split = i;
      break;
    }
  }
  const decoder = new TextDecoder();
  assert.ok(split > 0, `no HTTP answer: ${JSON.stringify(decoder.decode(bytes.subarray(0, 200)))}`);
  const [statusLine, ...lines] = decoder.decode(bytes.subarray(0, split)).split("\r\n");
  const headers = new Headers(
    lines.map((l) => [l.slice(0, l.indexOf(":")), l.slice(l.indexOf(":") + 1).trim()] as [string, string]),
  );
  let body = bytes.subarray(split + 4);
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const parts: number[] = [];
    while (true) {
      let end = 0;
      while (!(body[end] === 13 && body[end + 1] === 10)) end++;
      const size = parseInt(decoder.decode(body.subarray(0, end)), 16);
      if (!size) break;
      parts.push(...body.subarray(end + 2, end + 2 + size));
      body = body.subarray(end + 2 + size + 2);
    }
    body = new Uint8Array(parts);
  } else if (headers.has("content-length")) {
    // only this answer: what follows would answer the rest of a body that overran its Content-Length
    body = body.subarray(0, Number(headers.get("content-length")));
  }
  return { status: Number(statusLine.split(" ")[1]), headers, text: decoder.decode(body) };
}
