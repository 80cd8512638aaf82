// Installs what the local stack needs from Debian's packages, when missing.
// Everything else (Deno, the Supabase CLI, npm packages) comes from npm on first use.

export const DEBIAN_PACKAGES = [
  "postgresql-15",
  "postgresql-15-cron",
  "postgresql-15-pgtap",
  "postgresql-15-plpgsql-check",
  "libtap-parser-sourcehandler-pgtap-perl", // pg_prove
  "ffmpeg", // the reference renderer
  "fonts-dejavu-core", // the reference renderer's title cards
  "chromium", // the dashboard test drives a real headless browser
] as const;

async function output(cmd: string, args: string[]): Promise<{ ok: boolean; stdout: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "null" }).output();
    return { ok: out.success, stdout: new TextDecoder().decode(out.stdout) };
  } catch {
    return { ok: false, stdout: "" };
  }
}

async function isInstalled(pkg: string): Promise<boolean> {
  const { ok, stdout } = await output("dpkg-query", ["-W", "-f=${Status}", pkg]);
  return ok && stdout.includes("install ok installed");
}

export async function missingPackages(): Promise<string[]> {
  const missing: string[] = [];
  for (const pkg of DEBIAN_PACKAGES) if (!(await isInstalled(pkg))) missing.push(pkg);
  return missing;
}

/** Installs missing Debian packages (as root, or with passwordless sudo); otherwise says what to run. */
export async function ensureSystemPackages(log: (line: string) => void = console.error): Promise<void> {
  const missing = await missingPackages();
  if (missing.length === 0) return;
  const install = `apt-get update && apt-get install -y --no-install-recommends ${missing.join(" ")}`;
  const isRoot = Deno.uid() === 0;
  const hasSudo = !isRoot && (await output("sudo", ["-n", "true"])).ok;
  if (!isRoot && !hasSudo) {
    throw new Error(`missing Debian packages: ${missing.join(", ")}. Install them with: sudo ${install}`);
  }
  log(`installing Debian packages: ${missing.join(", ")}`);
  const shell = isRoot ? "bash" : "sudo";
  const args = isRoot ? ["-c", install] : ["bash", "-c", install];
  const status = await new Deno.Command(shell, {
    args,
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) throw new Error(`could not install: ${missing.join(", ")} (ran: ${install})`);
}
