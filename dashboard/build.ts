// Builds the dashboard into dashboard/dist/: index.html, main.js and main.css. `deno bundle` (esbuild, from npm)
// bundles src/main.tsx with Preact, uPlot, supabase-js and the typed client (client/) for the browser.
// dist/ is git-ignored; `deno task dashboard` builds it, and so do the local stack and the browser test.

export const DASHBOARD_DIR = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
export const DIST_DIR = `${DASHBOARD_DIR}/dist`;
const PROJECT_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Builds into a fresh directory, then swaps it in for dist/, so a reader never sees half a build. */
export async function buildDashboard(): Promise<void> {
  const staging = `${DIST_DIR}.building-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "bundle",
        "--quiet",
        "--config",
        `${PROJECT_ROOT}/deno.json`,
        "--platform",
        "browser",
        "--minify",
        "--outdir",
        staging,
        `${DASHBOARD_DIR}/src/main.tsx`,
      ],
      cwd: PROJECT_ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!out.success) {
      const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
      throw new Error(`deno bundle failed:\n${text}`);
    }
    await Deno.copyFile(`${DASHBOARD_DIR}/index.html`, `${staging}/index.html`);
    await Deno.remove(DIST_DIR, { recursive: true }).catch(() => {});
    await Deno.rename(staging, DIST_DIR);
  } finally {
    await Deno.remove(staging, { recursive: true }).catch(() => {});
  }
}

/** Whether dist/ holds a build. */
export async function isBuilt(): Promise<boolean> {
  try {
    await Deno.stat(`${DIST_DIR}/main.js`);
    return true;
  } catch {
    return false;
  }
}
