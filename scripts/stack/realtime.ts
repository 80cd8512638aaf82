// LOCAL-ONLY: a stand-in for Supabase Realtime's Broadcast, served by the platform process (platform.ts) at
// /realtime/v1/websocket, where supabase-js's RealtimeClient connects given SUPABASE_URL. It speaks what the
// pinned @supabase/realtime-js speaks: Phoenix channels, serializer vsn 2.0.0 (JSON arrays
// [join_ref, ref, topic, event, payload]; user broadcasts as binary frames), and behaves as supabase/realtime
// does for what this project uses:
//   - connect: `apikey` must be a key of the project (publishable/anon: role anon; secret/service-role:
//     service_role) or a user access token; otherwise HTTP 401, as Realtime answers;
//   - phx_join "realtime:<topic>" with config.private and access_token (a "sb_..." key or none: the socket's
//     identity): a private channel is authorized the way Realtime does it (lib/realtime/tenants/
//     authorization.ex): in a transaction that is rolled back, insert a probe message for the topic, set the
//     role, request.jwt.claims and realtime.topic, and select the probe: RLS on realtime.messages decides.
//     Refused: phx_reply error "Unauthorized: You do not have permissions to read from this Channel topic: …";
//   - access_token: a new token is checked and the channel authorized again (refused: a system error, then
//     phx_close); a token's expiry closes its channels the same way; phx_leave; heartbeat;
//   - delivery: every message committed to realtime.messages (LISTEN realtime_local; bootstrap.sql) goes to the
//     channels joined to its topic with the same privacy, as a binary user broadcast (event, payload,
//     meta {"id"}), as Realtime does from the WAL;
//   - a client's own broadcast: on a private channel only when an insert policy lets its role write the topic
//     (probed the same way), else dropped; relayed to the topic's other channels.
// Not implemented: presence, postgres_changes, replay, broadcast acks, rate limits, serializer 1.0.0.
// Broadcast is best effort here as there (API.md): messages committed while the stand-in is down or not
// listening are lost.
import postgres from "postgres";
import { HttpError, inTransaction, isSecretKey, verifyUserToken } from "../../shared/mod.ts";

/** Who a socket or a channel acts as: the role and JWT claims Realtime sets for the policies. */
type Identity = { role: string; claims: Record<string, unknown>; expiresAt?: number };

type Channel = {
  topic: string; // "realtime:<sub>", as joined
  sub: string; // the topic the database knows: realtime.topic(), realtime.messages.topic
  joinRef: string;
  private: boolean;
  self: boolean; // config.broadcast.self: receive one's own broadcasts
  identity: Identity;
  expiry?: ReturnType<typeof setTimeout>;
};

type Client = { ws: WebSocket; identity: Identity; channels: Map<string, Channel> };

type Frame = [string | null, string | null, string, string, Record<string, unknown>];

/** Refusing a connection or a join: the reason Realtime gives. */
class Refusal extends Error {}

/** The answer of an authorization check, thrown to roll its transaction back. */
class Verdict {
  constructor(readonly allowed: boolean) {}
}

const log = (event: string, fields: Record<string, unknown> = {}) =>
  console.log(JSON.stringify({ ts: new Date().toISOString(), event, ...fields }));

const USER_BROADCAST_PUSH = 3; // client → server
const USER_BROADCAST = 4; // server → client
const JSON_ENCODING = 1;

