// The operator's dashboard (dashboard/) in Debian's Chromium, driven by playwright-core, against the live stack
// with jobs in every state: what it shows matches get_queue_stats(), its actions change the database, a
// non-admin sees only the access-denied state, and a phone-width page does not scroll sideways. Screenshots
// at desktop and phone width go to test-artifacts/. One browser and one admin page go through the steps in
// order (what it shows, at phone width, what it does), since starting Chromium and loading the page cost
// seconds each here; the non-admin gets a page of their own.
import assert from "node:assert/strict";
import { type Browser, chromium, type Page } from "playwright-core";
import { buildDashboard } from "../dashboard/build.ts";
import type { DispatchBody, Job, Stats } from "../shared/mod.ts";
import { PROJECT_ROOT } from "../scripts/stack/stack.ts";
import { db, env, eventually, fnUrl, mintUser, resetData, setQueueCronActive, test } from "./harness.ts";
import { type FakeRenderService, fakeRenderService } from "./support/render_service.ts";

const ARTIFACTS = `${PROJECT_ROOT}/test-artifacts`;
const DASHBOARD = `${env.API_URL}/dashboard/`;
const DESKTOP = { width: 1280, height: 900 };
const PHONE = { width: 390, height: 844 };

// The page is built from source once per run, so the test never sees a stale dist/.
const built = buildDashboard();

/** Debian's Chromium, headless, closed at the end of the scope. */
async function launchChromium(): Promise<Browser & AsyncDisposable> {
  await built;
  const browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-quic",
      "--no-first-run",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  return Object.assign(browser, { [Symbol.asyncDispose]: () => browser.close() });
}

/** Opens the dashboard at `viewport` and signs in with `token` through the form. */
async function signedIn(browser: Browser, token: string, viewport = DESKTOP): Promise<Page> {
  const page = await browser.newPage({ viewport });
  page.setDefaultTimeout(15_000);
  await page.goto(DASHBOARD);
  await page.fill('textarea[name="token"]', token);
  await page.click('form[data-testid="sign-in"] button[type="submit"]');
  return page;
}

/** Resolves once the dashboard shows its data (the counters are filled). */
const loaded = (page: Page) => page.waitForSelector('[data-stat="queued"]');

const text = (page: Page, selector: string) => page.locator(selector).first().innerText();

/** The ids of the jobs listed, top to bottom (read at once: the list is redrawn on every refresh). */
const listedIds = (page: Page) =>
  page.evaluate<string[]>(
    `[...document.querySelectorAll("tbody tr[data-job-id]")].map((r) => r.dataset.jobId)`,
  );

/** Resolves once the listed jobs are exactly `ids` (the list is refreshed from the server). */
const listed = (page: Page, ids: string[]) =>
  eventually(`jobs listed: ${ids.join(", ")}`, async () => {
    const now = await listedIds(page);
    return now.length === ids.length && now.every((id, i) => id === ids[i]);
  });

type Fixture = {
  admin: string;
  user: string;
  service: FakeRenderService;
  ids: Record<"running" | "progressing" | "waitingManim" | "waitingRevideo" | "completed" | "failed", string>;
};

/**
 * Jobs in every state, as they get there: two doubts dispatched to a render service (one reporting
 * progress), a topic short and a daily video waiting with no endpoint for their renderers, and a
 * completed, a failed and a cancelled job as an operator would insert them.
 */
