// Deploy check: each Edge Function exactly as the pinned Supabase CLI (SUPABASE_CLI, scripts/stack/stack.ts)
// uploads it, type-checked and bundled on its own.
//
// `supabase functions deploy --use-api` (no Docker) walks each entry point's module graph from the project
// root, follows imports outside supabase/functions (our top-level shared/; supabase/cli PR #5755) and sends
// every file it reaches, with the import map and config.toml's settings, to the Management API, which
// bundles them. Here the real CLI sends them to a stand-in Management API on localhost (named by a CLI
// profile, with a dummy access token), which records the upload. The test then writes exactly the uploaded
// files into an empty directory and runs `deno bundle --check` on each entry point there: an import
// the CLI did not upload (one reaching outside the project, say) fails it, and so does one into tests/ or
// scripts/. config.toml must name every function folder.
import assert from "node:assert/strict";
import { parse as parseToml } from "smol-toml";
import { PROJECT_ROOT, SUPABASE_CLI } from "../scripts/stack/stack.ts";

const FUNCTIONS_DIR = `${PROJECT_ROOT}/supabase/functions`;
const PROJECT_REF = "deploycheckprojectrf"; // any 20 lowercase letters

/** The folders the CLI deploys: supabase/functions/<name>/index.ts. */
function functionFolders(): string[] {
  return [...Deno.readDirSync(FUNCTIONS_DIR)]
    .filter((e) => e.isDirectory && exists(`${FUNCTIONS_DIR}/${e.name}/index.ts`))
    .map((e) => e.name).sort();
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

type FunctionConfig = { verify_jwt?: boolean; import_map?: string; entrypoint?: string };
const config = parseToml(Deno.readTextFileSync(`${PROJECT_ROOT}/supabase/config.toml`)) as {
  functions?: Record<string, FunctionConfig>;
};

Deno.test("supabase/config.toml names every function, with its import map; the README deploys with the pinned CLI", () => {
  const configured = config.functions ?? {};
  assert.deepEqual(Object.keys(configured).sort(), functionFolders());
  for (const [name, settings] of Object.entries(configured)) {
    assert.equal(settings.import_map, "../deno.json", `${name}: the root deno.json pins the npm packages`);
    assert.equal(typeof settings.verify_jwt, "boolean", `${name}: verify_jwt stated`);
  }
  const readme = Deno.readTextFileSync(`${PROJECT_ROOT}/README.md`);
  assert.ok(readme.includes(`npx ${SUPABASE_CLI} functions deploy`), `README deploys with ${SUPABASE_CLI}`);
});

type Upload = { metadata: Record<string, unknown>; files: Map<string, Uint8Array> };

/** A stand-in for the Management API's function deploy endpoints that records what the CLI uploads. */
function fakeManagementApi() {
  const uploads = new Map<string, Upload>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const url = new URL(req.url);
    if (req.method === "POST" && url.pathname === `/v1/projects/${PROJECT_REF}/functions/deploy`) {
      const slug = url.searchParams.get("slug")!;
      const form = await req.formData();
      const files = new Map<string, Uint8Array>();
      for (const part of form.getAll("file")) {
        if (part instanceof File) files.set(part.name, new Uint8Array(await part.arrayBuffer()));
      }
      uploads.set(slug, { metadata: JSON.parse(String(form.get("metadata"))), files });
      return Response.json({ id: slug, slug, name: slug, status: "ACTIVE", version: 1 }, { status: 201 });
    }
    await req.body?.cancel();
    return Response.json([]); // the bulk update after bundle-only deploys, and the project lookup
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, uploads, close: () => server.shutdown() };
}

async function run(cmd: string, args: string[], opts: { cwd: string; env?: Record<string, string> }) {
  const out = await new Deno.Command(cmd, { args, ...opts, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { success: out.success, text };
}

Deno.test({
  name:
    "each function as the pinned CLI uploads it: its folder, shared/ and deno.json only; checks and bundles alone",
  sanitizeResources: false,
  fn: async () => {
    const api = fakeManagementApi();
    const home = await Deno.makeTempDir({ prefix: "deploy-check-home-" });
    const profile = `${home}/profile.yaml`;
    await Deno.writeTextFile(
      profile,
      `name: deploy-check\napi_url: ${api.url}\ndashboard_url: ${api.url}\nproject_host: localhost\n`,
    );
    let deploy;
    try {
      deploy = await run("npx", [
        "-y",
        SUPABASE_CLI,
        "functions",
        "deploy",
        "--use-api",
        `--remote=${PROJECT_REF}`,
        "--profile",
        profile,
        "--workdir",
        PROJECT_ROOT,
        "--yes",
      ], {
        cwd: PROJECT_ROOT,
        env: {
          SUPABASE_HOME: home,
          SUPABASE_ACCESS_TOKEN: `sbp_${"0".repeat(40)}`,
          DO_NOT_TRACK: "1",
          SUPABASE_TELEMETRY_DISABLED: "1",
        },
      });
    } finally {
      await api.close();
    }
    assert.ok(deploy.success, deploy.text);

    const names = functionFolders();
    assert.deepEqual([...api.uploads.keys()].sort(), names);
    const bundleDir = await Deno.makeTempDir({ prefix: "deploy-check-upload-" });
    for (const name of names) {
      const { metadata, files } = api.uploads.get(name)!;
      const entry = `supabase/functions/${name}/index.ts`;
      assert.equal(metadata.entrypoint_path, entry);
      assert.equal(metadata.import_map_path, "deno.json");
      assert.equal(metadata.verify_jwt, config.functions?.[name]?.verify_jwt);
      const paths = [...files.keys()];
      assert.ok(paths.includes(entry) && paths.includes("deno.json"), `${name}: ${paths.join(", ")}`);
      assert.ok(paths.includes("shared/mod.ts"), `${name} uploads the top-level shared/`);
      const outside = paths.filter((p) =>
        p !== "deno.json" && !p.startsWith(`supabase/functions/${name}/`) && !p.startsWith("shared/")
      );
      assert.deepEqual(outside, [], `${name} uploads nothing but its folder, shared/ and deno.json`);
      // One directory per function holding exactly its upload: what the platform bundles.
      for (const [path, bytes] of files) {
        const target = `${bundleDir}/${name}/${path}`;
        await Deno.mkdir(target.slice(0, target.lastIndexOf("/")), { recursive: true });
        await Deno.writeFile(target, bytes);
      }
    }

    // `deno bundle --check`: type-checks the entry point's graph, then bundles it (neither, on a type error).
    await Promise.all(names.map(async (name) => {
      const dir = `${bundleDir}/${name}`;
      const entry = `supabase/functions/${name}/index.ts`;
      const bundle = await run(Deno.execPath(), [
        "bundle",
        "--check",
        "--config",
        "deno.json",
        "--platform",
        "deno",
        "--output",
        "bundle.js",
        entry,
      ], { cwd: dir });
      assert.ok(bundle.success, `deno bundle --check ${name} on its upload alone:\n${bundle.text}`);
      const code = await Deno.readTextFile(`${dir}/bundle.js`);
      assert.ok(!/\bfrom\s*["']\.{1,2}\//.test(code), `${name}: every relative import is inside the bundle`);
      assert.ok(code.includes("Deno.serve("), `${name}: the bundle serves`);
    }));
    await Deno.remove(bundleDir, { recursive: true });
    await Deno.remove(home, { recursive: true });
  },
});
