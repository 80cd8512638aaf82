// CLI for the reference render service. Flags win over env vars; prints one JSON line when listening.
//   deno run -A renderer/main.ts --port 0 --name manim-1 --storage-dir .stack/renders/manim-1
import { parseArgs } from "node:util";
import { parseFaultConfig } from "./faults.ts";
import { startRenderer } from "./server.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    port: { type: "string" },
    hostname: { type: "string" },
    name: { type: "string" },
    "storage-dir": { type: "string" },
    "public-url": { type: "string" },
    "temp-dir": { type: "string" },
    "clip-seconds": { type: "string" },
    "ttl-hours": { type: "string" },
    "max-concurrent": { type: "string" },
    "cleanup-interval-seconds": { type: "string" },
    faults: { type: "string" },
    "heartbeat-seconds": { type: "string" },
    "min-render-seconds": { type: "string" },
    "font-file": { type: "string" },
  },
});

const env = (key: string) => Deno.env.get(key) || undefined;
const number = (value: string | undefined, label: string): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${label} must be a non-negative number, got "${value}"`);
  return n;
};

const name = flags.name ?? env("RENDER_NAME") ?? "renderer";
const storageDir = flags["storage-dir"] ?? env("RENDER_STORAGE_DIR") ??
  await Deno.makeTempDir({ prefix: `renderer-${name}-storage-` });
const cleanupSeconds = number(
  flags["cleanup-interval-seconds"] ?? env("RENDER_CLEANUP_INTERVAL_SECONDS"),
  "cleanup interval",
);

const renderer = await startRenderer({
  name,
  storageDir,
  hostname: flags.hostname ?? env("RENDER_HOSTNAME"),
  port: number(flags.port ?? env("RENDER_PORT"), "port") ?? 0,
  publicUrl: flags["public-url"] ?? env("RENDER_PUBLIC_URL"),
  tempRoot: flags["temp-dir"] ?? env("RENDER_TEMP_DIR"),
  clipSeconds: number(flags["clip-seconds"] ?? env("RENDER_CLIP_SECONDS"), "clip seconds"),
  ttlHours: number(flags["ttl-hours"] ?? env("STORAGE_TTL_HOURS"), "ttl hours"),
  maxConcurrentRenders: number(flags["max-concurrent"] ?? env("RENDER_MAX_CONCURRENT"), "max concurrent"),
  cleanupIntervalMs: cleanupSeconds === undefined ? undefined : cleanupSeconds * 1000,
  faults: parseFaultConfig(flags.faults ?? env("RENDER_FAULTS")),
  heartbeatSeconds: number(
    flags["heartbeat-seconds"] ?? env("RENDER_HEARTBEAT_SECONDS"),
    "heartbeat seconds",
  ),
  minRenderSeconds: number(
    flags["min-render-seconds"] ?? env("RENDER_MIN_RENDER_SECONDS"),
    "min render seconds",
  ),
  fontFile: flags["font-file"] ?? env("RENDER_FONT_FILE"),
});

for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await renderer.close();
    Deno.exit(0);
  });
}
