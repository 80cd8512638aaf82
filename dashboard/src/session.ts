// Signing in: an admin's Supabase Auth session. With Auth (a hosted project), email and password through
// supabase-js, the session kept in sessionStorage; without it (the local stack), an access token pasted into
// the form, kept in sessionStorage. Never a token in the URL: nothing here reads or writes location.
import { createClient, type SupabaseClient } from "@supabase/supabase-js";
import { createQueueClient, type QueueClient } from "../../client/mod.ts";
import type { DashboardConfig } from "./config.ts";

export type Session = {
  queue: QueueClient;
  supabase: SupabaseClient;
  /** Who is signed in, for the header (email, else user id). */
  who: string;
  signOut(): Promise<void>;
};

const TOKEN_KEY = "video-queue-dashboard:access-token";
const AUTH_KEY = "video-queue-dashboard:auth";

/** The session this tab already has, if any. */
export async function restoreSession(config: DashboardConfig): Promise<Session | null> {
  if (config.signIn === "token") {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? tokenSession(config, token) : null;
  }
  const supabase = authClient(config);
  const { data } = await supabase.auth.getSession();
  return data.session ? authSession(supabase, data.session.user.email ?? data.session.user.id) : null;
}

/** Signs in with an access token (local stack); throws when it is not a JWT at all. */
export function signInWithToken(config: DashboardConfig, token: string): Session {
  const trimmed = token.trim().replace(/^Bearer\s+/i, "");
  if (!claimsOf(trimmed)) {
    throw new Error("That is not an access token (a JWT of three dot-separated parts).");
  }
  sessionStorage.setItem(TOKEN_KEY, trimmed);
  return tokenSession(config, trimmed);
}

/** Signs in with email and password through Supabase Auth; throws Auth's message when refused. */
export async function signInWithPassword(config: DashboardConfig, email: string, password: string) {
  const supabase = authClient(config);
  const { data, error } = await supabase.auth.signInWithPassword({ email, password });
  if (error) throw new Error(error.message);
  return authSession(supabase, data.user.email ?? data.user.id);
}

function tokenSession(config: DashboardConfig, token: string): Session {
  const supabase = createClient(config.supabaseUrl, config.publishableKey, {
    accessToken: () => Promise.resolve(token),
  });
  const claims = claimsOf(token);
  return {
    queue: createQueueClient(supabase),
    supabase,
    who: String(claims?.email ?? claims?.sub ?? "token"),
    signOut() {
      sessionStorage.removeItem(TOKEN_KEY);
      return supabase.removeAllChannels().then(() => {});
    },
  };
}

function authClient(config: DashboardConfig): SupabaseClient {
  return createClient(config.supabaseUrl, config.publishableKey, {
    auth: { storage: sessionStorage, storageKey: AUTH_KEY, persistSession: true, autoRefreshToken: true },
  });
}

function authSession(supabase: SupabaseClient, who: string): Session {
  return {
    queue: createQueueClient(supabase),
    supabase,
    who,
    async signOut() {
      await supabase.removeAllChannels();
      await supabase.auth.signOut();
    },
  };
}

/** A JWT's payload (not verified: the functions verify it; this only names the user). */
function claimsOf(token: string): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json);
    return typeof claims === "object" && claims !== null ? claims : null;
  } catch {
    return null;
  }
}
