// The admin reads the dashboard uses, over HTTP: the filtered job list, the 24-hour history and the alerts.
// The SQL rules are in supabase/tests/15_dashboard_views.sql with an injected clock; these check the routes:
// validation (400), who may call (401/403), and that each answer is what SQL computes.
import assert from "node:assert/strict";
import type { HourlyPoint, Job, PeakSchedule, QueueAlerts } from "../shared/mod.ts";
import { db, env, fnUrl, mintUser, resetData, test } from "./harness.ts";

// deno-lint-ignore no-explicit-any -- JSON bodies are checked field by field
type Answer = { status: number; body: any };

async function get(path: string, token?: string): Promise<Answer> {
  const res = await fetch(fnUrl(path), { headers: token ? { authorization: `Bearer ${token}` } : {} });
  return { status: res.status, body: await res.json() };
}

/** Inserts a job in any state as an operator would (derived fields by the triggers); returns its id. */
async function insertJob(
  job_type: string,
  status: "queued" | "completed" | "failed",
  opts: { user?: string; endedSecondsAgo?: number; createdSecondsAgo?: number } = {},
): Promise<string> {
  const ended = opts.endedSecondsAgo ?? 60;
  const created = opts.createdSecondsAgo ?? ended + 120;
  const [{ id }] = await db`
    insert into jobs (job_type, status, payload, user_id, created_at, started_at, completed_at, result, error_message)
    values (${job_type}, ${status}, '{}', ${opts.user ?? null},
            now() - make_interval(secs => ${created}),
            case when ${status} <> 'queued' then now() - make_interval(secs => ${ended + 60}) end,
            case when ${status} <> 'queued' then now() - make_interval(secs => ${ended}) end,
            case when ${status} = 'completed' then '{"video_url": "https://v.test/a.mp4"}'::jsonb end,
            case when ${status} = 'failed' then 'render crashed' end)
    returning id`;
  return id;
}

test("the admin job list filters by status, type, renderer and owner, newest first", async () => {
  await resetData();
  const [admin, ann, bob] = await Promise.all([mintUser({ admin: true }), mintUser(), mintUser()]);
  const doubtAnn = await insertJob("doubt", "queued", { user: ann.userId, createdSecondsAgo: 50 });
  const shortBob = await insertJob("topic_short", "queued", { user: bob.userId, createdSecondsAgo: 40 });
  const failedAnn = await insertJob("daily_ca", "failed", { user: ann.userId, createdSecondsAgo: 30 });
  const doneBob = await insertJob("doubt", "completed", { user: bob.userId, createdSecondsAgo: 20 });
  const list = async (query: string) => {
    const { status, body } = await get(`status?view=jobs${query}`, admin.token);
    assert.equal(status, 200, JSON.stringify(body));
    return (body.jobs as Job[]).map((j) => j.id);
  };
  assert.deepEqual(await list(""), [doneBob, failedAnn, shortBob, doubtAnn]);
  assert.deepEqual(await list("&status=queued"), [shortBob, doubtAnn]);
  assert.deepEqual(await list("&job_type=doubt"), [doneBob, doubtAnn]);
  assert.deepEqual(await list("&renderer=manim"), [shortBob], "topic shorts render on manim");
  assert.deepEqual(await list(`&user_id=${ann.userId}`), [failedAnn, doubtAnn]);
  assert.deepEqual(await list(`&user_id=${ann.userId}&status=failed&job_type=daily_ca&renderer=revideo`), [
    failedAnn,
  ]);
  assert.deepEqual(await list(`&user_id=${bob.userId}&status=failed`), []);
  assert.deepEqual(await list("&limit=1"), [doneBob]);
  const [failed] = (await get(`status?view=jobs&status=failed`, admin.token)).body.jobs as Job[];
  assert.equal(failed.error_message, "render crashed", "list entries are whole Job objects");
});

test("bad filters and views are 400 invalid_request, before or in SQL", async () => {
  await resetData();
  const admin = await mintUser({ admin: true });
  for (
    const query of [
      "view=jobs&status=done", // not a status
      "view=jobs&job_type=podcast", // well formed, unknown to SQL's job_types
      "view=jobs&renderer=blender", // well formed, unknown to SQL's renderers
      "view=jobs&renderer=Blender%20X", // malformed
      "view=jobs&user_id=nobody",
      "view=jobs&limit=0",
      "view=jobs&limit=201",
      "view=jobs&limit=ten",
      "view=jobs&colour=red", // unknown parameter
      "status=failed", // a filter without view=jobs
      "view=history&renderer=manim",
      "view=charts",
    ]
  ) {
    const { status, body } = await get(`status?${query}`, admin.token);
    assert.equal(status, 400, `${query}: ${JSON.stringify(body)}`);
    assert.equal(body.error.code, "invalid_request", query);
    assert.equal(typeof body.error.message, "string");
  }
  const unknown = await get("status?view=jobs&renderer=blender", admin.token);
  assert.match(
    unknown.body.error.message,
    /unknown renderer "blender".*manim/i,
    "SQL's message names the renderers",
  );
});

