// Serves the built dashboard (dist/) and its config.json, for `deno task dashboard` and the local stack's
// /dashboard/. Builds first when dist/ is missing (once per process).
import { buildDashboard, DIST_DIR, isBuilt } from "./build.ts";
import type { DashboardConfig } from "./src/config.ts";

const TYPES: Record<string, string> = {
  html: "text/html; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
  json: "application/json",
  map: "application/json",
};

let built: Promise<void> | undefined;

/** The answer for `path` below the dashboard's root ("" or "index.html", "main.js", "config.json", …). */
export async function dashboardFile(path: string, config: DashboardConfig): Promise<Response> {
  if (path === "config.json") return Response.json(config, { headers: { "cache-control": "no-store" } });
  const name = path === "" ? "index.html" : path;
  const type = TYPES[name.split(".").pop() ?? ""];
  if (!/^[a-z0-9_.-]+$/i.test(name) || name.startsWith(".") || !type) return notFound();
  built ??= isBuilt().then((ok) => ok ? undefined : buildDashboard())
    .catch((err) => {
      built = undefined;
      throw err;
    }); // a failed build is tried again on the next request
  await built;
  try {
    const body = await Deno.readFile(`${DIST_DIR}/${name}`);
    return new Response(body, { headers: { "content-type": type, "cache-control": "no-cache" } });
  } catch {
    return notFound();
  }
}

const notFound = () => new Response("Not found", { status: 404, headers: { "content-type": "text/plain" } });
