// What the page needs to know about its Supabase project: config.json beside index.html, written by whoever
// serves or hosts the dashboard (`deno task dashboard`, the local stack, or the operator for a static host).

export type DashboardConfig = {
  /** The project's URL (`https://<ref>.supabase.co`, or the local stack's API_URL). */
  supabaseUrl: string;
  /** A publishable (or legacy anon) key: it identifies the project, it grants nothing. */
  publishableKey: string;
  /**
   * "password": an admin signs in with email and password through Supabase Auth. "token": an admin pastes an
   * access token (the local stack has no Auth server: `deno task stack token <name> --admin` mints one).
   */
  signIn: "password" | "token";
  /** Whether Supabase Realtime serves the project (live updates on `queue:admin`); otherwise a 5 s refresh. */
  realtime: boolean;
};

export async function loadConfig(): Promise<DashboardConfig> {
  const res = await fetch("config.json", { cache: "no-store" });
  if (!res.ok) throw new Error(`config.json could not be read (HTTP ${res.status}).`);
  const config = await res.json() as Partial<DashboardConfig>;
  if (!config.supabaseUrl || !config.publishableKey) {
    throw new Error("config.json must name supabaseUrl and publishableKey.");
  }
  return {
    supabaseUrl: config.supabaseUrl,
    publishableKey: config.publishableKey,
    signIn: config.signIn === "token" ? "token" : "password",
    realtime: config.realtime ?? true,
  };
}
