// The three media steps of a render, all real ffmpeg: title card PNG, MP4 composition, probe.
import { join } from "node:path";
import { type CardText, layoutBody } from "./card_text.ts";
import { RetryableRenderError } from "./errors.ts";

export const VIDEO_WIDTH = 1080;
export const VIDEO_HEIGHT = 1920;

const BACKGROUND = "0x1e293b";
const ACCENT = "0xf59e0b";

export interface MediaTools {
  ffmpeg: string;
  ffprobe: string;
  /** A TrueType font for drawtext; null renders a card without text (still a valid video). */
  fontFile: string | null;
}

const FONT_CANDIDATES = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf", // Debian/Ubuntu: fonts-dejavu-core
  "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf", // Fedora, Alpine
  "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf", // Arch
  "/usr/share/fonts/truetype/liberation/LiberationSans-Bold.ttf",
];

/** Finds a bold sans font: well-known paths first, then fontconfig; null when the machine has none. */
export function findFontFile(): string | null {
  for (const path of FONT_CANDIDATES) {
    try {
      if (Deno.statSync(path).isFile) return path;
    } catch { /* not here */ }
  }
  try {
    const out = new Deno.Command("fc-match", { args: ["-f", "%{file}", "sans:bold"], stderr: "null" })
      .outputSync();
    const path = new TextDecoder().decode(out.stdout).trim();
    if (out.success && /\.(ttf|otf)$/i.test(path)) return path;
  } catch { /* no fontconfig */ }
  return null;
}

/** Runs one ffmpeg/ffprobe process; killed when `signal` aborts. Failures are retryable (environmental). */
async function run(command: string, args: string[], cwd: string, signal: AbortSignal): Promise<string> {
  signal.throwIfAborted();
  let output: Deno.CommandOutput;
  try {
    output = await new Deno.Command(command, {
      args,
      cwd,
      signal,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (err) {
    if (signal.aborted) throw signal.reason;
    throw new RetryableRenderError(`cannot run ${command}: ${err instanceof Error ? err.message : err}`);
  }
  if (signal.aborted) throw signal.reason;
  if (!output.success) {
    const stderr = new TextDecoder().decode(output.stderr).trim().split("\n").slice(-3).join(" | ");
    throw new RetryableRenderError(`${command} exited with ${output.code}: ${stderr}`);
  }
  return new TextDecoder().decode(output.stdout);
}

const ffmpegArgs = (args: string[]) => ["-nostdin", "-hide_banner", "-loglevel", "error", "-y", ...args];

/**
 * Step 1: a 1080×1920 PNG card with the job's text. Text goes through files (`textfile`,
 * `expansion=none`) and the font through a link in the work dir, so no user text or path ever
 * needs filter-graph escaping.
 */
export async function renderTitleCard(
  tools: MediaTools,
  workDir: string,
  text: CardText,
  signal: AbortSignal,
): Promise<string> {
  const filters = [`drawbox=x=0:y=0:w=iw:h=24:color=${ACCENT}:t=fill`];
  if (tools.fontFile) {
    const layout = layoutBody(text.body);
    await Deno.symlink(tools.fontFile, join(workDir, "font.ttf"));
    await Deno.writeTextFile(join(workDir, "label.txt"), text.label);
    await Deno.writeTextFile(join(workDir, "body.txt"), layout.lines.join("\n") || " ");
    filters.push(
      `drawtext=fontfile=font.ttf:textfile=label.txt:expansion=none:fontsize=44:fontcolor=${ACCENT}:x=80:y=200`,
      `drawtext=fontfile=font.ttf:textfile=body.txt:expansion=none:fontsize=${layout.fontSize}` +
        `:line_spacing=${layout.lineSpacing}:fontcolor=white:x=80:y=340`,
    );
  }
  await run(
    tools.ffmpeg,
    [
      ...ffmpegArgs(["-f", "lavfi", "-i", `color=c=${BACKGROUND}:s=${VIDEO_WIDTH}x${VIDEO_HEIGHT}`]),
      ...["-frames:v", "1", "-vf", filters.join(","), "card.png"],
    ],
    workDir,
    signal,
  );
  return join(workDir, "card.png");
}

/**
 * Step 2: the card as H.264 video with a generated audio bed (two soft tones over pink noise),
 * faded in and out. `ultrafast` + a still-image tune + low fps keep a 5 s clip well under a second.
 */
export async function composeVideo(
  tools: MediaTools,
  workDir: string,
  cardPath: string,
  durationSeconds: number,
  fps: number,
  signal: AbortSignal,
): Promise<string> {
  const d = durationSeconds;
  const fade = Math.min(0.5, d / 4);
  const fadeOutAt = (d - fade).toFixed(3);
  const graph = [
    `[0:v]fade=t=in:st=0:d=${fade},fade=t=out:st=${fadeOutAt}:d=${fade},format=yuv420p[v]`,
    `[1:a][2:a][3:a]amix=inputs=3,volume=0.6,afade=t=in:st=0:d=${fade},afade=t=out:st=${fadeOutAt}:d=${fade}[a]`,
  ].join(";");
  await run(
    tools.ffmpeg,
    ffmpegArgs([
      ...["-loop", "1", "-framerate", String(fps), "-t", String(d), "-i", cardPath],
      ...["-f", "lavfi", "-t", String(d), "-i", "sine=frequency=220:sample_rate=44100"],
      ...["-f", "lavfi", "-t", String(d), "-i", "sine=frequency=330:sample_rate=44100"],
      ...["-f", "lavfi", "-t", String(d), "-i", "anoisesrc=color=pink:amplitude=0.03:sample_rate=44100"],
      ...["-filter_complex", graph, "-map", "[v]", "-map", "[a]"],
      ...["-c:v", "libx264", "-preset", "ultrafast", "-tune", "stillimage", "-r", String(fps)],
      ...["-c:a", "aac", "-b:a", "96k", "-t", String(d), "-movflags", "+faststart", "video.mp4"],
    ]),
    workDir,
    signal,
  );
  return join(workDir, "video.mp4");
}

export interface VideoProbe {
  durationSeconds: number;
  width: number;
  height: number;
}

/** Step 3 (check): what ffprobe says the file really is, so the result reports facts, not intentions. */
export async function probeVideo(tools: MediaTools, path: string, signal: AbortSignal): Promise<VideoProbe> {
  const json = await run(
    tools.ffprobe,
    [
      ...["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height:format=duration"],
      ...["-of", "json", path],
    ],
    ".",
    signal,
  );
  const probe = JSON.parse(json);
  return {
    durationSeconds: Number(probe.format?.duration),
    width: Number(probe.streams?.[0]?.width),
    height: Number(probe.streams?.[0]?.height),
  };
}
