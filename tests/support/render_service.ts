// The fake render service of the tests: a real HTTP server on a free port that answers dispatches as the
// test says, acknowledges cancel notices, records both (shared/render_protocol.ts names their shapes) and
// closes itself at the end of the scope:
//   await using service = await fakeRenderService((dispatch) => new Response(null, { status: 503 }));
//   await register(service.url);
//   const d = await service.until("the dispatch", () => service.dispatches[0]);
import type { CancelNotice, DispatchBody } from "../../shared/render_protocol.ts";

/** How the service answers a dispatch (or a cancel notice): any Response, or a promise of one. */
export type Answer<T> = (body: T, req: Request) => Response | Promise<Response>;

export interface FakeRenderService extends AsyncDisposable {
  /** The endpoint to register: `http://127.0.0.1:<port>/render`; cancel notices arrive at `<url>/cancel`. */
  readonly url: string;
  /** Every request in order of arrival, whatever its path: the path and its JSON body (`{}` if none). */
  readonly requests: { path: string; body: unknown }[];
  /** The dispatch bodies, in order of arrival. */
  readonly dispatches: DispatchBody[];
  /** The cancel notices, in order of arrival. */
  readonly cancels: CancelNotice[];
  /** Resolves with `pick()`'s value once it is defined, re-checked on every request the service receives. */
  until<T>(what: string, pick: () => T | undefined | false, timeoutMs?: number): Promise<T>;
  close(): Promise<void>;
}

const accept: Answer<DispatchBody> = () => new Response(null, { status: 202 });
const acknowledge: Answer<CancelNotice> = () => new Response(null, { status: 200 });

/**
 * Starts a render service answering each dispatch with `dispatch` (202 by default) and each cancel notice
 * with `options.cancel` (200 by default).
 */
export function fakeRenderService(
  dispatch: Answer<DispatchBody> = accept,
  options: { cancel?: Answer<CancelNotice> } = {},
): Promise<FakeRenderService> {
  const cancel = options.cancel ?? acknowledge;
  const requests: { path: string; body: unknown }[] = [];
  const dispatches: DispatchBody[] = [];
  const cancels: CancelNotice[] = [];
  const watchers = new Set<() => void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const path = new URL(req.url).pathname;
    const body = await req.json().catch(() => ({}));
    requests.push({ path, body });
    const isCancel = path.endsWith("/cancel");
    (isCancel ? cancels : dispatches).push(body);
    queueMicrotask(() => watchers.forEach((check) => check()));
    return isCancel ? await cancel(body, req) : await dispatch(body, req);
  });
  const close = () => server.shutdown();
  return Promise.resolve({
    url: `http://127.0.0.1:${server.addr.port}/render`,
    requests,
    dispatches,
    cancels,
    until<T>(what: string, pick: () => T | undefined | false, timeoutMs = 10_000) {
      return new Promise<T>((resolve, reject) => {
        const stop = () => {
          clearTimeout(timer);
          watchers.delete(check);
        };
        const check = () => {
          const value = pick();
          if (value !== undefined && value !== false) {
            stop();
            resolve(value);
          }
        };
        const timer = setTimeout(() => {
          stop();
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
        }, timeoutMs);
        watchers.add(check);
        check();
      });
    },
    close,
    [Symbol.asyncDispose]: close,
  });
}
