// Starts the render service as a process of its own (renderer/main.ts), the way the demo and operators run
// it, and reads its JSON log lines: resolves once it listens; `await using` stops it.
//   await using renderer = await spawnRenderer({ name: "render-1", clipSeconds: 1 });
//   insert into render_endpoints (renderer, url) values ('manim', renderer.endpointUrl);
import { fileURLToPath } from "node:url";
import type { FaultConfig } from "./faults.ts";
import type { LogEntry } from "./log.ts";

const MAIN = fileURLToPath(new URL("./main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

export interface SpawnOptions {
  /** `--name` */
  name: string;
  /** `--storage-dir`; omitted: the renderer makes a temp dir (see `storageDir` of the result). */
  storageDir?: string;
  /** `--clip-seconds` */
  clipSeconds?: number;
  /** `--max-concurrent` */
  maxConcurrent?: number;
  /** `--faults` */
  faults?: FaultConfig;
  /** `--heartbeat-seconds` */
  heartbeatSeconds?: number;
  /** `--min-render-seconds` */
  minRenderSeconds?: number;
  /** Any other flags of renderer/main.ts, e.g. `["--ttl-hours", "1"]`. */
  args?: string[];
  /** Added to this process's environment (flags win over the `RENDER_*` variables). */
  env?: Record<string, string>;
  /** Where its stderr goes (errors, a crash's stack trace); default: this process's stderr. */
  stderr?: "inherit" | "null";
  /** Appends every line the renderer logs to this file. */
  logFile?: string;
  /** Receives every entry the renderer logs after it listens. */
  onLog?: (entry: LogEntry) => void;
}

export interface SpawnedRenderer extends AsyncDisposable {
  name: string;
  /** Base URL of the server. */
  url: string;
  /** What to register in render_endpoints. */
  endpointUrl: string;
  storageDir: string;
  pid: number;
  /** The `renderer_listening` entry. */
  listening: LogEntry;
  /**
   * SIGTERM (running renders are reported failed, retryable), then waits for the exit and the last log
   * line. Repeated calls share the first one.
   */
  close(): Promise<Deno.CommandStatus>;
}

/** Starts `renderer/main.ts` with these flags; resolves with its address once it logs `renderer_listening`. */
export async function spawnRenderer(options: SpawnOptions): Promise<SpawnedRenderer> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, MAIN, ...flags(options)],
    env: options.env,
    stdin: "null",
    stdout: "piped",
    stderr: options.stderr ?? "inherit",
  }).spawn();
  const log = options.logFile ? await appendingLines(options.logFile) : undefined;
  const lines = readLines(child.stdout);
  let listening: LogEntry | undefined;
  for (let next = await lines.next(); !next.done; next = await lines.next()) {
    await log?.write(next.value);
    const entry = parseEntry(next.value);
    if (entry?.event === "renderer_listening") {
      listening = entry;
      break;
    }
  }
  if (!listening) {
    await log?.close();
    const status = await child.status;
    throw new Error(`renderer ${options.name} exited before listening (exit code ${status.code})`);
  }
  // Keep reading its log so the renderer never blocks on a full pipe.
  const drained = (async () => {
    for (let next = await lines.next(); !next.done; next = await lines.next()) {
      await log?.write(next.value);
      const entry = parseEntry(next.value);
      if (entry) options.onLog?.(entry);
    }
    await log?.close();
  })();

  let closing: Promise<Deno.CommandStatus> | undefined;
  const close = () =>
    closing ??= (async () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const status = await child.status;
      await drained;
      return status;
    })();
  return {
    name: options.name,
    url: String(listening.url),
    endpointUrl: String(listening.endpoint_url ?? `${listening.url}/render`),
    storageDir: String(listening.storage_dir ?? options.storageDir),
    pid: child.pid,
    listening,
    close,
    [Symbol.asyncDispose]: async () => {
      await close();
    },
  };
}

function flags(options: SpawnOptions): string[] {
  const given: [string, unknown][] = [
    ["--port", 0],
    ["--name", options.name],
    ["--storage-dir", options.storageDir],
    ["--clip-seconds", options.clipSeconds],
    ["--max-concurrent", options.maxConcurrent],
    ["--faults", options.faults && JSON.stringify(options.faults)],
    ["--heartbeat-seconds", options.heartbeatSeconds],
    ["--min-render-seconds", options.minRenderSeconds],
  ];
  return [
    ...given.flatMap(([flag, value]) => value === undefined ? [] : [flag, String(value)]),
    ...options.args ?? [],
  ];
}

/** The lines of a byte stream, without their line breaks. */
export async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string, void> {
  let partial = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    const lines = (partial + text).split("\n");
    partial = lines.pop()!;
    yield* lines;
  }
  if (partial) yield partial;
}

/** A log line as an entry; null for anything that is not a JSON object. */
function parseEntry(line: string): LogEntry | null {
  try {
    const entry = JSON.parse(line);
    return typeof entry === "object" && entry !== null && typeof entry.event === "string" ? entry : null;
  } catch {
    return null;
  }
}

async function appendingLines(path: string) {
  const file = await Deno.open(path, { create: true, write: true, append: true });
  const writer = file.writable.getWriter();
  const encoder = new TextEncoder();
  return {
    write: (line: string) => writer.write(encoder.encode(`${line}\n`)),
    close: () => writer.close(),
  };
}