async function jobsInEveryState(service: FakeRenderService): Promise<Fixture> {
  await resetData();
  await setQueueCronActive(false);
  await db`delete from render_endpoints`;
  await db`insert into render_endpoints (renderer, url) values ('orchestrator', ${service.url})`;
  const [admin, user] = await Promise.all([mintUser({ admin: true }), mintUser()]);
  const enqueue = async (body: Record<string, unknown>) => {
    const res = await fetch(fnUrl("enqueue"), {
      method: "POST",
      headers: { authorization: `Bearer ${user.token}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 201);
    return ((await res.json()).job as Job).id;
  };
  const running = await enqueue({ job_type: "doubt", payload: { question: "What is Article 370?" } });
  const progressing = await enqueue({ job_type: "doubt", payload: { question: "What is a money bill?" } });
  const waitingManim = await enqueue({ job_type: "topic_short", payload: { topic: "Monsoon" } });
  const waitingRevideo = await enqueue({ job_type: "daily_ca", payload: { date: "2026-11-22" } });
  // Each enqueue kicks a worker pass: the doubts are dispatched to the service.
  const dispatch = await service.until(
    "the second doubt's dispatch",
    () => service.dispatches.find((d: DispatchBody) => d.job_id === progressing),
  );
  const progress = await fetch(dispatch.callback.url, {
    method: "POST",
    headers: { authorization: `Bearer ${dispatch.callback.token}`, "content-type": "application/json" },
    body: JSON.stringify({
      job_id: progressing,
      attempt: dispatch.attempt,
      type: "progress",
      stage: "composing_video",
      progress: 60,
    }),
  });
  assert.equal(progress.status, 200);
  await eventually("both doubts processing", async () => {
    const [{ n }] = await db`select count(*)::int as n from jobs where status = 'processing'`;
    return n === 2;
  });
  const [completed, failed] = await db`
    insert into jobs (job_type, status, payload, user_id, created_at, started_at, completed_at, result, error_message)
    values ('doubt', 'completed', '{"question": "What is GST?"}', ${user.userId}, now() - interval '9 min',
            now() - interval '8 min', now() - interval '6 min', '{"video_url": "https://cdn.example/gst.mp4"}', null),
           ('daily_ca', 'failed', '{"date": "2026-11-21"}', ${user.userId}, now() - interval '7 min',
            now() - interval '6 min', now() - interval '5 min', null, 'render crashed: ffmpeg exited with 1')
    returning id`;
  await db`insert into jobs (job_type, status, payload, user_id, created_at, completed_at, cancel_reason, error_message)
           values ('topic_short', 'cancelled', '{"topic": "Tides"}', ${user.userId}, now() - interval '4 min',
                   now() - interval '3 min', 'user', 'cancelled by the user')`;
  return {
    admin: admin.token,
    user: user.token,
    service,
    ids: { running, progressing, waitingManim, waitingRevideo, completed: completed.id, failed: failed.id },
  };
}

const sqlStats = async (): Promise<Stats> => (await db`select public.get_queue_stats() as s`)[0].s;

test("the dashboard in Chromium, against jobs in every state", async (t) => {
  await using service = await fakeRenderService();
  const fx = await jobsInEveryState(service);
  await using browser = await launchChromium();
  const page = await signedIn(browser, fx.admin);
  await loaded(page);
  await page.waitForSelector(`tr[data-job-id="${fx.ids.progressing}"]`);

  await t.step(
    "an admin sees the live queue: numbers as get_queue_stats() has them, every job state, alerts",
    async () => {
      assert.ok(!page.url().includes(fx.admin), "the token is never in the URL");
      const stored = await page.evaluate(() => Object.values(sessionStorage));
      assert.ok(stored.includes(fx.admin), "the token is kept in this tab's sessionStorage");

      const stats = await sqlStats();
      assert.equal(stats.queued, 2);
      assert.equal(stats.processing, 2);
      const counters = [
        "queued",
        "processing",
        "completed_today",
        "failed_today",
        "throughput_last_hour",
      ] as const;
      for (const key of counters) {
        assert.equal(
          await text(page, `[data-stat="${key}"]`),
          String(stats[key]),
          key,
        );
      }
      assert.equal(await text(page, '[data-stat="effective"]'), String(stats.capacity.effective));
      const byPriority = stats.by_priority as Record<string, { queued: number; processing: number }>;
      for (const p of ["high", "medium", "low"]) {
        assert.equal(
          await text(page, `tr[data-priority="${p}"] [data-priority-stat="queued"]`),
          String(byPriority[p].queued),
        );
        assert.equal(
          await text(page, `tr[data-priority="${p}"] [data-priority-stat="processing"]`),
          String(byPriority[p].processing),
        );
      }
      const byRenderer = stats.by_renderer as Record<string, { processing: number }>;
      for (const [name, r] of Object.entries(byRenderer)) {
        assert.equal(
          await text(page, `tr[data-renderer="${name}"] [data-renderer-stat="processing"]`),
          String(r.processing),
        );
      }

      // Every state, each with what matters for it.
      const row = (id: string) => `tr[data-job-id="${id}"]`;
      assert.equal(await page.locator("tbody tr[data-job-id]").count(), 7, "the seven newest jobs");
      for (const status of ["queued", "processing", "completed", "failed", "cancelled"]) {
        assert.ok(await page.locator(`tr[data-status="${status}"]`).count() > 0, `a ${status} job is listed`);
      }
      const waiting = await text(page, `${row(fx.ids.waitingManim)} [data-testid="wait"]`);
      assert.match(waiting, /#1/, "position of the medium job");
      assert.match(waiting, /no healthy render endpoint/, "and why it waits");
      assert.match(
        await text(page, `${row(fx.ids.waitingRevideo)} [data-testid="wait"]`),
        /#2[\s\S]*no healthy/,
      );
      assert.match(
        await text(page, `${row(fx.ids.progressing)} [data-testid="progress"]`),
        /composing video[\s\S]*60%/,
      );
      assert.match(await text(page, `${row(fx.ids.failed)} [data-testid="error"]`), /ffmpeg exited with 1/);
      assert.match(await text(page, row(fx.ids.completed)), /rendered in 2 min/);

      // Alerts: manim and revideo have jobs waiting and no endpoint at all.
      const alerts = await page.locator('[data-alert="no_healthy_endpoint"]').allInnerTexts();
      assert.equal(alerts.length, 2);
      assert.match(alerts.join(" "), /manim[\s\S]*revideo/);

      // Filters and search by id, answered by the server.
      const all = await listedIds(page);
      await page.selectOption('select[name="status"]', "failed");
      await listed(page, [fx.ids.failed]);
      await page.selectOption('select[name="status"]', "");
      await page.fill('input[name="search"]', fx.ids.running);
      await listed(page, [fx.ids.running]);
      await page.fill('input[name="search"]', fx.ids.waitingManim.slice(0, 6));
      await listed(page, [fx.ids.waitingManim]);
      await page.fill('input[name="search"]', "");
      await page.selectOption('select[name="renderer"]', "revideo");
      await page.selectOption('select[name="status"]', "processing");
      await page.waitForSelector('[data-testid="jobs-empty"]');
      assert.match(await text(page, '[data-testid="jobs-empty"]'), /No job matches/);
      await page.selectOption('select[name="renderer"]', "");
      await page.selectOption('select[name="status"]', "");
      await listed(page, all);

      await Deno.mkdir(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: `${ARTIFACTS}/dashboard-desktop.png`, fullPage: true });
    },
  );

  await t.step("at phone width (390 px) nothing scrolls sideways and the jobs table is a list", async () => {
    await page.setViewportSize(PHONE);
    await page.waitForSelector(".chart-box canvas");
    // (an expression, evaluated in the page: this file is checked without the DOM's types)
    const widths = await page.evaluate<{ scroll: number; client: number; head: string; row: string }>(`({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
      head: getComputedStyle(document.querySelector(".job-table thead")).display,
      row: getComputedStyle(document.querySelector(".job-table tbody tr")).display,
    })`);
    assert.equal(widths.client, PHONE.width);
    assert.equal(widths.scroll, widths.client, "no sideways scrolling");
    assert.deepEqual([widths.head, widths.row], ["none", "block"], "rows are stacked cards, no header row");
    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: `${ARTIFACTS}/dashboard-phone.png`, fullPage: true });
    await page.setViewportSize(DESKTOP);
  });

  await t.step(
    "retry, cancel and pause through the page change the database, each after a confirmation",
    async () => {
      const confirm = async (button: string, title: RegExp) => {
        await page.click(button);
        await page.waitForSelector("dialog.confirm[open]");
        assert.match(await text(page, "dialog.confirm h2"), title);
        await page.click('dialog.confirm button[type="submit"]');
        await page.locator("dialog.confirm[open]").waitFor({ state: "detached" });
      };
      const outcome = (pattern: RegExp) =>
        page.locator('[data-testid="outcome"]', { hasText: pattern }).waitFor();
      const statusOf = async (id: string) => (await db`select status from jobs where id = ${id}`)[0].status;

      // Retry the failed daily video: back in the queue (revideo has no endpoint, so it stays there).
      await page.waitForSelector(`tr[data-job-id="${fx.ids.failed}"] button`);
      await confirm(`tr[data-job-id="${fx.ids.failed}"] button`, /Retry job/);
      await outcome(/is queued, position \d/);
      assert.equal(await statusOf(fx.ids.failed), "queued");

      // Keep as is: nothing happens.
      await page.click(`tr[data-job-id="${fx.ids.waitingManim}"] button`);
      await page.click('dialog.confirm button[type="button"]');
      await page.locator("dialog.confirm[open]").waitFor({ state: "detached" });
      assert.equal(await statusOf(fx.ids.waitingManim), "queued", "dismissing the dialog changes nothing");

      // Cancel a queued job and a running one.
      await confirm(`tr[data-job-id="${fx.ids.waitingManim}"] button`, /Cancel job/);
      await outcome(/is cancelled/);
      assert.equal(await statusOf(fx.ids.waitingManim), "cancelled");
      await confirm(`tr[data-job-id="${fx.ids.running}"] button`, /Cancel job/);
      await outcome(/is cancelled/);
      assert.equal(await statusOf(fx.ids.running), "cancelled");
      await service.until(
        "the render service is told",
        () => service.cancels.find((c) => c.job_id === fx.ids.running),
      );

      // Pause and resume the queue; pause one renderer.
      await confirm('[data-testid="queue-pause-toggle"]', /Pause the queue/);
      await outcome(/The queue is paused/);
      assert.equal((await db`select paused from job_queue_config`)[0].paused, true);
      await page.waitForSelector('[data-alert="paused"]');
      await confirm('[data-testid="queue-pause-toggle"]', /Resume the queue/);
      await outcome(/running again/);
      assert.equal((await db`select paused from job_queue_config`)[0].paused, false);
      await confirm('tr[data-renderer="manim"] button', /Pause renderer manim/);
      await outcome(/Renderer manim is paused/);
      assert.equal((await db`select paused from renderers where name = 'manim'`)[0].paused, true);
      await page.waitForSelector('tr[data-renderer="manim"] .badge.paused');
    },
  );

  await t.step("a signed-in non-admin sees the access-denied state and no queue data", async () => {
    const page = await signedIn(browser, fx.user);
    await page.waitForSelector('[data-testid="access-denied"]');
    assert.match(await text(page, '[data-testid="access-denied"]'), /not a queue admin/);
    assert.equal(await page.locator("[data-stat]").count(), 0, "no counters");
    assert.equal(await page.locator("[data-job-id]").count(), 0, "no jobs");
    const body = await page.locator("body").innerText();
    for (const id of Object.values(fx.ids)) assert.ok(!body.includes(id.slice(0, 8)), "no job id anywhere");
    // Signing out leads back to the form, and the token is gone from the tab.
    await page.click('[data-testid="access-denied"] button');
    await page.waitForSelector('textarea[name="token"]');
    assert.deepEqual(await page.evaluate(() => Object.keys(sessionStorage)), []);
  });
});