test("the history counts completed and failed jobs in their hours, 24 of them, oldest first", async () => {
  await resetData();
  const admin = await mintUser({ admin: true });
  const endedAgo = [3 * 3600, 3 * 3600 + 5, 5.5 * 3600, 30 * 3600]; // the last is outside the 24 hours
  await insertJob("doubt", "completed", { endedSecondsAgo: endedAgo[0] });
  await insertJob("doubt", "failed", { endedSecondsAgo: endedAgo[1] });
  await insertJob("daily_ca", "failed", { endedSecondsAgo: endedAgo[2] });
  await insertJob("daily_ca", "completed", { endedSecondsAgo: endedAgo[3] });
  await insertJob("doubt", "queued");
  const { status, body } = await get("status?view=history", admin.token);
  assert.equal(status, 200);
  const history = body.history as HourlyPoint[];
  assert.equal(history.length, 24);
  const starts = history.map((h) => Date.parse(h.hour));
  starts.slice(1).forEach((start, i) =>
    assert.equal(start - starts[i], 3_600_000, "oldest first, an hour apart")
  );
  assert.ok(Date.now() - starts[23] < 3_600_000 && Date.now() >= starts[23], "the last is the current hour");
  const hourOf = (secondsAgo: number) => {
    const at = Date.now() - secondsAgo * 1000;
    return history.find((h) => Date.parse(h.hour) <= at && at < Date.parse(h.hour) + 3_600_000);
  };
  // Counted where they ended: the first two may share an hour, hence sums rather than fixed cells.
  const totals = history.reduce((t, h) => ({ c: t.c + h.completed, f: t.f + h.failed }), { c: 0, f: 0 });
  assert.deepEqual(totals, { c: 1, f: 2 }, "three outcomes in the last 24 hours; the queued job is none");
  assert.ok(hourOf(endedAgo[0])!.completed >= 1);
  assert.ok(hourOf(endedAgo[1])!.failed >= 1);
  assert.equal(hourOf(endedAgo[2])!.failed, 1);
  const [{ sql }] = await db`select queue.get_queue_history() as sql`;
  assert.deepEqual(
    (sql as HourlyPoint[]).map((h) => [Date.parse(h.hour), h.completed, h.failed]),
    history.map((h) => [Date.parse(h.hour), h.completed, h.failed]),
    "the route answers what SQL computes",
  );
});

test("the alerts follow the thresholds in job_queue_config", async () => {
  await resetData();
  const admin = await mintUser({ admin: true });
  await db`update job_queue_config set alert_queue_depth = 2, alert_oldest_queued_seconds = 3600`;
  await insertJob("daily_ca", "queued", { createdSecondsAgo: 120 });
  const quiet = (await get("status?view=alerts", admin.token)).body.alerts as QueueAlerts;
  assert.deepEqual(quiet.thresholds, { queue_depth: 2, oldest_queued_seconds: 3600, failure_rate: 0.2 });
  assert.ok(!quiet.active.some((a) => a.kind === "queue_depth"), "one queued job, alert at two");
  await insertJob("daily_ca", "queued", { createdSecondsAgo: 60 });
  const { status, body } = await get("status?view=alerts", admin.token);
  assert.equal(status, 200);
  const depth = (body.alerts as QueueAlerts).active.find((a) => a.kind === "queue_depth");
  assert.deepEqual({ ...depth, message: undefined }, {
    kind: "queue_depth",
    value: 2,
    threshold: 2,
    message: undefined,
  });
  assert.match(depth!.message, /^2 jobs queued \(alert at 2\)/);
});

test("the peak view lists the windows behind the stats' capacity.peak", async () => {
  await resetData();
  const admin = await mintUser({ admin: true });
  await db`update job_queue_config set peak_hour_start = '06:00', peak_hour_end = '09:00'`;
  await db`insert into peak_windows (starts_at, ends_at, label) values ('20:00', '23:00', 'evening')`;
  const { status, body } = await get("status?view=peak", admin.token);
  assert.equal(status, 200);
  const peak = body.peak as PeakSchedule;
  assert.deepEqual(peak.windows, [
    { start: "06:00", end: "09:00", label: null },
    { start: "20:00", end: "23:00", label: "evening" },
  ]);
  const stats = (await get("status", admin.token)).body.stats;
  assert.equal(peak.peak, stats.capacity.peak, "the same answer as the stats");
  assert.equal(peak.multiplier, stats.capacity.multiplier);
  assert.ok(Date.parse(peak.next_boundary_at!) > Date.now());
});

test("only admins read the dashboard's views: a user gets 403, no credential 401", async () => {
  await resetData();
  const user = await mintUser();
  for (
    const view of [
      "",
      "?view=jobs",
      "?view=jobs&status=failed",
      "?view=history",
      "?view=alerts",
      "?view=peak",
    ]
  ) {
    const refused = await get(`status${view}`, user.token);
    assert.equal(refused.status, 403, view);
    assert.equal(refused.body.error.code, "forbidden", view);
    assert.deepEqual(Object.keys(refused.body), ["error"], "and no data");
    const anonymous = await get(`status${view}`);
    assert.equal(anonymous.status, 401, view);
  }
  // The secret key is an admin too (API.md "Callers").
  const res = await fetch(fnUrl("status?view=history"), { headers: { apikey: env.SECRET_KEY } });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).history.length, 24);
});
