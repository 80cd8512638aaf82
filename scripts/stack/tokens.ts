// LOCAL-ONLY: mints user access tokens the way Supabase Auth issues them, signed with the stack's key.
import { importJWK, SignJWT } from "jose";
import type postgres from "postgres";
import type { StackEnv } from "./stack.ts";

export interface LocalUser {
  userId: string;
  token: string;
}

/** `iss` of this stack's user tokens: `${SUPABASE_URL}/auth/v1`, what Supabase Auth sets and the functions require. */
export function userTokenIssuer(env: StackEnv): string {
  return `${env.SUPABASE_URL.replace(/\/+$/, "")}/auth/v1`;
}

/**
 * Creates a user in auth.users (or, given `userId`, that user if it does not exist yet) and returns an access
 * token for it (`app_metadata.queue_role` for admins).
 */
export async function createUser(
  env: StackEnv,
  sql: postgres.Sql,
  opts: { admin?: boolean; expiresInSeconds?: number; userId?: string } = {},
): Promise<LocalUser> {
  const userId = opts.userId ?? crypto.randomUUID();
  const appMetadata = { provider: "email", ...(opts.admin ? { queue_role: "admin" } : {}) };
  const email = `${userId.slice(0, 8)}@example.test`;
  await sql`insert into auth.users (id, email, raw_app_meta_data) values (${userId}, ${email}, ${
    sql.json(appMetadata)
  }) on conflict (id) do nothing`;
  const jwk = JSON.parse(await Deno.readTextFile(env.SIGNING_KEY_PATH));
  const now = Math.floor(Date.now() / 1000);
  const token = await new SignJWT({
    sub: userId,
    role: "authenticated",
    email,
    app_metadata: appMetadata,
    session_id: crypto.randomUUID(),
  })
    .setProtectedHeader({ alg: "ES256", kid: jwk.kid, typ: "JWT" })
    .setIssuer(userTokenIssuer(env))
    .setAudience("authenticated")
    .setIssuedAt(now)
    .setExpirationTime(now + (opts.expiresInSeconds ?? 3600))
    .sign(await importJWK(jwk, "ES256"));
  return { userId, token };
}
