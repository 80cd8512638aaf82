// Local video storage with a time to live: `<YYYY-MM-DD>_<hash>.mp4` plus a `<name>.json` sidecar.
import { join } from "node:path";

export interface StoredVideo {
  filename: string;
  job_id: string;
  attempt: number;
  file_size: number;
  created_at: string;
  expires_at: string;
}

const VIDEO_NAME = /^\d{4}-\d{2}-\d{2}_[0-9a-f]{16}\.mp4$/;
// Leftovers of a crash mid-save (a .part, or a video without its sidecar) older than this are removed.
const ORPHAN_GRACE_MS = 60 * 60 * 1000;

/** True only for names this storage creates: the one check that keeps `..` and `/` out of paths. */
export function isVideoFilename(name: string): boolean {
  return VIDEO_NAME.test(name);
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function removeIfPresent(path: string): Promise<void> {
  await Deno.remove(path).catch((err) => {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  });
}

export class VideoStorage {
  constructor(
    readonly dir: string,
    readonly ttlHours: number,
    private readonly now: () => Date = () => new Date(),
  ) {}

  /** Copies a finished video in (write to `.part`, then rename, so readers never see half a file). */
  async save(sourcePath: string, owner: { job_id: string; attempt: number }): Promise<StoredVideo> {
    await Deno.mkdir(this.dir, { recursive: true });
    const created = this.now();
    const hash = (await sha256Hex(`${owner.job_id}:${owner.attempt}:${crypto.randomUUID()}`)).slice(0, 16);
    const filename = `${created.toISOString().slice(0, 10)}_${hash}.mp4`;
    const target = join(this.dir, filename);
    await Deno.copyFile(sourcePath, `${target}.part`);
    await Deno.rename(`${target}.part`, target);
    const video: StoredVideo = {
      filename,
      job_id: owner.job_id,
      attempt: owner.attempt,
      file_size: (await Deno.stat(target)).size,
      created_at: created.toISOString(),
      expires_at: new Date(created.getTime() + this.ttlHours * 3600_000).toISOString(),
    };
    await Deno.writeTextFile(`${target}.json.part`, JSON.stringify(video, null, 2));
    await Deno.rename(`${target}.json.part`, `${target}.json`);
    return video;
  }

  pathOf(filename: string): string {
    if (!isVideoFilename(filename)) throw new Error(`not a stored video name: ${filename}`);
    return join(this.dir, filename);
  }

  /** Removes a video and its sidecar (no error if already gone). */
  async remove(filename: string): Promise<void> {
    const path = this.pathOf(filename);
    await removeIfPresent(path);
    await removeIfPresent(`${path}.json`);
  }

  /** The sidecar of a video that exists and has not expired; null otherwise (bad name, missing, expired). */
  async lookup(filename: string, at: Date = this.now()): Promise<StoredVideo | null> {
    if (!isVideoFilename(filename)) return null;
    try {
      const meta: StoredVideo = JSON.parse(await Deno.readTextFile(`${this.pathOf(filename)}.json`));
      if (Date.parse(meta.expires_at) <= at.getTime()) return null;
      await Deno.stat(this.pathOf(filename));
      return meta;
    } catch {
      return null;
    }
  }

  /** Deletes expired videos (and stale crash leftovers); returns the removed video names. */
  async removeExpired(at: Date = this.now()): Promise<string[]> {
    const removed: string[] = [];
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(this.dir));
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return removed;
      throw err;
    }
    const names = new Set(entries.map((e) => e.name));
    for (const { name, isFile } of entries) {
      if (!isFile) continue;
      const path = join(this.dir, name);
      if (name.endsWith(".mp4.json") && isVideoFilename(name.slice(0, -5))) {
        const meta = await Deno.readTextFile(path).then(JSON.parse).catch(() => null);
        if (!meta || !(Date.parse(meta.expires_at) > at.getTime())) {
          await this.remove(name.slice(0, -5));
          removed.push(name.slice(0, -5));
        }
      } else if (name.endsWith(".part") || (isVideoFilename(name) && !names.has(`${name}.json`))) {
        const { mtime } = await Deno.stat(path).catch(() => ({ mtime: null }));
        if (mtime && at.getTime() - mtime.getTime() > ORPHAN_GRACE_MS) {
          await removeIfPresent(path);
          if (isVideoFilename(name)) removed.push(name);
        }
      }
    }
    return removed;
  }
}