/** Starts the stand-in on the stack's database; `connect` answers a request to /realtime/v1/websocket. */
export function startRealtime(
  dbUrl: string,
): { connect(req: Request): Promise<Response>; stop(): Promise<void> } {
  const sql = postgres(dbUrl, {
    max: 4,
    prepare: false,
    fetch_types: false, // see platform.ts: a restart must not end the process
    backoff: () => 0.5,
    onnotice: () => {},
    connection: { application_name: "video-queue-realtime" },
  });
  const clients = new Set<Client>();
  // A new process has no subscriber yet (a previous one's sockets died with it).
  void sql`delete from realtime.local_listened`.catch(() => {});

  // Identities ---------------------------------------------------------------------------------------------

  const publicKeys = (): string[] => {
    const keys = [Deno.env.get("SUPABASE_ANON_KEY")];
    try {
      keys.push(...Object.values(JSON.parse(Deno.env.get("SUPABASE_PUBLISHABLE_KEYS") ?? "{}")) as string[]);
    } catch { /* none */ }
    return keys.filter((k): k is string => !!k);
  };

  /** The identity a key or token stands for (shared/auth.ts verifies user tokens, as the functions do). */
  async function identify(token: string): Promise<Identity> {
    if (publicKeys().includes(token)) return { role: "anon", claims: { role: "anon" } };
    if (await isSecretKey(token)) return { role: "service_role", claims: { role: "service_role" } };
    try {
      const { claims } = await verifyUserToken(token);
      return { role: "authenticated", claims, expiresAt: Number(claims.exp) * 1000 };
    } catch (err) {
      const expired = err instanceof HttpError && /expired/.test(err.message);
      throw new Refusal(
        expired
          ? "InvalidJWTToken: Token has expired"
          : "JwtSignatureError: Failed to validate JWT signature",
      );
    }
  }

  /** The channel's identity: its access_token, or the socket's for none or an API key ("sb_…"). */
  const channelIdentity = (client: Client, token: unknown) =>
    typeof token === "string" && !token.startsWith("sb_") && !publicKeys().includes(token)
      ? identify(token)
      : Promise.resolve(client.identity);

  // Authorization, as Realtime checks it: RLS on realtime.messages, as the user, rolled back --------------

  /** Runs `check` in a transaction that is always rolled back (a probe never stays) and returns its answer. */
  async function rolledBack(check: (tx: postgres.TransactionSql) => Promise<boolean>): Promise<boolean> {
    const outcome = await inTransaction(sql, async (tx) => {
      throw new Verdict(await check(tx));
    }).catch((err) => err);
    if (outcome instanceof Verdict) return outcome.allowed;
    throw outcome;
  }

  /** Takes on `identity` for the rest of the transaction, as Realtime's set_conn_config does. */
  const setIdentity = (tx: postgres.TransactionSql, identity: Identity, sub: string) =>
    tx`select set_config('role', ${identity.role}, true), set_config('realtime.topic', ${sub}, true),
              set_config('request.jwt.claims', ${JSON.stringify(identity.claims)}, true),
              set_config('request.jwt.claim.sub', ${String(identity.claims.sub ?? "")}, true),
              set_config('request.jwt.claim.role', ${identity.role}, true)`;

  /** May `identity` receive broadcasts on `sub`? Realtime's read check: a probe message it can select. */
  const mayRead = (identity: Identity, sub: string) =>
    rolledBack(async (tx) => {
      const probe = crypto.randomUUID();
      await tx`insert into realtime.messages (id, topic, extension) values (${probe}, ${sub}, 'broadcast')`;
      await setIdentity(tx, identity, sub);
      return (await tx`select 1 from realtime.messages where id = ${probe}`).length > 0;
    });

  /** May `identity` send broadcasts on `sub`? Realtime's write check: an insert as the user. */
  const mayWrite = (identity: Identity, sub: string) =>
    rolledBack(async (tx) => {
      await setIdentity(tx, identity, sub);
      return await tx`insert into realtime.messages (topic, extension) values (${sub}, 'broadcast')`.then(
        () => true,
        (err) => (err as { code?: string }).code === "42501" ? false : Promise.reject(err),
      );
    });

  // The protocol -------------------------------------------------------------------------------------------

  const send = (client: Client, frame: Frame | Uint8Array) => {
    if (client.ws.readyState !== WebSocket.OPEN) return;
    client.ws.send(frame instanceof Uint8Array ? frame : JSON.stringify(frame));
  };
  const reply = (client: Client, f: Frame, status: "ok" | "error", response: Record<string, unknown>) =>
    send(client, [f[0], f[1], f[2], "phx_reply", { status, response }]);

  /** Ends a channel from the server's side: a system error saying why, then phx_close. */
  function shutDown(client: Client, channel: Channel, message: string) {
    send(client, [channel.joinRef, null, channel.topic, "system", {
      extension: "system",
      status: "error",
      message,
      channel: channel.sub,
    }]);
    close(client, channel);
  }

  function close(client: Client, channel: Channel) {
    clearTimeout(channel.expiry);
    if (client.channels.get(channel.topic) === channel) client.channels.delete(channel.topic);
    send(client, [channel.joinRef, null, channel.topic, "phx_close", {}]);
    void forgetUnlistened();
  }

  /** Drops the topics no channel listens to any more from realtime.local_listened (bootstrap.sql). */
  async function forgetUnlistened(): Promise<void> {
    const listened = [...clients].flatMap((c) => [...c.channels.values()].map((ch) => ch.sub));
    await sql`delete from realtime.local_listened where topic <> all(${listened}::text[])`
      .catch((err) => log("realtime_forget_failed", { error: String((err as Error)?.message ?? err) }));
  }

  /** A token's expiry ends the channels that rest on it, as Realtime's token confirmation does. */
  function watchExpiry(client: Client, channel: Channel) {
    clearTimeout(channel.expiry);
    const at = channel.identity.expiresAt;
    if (at === undefined) return;
    const wait = Math.min(Math.max(0, at - Date.now()), 2 ** 31 - 1);
    channel.expiry = setTimeout(() => shutDown(client, channel, "Token has expired"), wait);
  }

  async function join(client: Client, f: Frame) {
    const [joinRef, , topic, , payload] = f;
    const sub = topic.replace(/^realtime:/, "");
    const config = (payload.config ?? {}) as { private?: boolean; broadcast?: { self?: boolean } };
    try {
      if (!sub || sub === topic) throw new Refusal("TopicNameRequired: You must provide a topic name");
      const identity = await channelIdentity(client, payload.access_token ?? payload.user_token);
      if (identity.expiresAt !== undefined && identity.expiresAt <= Date.now()) {
        throw new Refusal("InvalidJWTToken: Token has expired");
      }
      if (config.private === true && !(await mayRead(identity, sub))) {
        throw new Refusal(
          `Unauthorized: You do not have permissions to read from this Channel topic: ${sub}`,
        );
      }
      const previous = client.channels.get(topic);
      if (previous) clearTimeout(previous.expiry);
      const channel: Channel = {
        topic,
        sub,
        joinRef: joinRef ?? "",
        private: config.private === true,
        self: config.broadcast?.self === true,
        identity,
      };
      await sql`insert into realtime.local_listened (topic) values (${sub}) on conflict do nothing`;
      client.channels.set(topic, channel);
      watchExpiry(client, channel);
      reply(client, f, "ok", { postgres_changes: [] });
    } catch (err) {
      if (!(err instanceof Refusal)) log("realtime_join_failed", { topic: sub, error: String(err) });
      reply(client, f, "error", {
        reason: err instanceof Refusal
          ? err.message
          : "Realtime was unable to connect to the project database",
      });
    }
  }

  async function refreshToken(client: Client, channel: Channel, token: unknown) {
    if (typeof token !== "string" || token.startsWith("sb_")) return;
    try {
      const identity = await identify(token);
      if (channel.private && !(await mayRead(identity, channel.sub))) {
        return shutDown(
          client,
          channel,
          `You no longer have permission to read from this Channel topic: ${channel.sub}`,
        );
      }
      channel.identity = identity;
      watchExpiry(client, channel);
    } catch (err) {
      shutDown(
        client,
        channel,
        err instanceof Refusal ? err.message : "Realtime was unable to connect to the project database",
      );
    }
  }

  /** A client's broadcast: to the topic's other channels, on a private one only with write permission. */
  async function relay(
    client: Client,
    channel: Channel,
    event: string,
    payload: Uint8Array,
    encoding: number,
  ) {
    if (channel.private && !(await mayWrite(channel.identity, channel.sub).catch(() => false))) return;
    for (const other of clients) {
      for (const c of other.channels.values()) {
        if (c.sub !== channel.sub || c.private !== channel.private || (other === client && !channel.self)) {
          continue;
        }
        send(other, userBroadcast(c.topic, event, payload, encoding));
      }
    }
  }

  function onText(client: Client, text: string) {
    let f: Frame;
    try {
      f = JSON.parse(text);
      if (!Array.isArray(f) || f.length !== 5 || typeof f[2] !== "string" || typeof f[3] !== "string") return;
    } catch {
      return;
    }
    const [, , topic, event, payload] = f;
    if (topic === "phoenix" && event === "heartbeat") return reply(client, f, "ok", {});
    if (event === "phx_join") return void join(client, f);
    const channel = client.channels.get(topic);
    if (!channel) return reply(client, f, "error", { reason: "unmatched topic" }); // as Phoenix answers
    switch (event) {
      case "phx_leave":
        reply(client, f, "ok", {});
        return close(client, channel);
      case "access_token":
        return void refreshToken(client, channel, payload?.access_token);
      case "broadcast": {
        const p = payload as { event?: unknown; payload?: unknown };
        if (typeof p.event !== "string") return;
        return void relay(
          client,
          channel,
          p.event,
          new TextEncoder().encode(JSON.stringify(p.payload ?? {})),
          JSON_ENCODING,
        );
      }
    }
  }

  /** A binary frame: a user broadcast push (realtime-js's serializer, kind 3). */
  function onBinary(client: Client, data: ArrayBuffer) {
    const bytes = new Uint8Array(data);
    if (bytes[0] !== USER_BROADCAST_PUSH || bytes.length < 7) return;
    const [joinRefLen, refLen, topicLen, eventLen, metaLen, encoding] = bytes.subarray(1, 7);
    let at = 7 + joinRefLen + refLen;
    const text = (n: number) => new TextDecoder().decode(bytes.subarray(at, at += n));
    const topic = text(topicLen);
    const event = text(eventLen);
    at += metaLen;
    const channel = client.channels.get(topic);
    if (channel) void relay(client, channel, event, bytes.slice(at), encoding);
  }

  // Delivery of the database's messages ---------------------------------------------------------------------

  type Message = { id: string; topic: string; event: string; payload: unknown; private: boolean };
  const pending: string[] = [];
  let delivering: Promise<void> | undefined;

  /** Delivers the notified messages in the order their transactions committed. */
  function deliver(): Promise<void> {
    delivering ??= (async () => {
      while (pending.length > 0) {
        const ids = pending.splice(0, 100);
        const rows = await sql<Message[]>`
          select m.id::text, m.topic, m.event, m.payload, coalesce(m.private, false) as private
            from realtime.messages m where m.id = any(string_to_array(${ids.join(",")}, ',')::uuid[])`;
        const byId = new Map(rows.map((r) => [r.id, r]));
        for (const id of ids) {
          const m = byId.get(id);
          if (m && m.event && m.payload !== null) broadcast(m);
        }
      }
    })().catch((err) => log("realtime_delivery_failed", { error: String((err as Error)?.message ?? err) }))
      .finally(() => delivering = undefined);
    return delivering;
  }

  function broadcast(m: Message) {
    const payload = new TextEncoder().encode(JSON.stringify(m.payload));
    for (const client of clients) {
      for (const channel of client.channels.values()) {
        if (channel.sub !== m.topic || channel.private !== m.private) continue;
        send(client, userBroadcast(channel.topic, m.event, payload, JSON_ENCODING, { id: m.id }));
      }
    }
  }

  // LISTEN, set up again after the database comes back (postgres.js stops re-listening while it is down).
  let listener: { unlisten(): Promise<void> } | undefined;
  const heard = new Set<string>(); // the ids of the latest messages notified, oldest first
  let down = false;
  const listen = async () => {
    await listener?.unlisten().catch(() => {});
    listener = await sql.listen("realtime_local", (id) => {
      // After a database restart postgres.js re-LISTENs by itself as well as here: hear each message once.
      if (heard.has(id)) return;
      heard.add(id);
      if (heard.size > 10_000) heard.delete(heard.values().next().value!);
      pending.push(id);
      void deliver();
    });
  };
  void listen().catch(() => down = true);
  const health = setInterval(async () => {
    try {
      await sql`select 1`;
      if (down) {
        await listen();
        down = false;
        log("realtime_listening_again");
      }
    } catch {
      down = true;
    }
  }, 2000);

  return {
    async connect(req: Request): Promise<Response> {
      const url = new URL(req.url);
      if (req.headers.get("upgrade")?.toLowerCase() !== "websocket") {
        return new Response("Expected a WebSocket upgrade", { status: 426 });
      }
      if (url.searchParams.get("vsn") !== "2.0.0") {
        return Response.json({ error: "Only serializer vsn 2.0.0 is served here" }, { status: 400 });
      }
      const apikey = req.headers.get("x-api-key") ?? url.searchParams.get("apikey");
      if (!apikey) return Response.json({ error: "API key is missing" }, { status: 401 });
      let identity: Identity;
      try {
        identity = await identify(apikey);
      } catch {
        return Response.json({ error: "The token provided is not a valid JWT" }, { status: 401 });
      }
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.binaryType = "arraybuffer";
      const client: Client = { ws: socket, identity, channels: new Map() };
      socket.onopen = () => clients.add(client);
      socket.onmessage = (e) =>
        typeof e.data === "string" ? onText(client, e.data) : onBinary(client, e.data);
      socket.onclose = () => {
        clients.delete(client);
        for (const channel of client.channels.values()) clearTimeout(channel.expiry);
        void forgetUnlistened();
      };
      socket.onerror = () => {};
      return response;
    },
    async stop() {
      clearInterval(health);
      for (const client of clients) client.ws.close(1001, "going away");
      await sql.end({ timeout: 2 }).catch(() => {});
    },
  };
}

/** Realtime's server → client user broadcast frame (its V2Serializer, kind 4). */
function userBroadcast(
  topic: string,
  event: string,
  payload: Uint8Array,
  encoding: number,
  meta?: object,
): Uint8Array {
  const enc = new TextEncoder();
  const [t, e, m] = [
    enc.encode(topic),
    enc.encode(event),
    meta ? enc.encode(JSON.stringify(meta)) : new Uint8Array(),
  ];
  const frame = new Uint8Array(5 + t.length + e.length + m.length + payload.length);
  frame.set([USER_BROADCAST, t.length, e.length, m.length, encoding]);
  let at = 5;
  for (const part of [t, e, m, payload]) {
    frame.set(part, at);
    at += part.length;
  }
  return frame;
}
