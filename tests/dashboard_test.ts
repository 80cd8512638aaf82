// The admin dashboard (dashboard/index.html) in a real headless Chromium, against the live stack.
import assert from "node:assert/strict";
import { db, env, mintUser, resetData, test } from "./harness.ts";

async function renderedDom(url: string): Promise<string> {
  const profile = await Deno.makeTempDir({ prefix: "dashboard-test-chromium-" });
  try {
    const out = await new Deno.Command("chromium", {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        `--user-data-dir=${profile}`,
        // virtual time runs the page's scripts and waits for its fetches before the DOM is dumped
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
      ],
      stdout: "piped",
      stderr: "null",
    }).output();
    assert.ok(out.success, "chromium exited with an error");
    return new TextDecoder().decode(out.stdout);
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

test("the dashboard shows the queue's live stats and newest jobs to an admin", async () => {
  await resetData();
  // No render endpoint is registered, so these stay queued: two doubts (high) and a daily CA (low).
  await db`insert into jobs (job_type, priority, status, payload) values
    ('doubt', 'high', 'queued', '{"question": "What is Article 370?"}'),
    ('doubt', 'high', 'queued', '{"question": "What is a money bill?"}'),
    ('daily_ca', 'low', 'queued', '{"date": "2026-11-22"}')`;
  const admin = await mintUser({ admin: true });
  const dom = await renderedDom(
    `${env.API_URL}/dashboard/#url=${encodeURIComponent(env.FUNCTIONS_URL)}&token=${admin.token}`,
  );
  assert.match(dom, /<body[^>]*data-loaded="true"/, "the page loaded its data");
  assert.match(dom, /data-stat="queued">3</);
  assert.match(dom, /<tr><td>high<\/td><td>2<\/td><td>0<\/td><\/tr>/);
  assert.match(dom, /<tr><td>low<\/td><td>1<\/td><td>0<\/td><\/tr>/);
  assert.equal(dom.match(/<td class="status-queued">queued<\/td>/g)?.length, 3, "three newest jobs listed");
  assert.equal(dom.match(/<td>no endpoint( · ~\d+ s)?<\/td>/g)?.length, 3, "each says why it waits");
});

test("the dashboard refuses a non-admin and says why", async () => {
  await resetData();
  const user = await mintUser();
  const dom = await renderedDom(
    `${env.API_URL}/dashboard/#url=${encodeURIComponent(env.FUNCTIONS_URL)}&token=${user.token}`,
  );
  assert.doesNotMatch(dom, /data-loaded="true"/);
  assert.match(dom, /<div id="error" role="alert">[^<]+<\/div>/);
  assert.match(dom, /data-stat="queued">—</);
});
