// Who is calling: a signed-in user (a Supabase Auth JWT) or a holder of a secret key (service_role).
// Whether a caller may do something is decided by SQL (public.is_queue_admin(), RLS); this only proves identity.
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  type JSONWebKeySet,
  type JWTPayload,
  jwtVerify,
  type JWTVerifyGetKey,
} from "jose";
import { HttpError } from "./errors.ts";
import { jsonIssues } from "./schemas.ts";

export type UserCaller = {
  kind: "user";
  userId: string;
  /** The verified claims, passed to SQL as request.jwt.claims. */
  claims: JWTPayload;
  /** What the token says; SQL's is_queue_admin() is what decides. */
  admin: boolean;
};
export type ServiceCaller = { kind: "service" };
export type Caller = UserCaller | ServiceCaller;

/** Any valid caller: a secret key (in `apikey` or as the Bearer token) or a user access token. */
export async function authenticate(req: Request): Promise<Caller> {
  if (await hasSecretKey(req)) return { kind: "service" };
  const token = bearerToken(req);
  if (!token) throw new HttpError(401, "Send a user access token as Authorization: Bearer <token>.");
  return await verifyUserToken(token);
}

/**
 * Only a secret key holder: the worker trigger and operators. A signed-in user is a valid caller who may
 * not do this (403); anyone else has not proven who they are (401).
 */
export async function requireSecretKey(req: Request): Promise<ServiceCaller> {
  if (await hasSecretKey(req)) return { kind: "service" };
  const token = bearerToken(req);
  if (token && await verifyUserToken(token).then(() => true, () => false)) {
    throw new HttpError(403, "Only a secret key may run a worker pass; a user access token may not.");
  }
  throw new HttpError(401, "Send a secret key in the apikey header.");
}

/** The token after `Authorization: Bearer`, if any. */
export function bearerToken(req: Request): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
  return match?.[1];
}

/** The audience Supabase Auth puts in user access tokens. */
const USER_AUDIENCE = "authenticated";
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The issuer of this project's user access tokens: `${SUPABASE_URL}/auth/v1`, as Supabase Auth sets `iss`. */
function userTokenIssuer(): string {
  const url = Deno.env.get("SUPABASE_URL");
  if (!url) throw new Error("SUPABASE_URL is not set: no issuer to check user tokens against");
  return `${url.replace(/\/+$/, "")}/auth/v1`;
}

/**
 * Verifies a Supabase Auth access token of this project (signature, `exp`, `iss`, `aud`) and returns the
 * user it names; anything wrong is 401.
 */
export async function verifyUserToken(token: string): Promise<UserCaller> {
  let claims: JWTPayload;
  try {
    // The algorithm lists are the defence against `alg: none` and key confusion: HS256 only with the
    // shared secret, asymmetric algorithms only with the published keys.
    const { alg } = decodeProtectedHeader(token);
    const secret = Deno.env.get("SUPABASE_JWT_SECRET");
    const options = {
      requiredClaims: ["sub", "exp", "iss", "aud"],
      issuer: userTokenIssuer(),
      audience: USER_AUDIENCE,
    };
    ({ payload: claims } = alg === "HS256" && secret
      ? await jwtVerify(token, new TextEncoder().encode(secret), { ...options, algorithms: ["HS256"] })
      : await jwtVerify(token, signingKeys(), { ...options, algorithms: ["ES256", "RS256"] }));
  } catch (err) {
    const expired = (err as { code?: string })?.code === "ERR_JWT_EXPIRED";
    throw new HttpError(
      401,
      expired
        ? "The access token has expired; sign in again."
        : "The access token is not valid; sign in again.",
    );
  }
  // SQL reads the claims back as jsonb and `sub` as a uuid (auth.uid()): anything else could not get there.
  if (
    claims.role !== "authenticated" || typeof claims.sub !== "string" || !UUID.test(claims.sub) ||
    jsonIssues(claims, [], 1).length > 0
  ) {
    throw new HttpError(401, "Use the access token of a signed-in user.");
  }
  const appMetadata = claims.app_metadata as { queue_role?: unknown } | undefined;
  return { kind: "user", userId: claims.sub, claims, admin: appMetadata?.queue_role === "admin" };
}

// The project's public signing keys: SUPABASE_JWKS when given, else the project's JWKS endpoint.
let cachedKeys: { source: string; keys: JWTVerifyGetKey } | undefined;

function signingKeys(): JWTVerifyGetKey {
  const jwks = Deno.env.get("SUPABASE_JWKS");
  const url = Deno.env.get("SUPABASE_URL");
  const source = jwks ?? url;
  if (!source) throw new Error("no signing keys configured");
  if (cachedKeys?.source !== source) {
    cachedKeys = {
      source,
      keys: jwks
        ? createLocalJWKSet(parseJwks(jwks))
        : createRemoteJWKSet(new URL("/auth/v1/.well-known/jwks.json", url)),
    };
  }
  return cachedKeys.keys;
}

function parseJwks(text: string): JSONWebKeySet {
  const parsed = JSON.parse(text);
  return Array.isArray(parsed) ? { keys: parsed } : parsed;
}

/** The secret keys this project accepts: SUPABASE_SECRET_KEYS' values and the legacy service-role key. */
function configuredSecretKeys(): string[] {
  const keys: string[] = [];
  const secretKeys = Deno.env.get("SUPABASE_SECRET_KEYS");
  if (secretKeys) {
    try {
      keys.push(...Object.values(JSON.parse(secretKeys)).filter((k): k is string => typeof k === "string"));
    } catch { /* a malformed setting accepts nothing */ }
  }
  const legacy = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY");
  if (legacy) keys.push(legacy);
  return keys.filter((k) => k.length > 0);
}

/** The first configured secret key, for calls this project makes to itself (worker kicks). */
export function ownSecretKey(): string | undefined {
  return configuredSecretKeys()[0];
}

async function hasSecretKey(req: Request): Promise<boolean> {
  const presented = [req.headers.get("apikey"), bearerToken(req)].filter((k): k is string => !!k);
  for (const candidate of presented) if (await isSecretKey(candidate)) return true;
  return false;
}

/** Whether `key` is one of this project's secret keys (compared in constant time). */
export async function isSecretKey(key: string): Promise<boolean> {
  for (const accepted of configuredSecretKeys()) if (await constantTimeEqual(key, accepted)) return true;
  return false;
}

// Comparing digests keeps the time independent of where (and whether) the strings differ, and of length.
async function constantTimeEqual(a: string, b: string): Promise<boolean> {
  const encoder = new TextEncoder();
  const [da, db] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(a)),
    crypto.subtle.digest("SHA-256", encoder.encode(b)),
  ]);
  const x = new Uint8Array(da), y = new Uint8Array(db);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}
