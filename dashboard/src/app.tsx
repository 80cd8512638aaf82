/// <reference lib="dom" />
// The page's states before the dashboard itself: reading config.json, restoring a session, signing in.
import { useEffect, useState } from "preact/hooks";
import { type DashboardConfig, loadConfig } from "./config.ts";
import { Dashboard } from "./dashboard.tsx";
import { restoreSession, type Session, signInWithPassword, signInWithToken } from "./session.ts";

export function App() {
  const [config, setConfig] = useState<DashboardConfig>();
  const [session, setSession] = useState<Session | null>(); // undefined while restoring
  const [fatal, setFatal] = useState<string>();
  const [notice, setNotice] = useState<string>();

  useEffect(() => {
    loadConfig()
      .then(async (c) => {
        setConfig(c);
        setSession(await restoreSession(c));
      })
      .catch((err) => setFatal(err instanceof Error ? err.message : String(err)));
  }, []);

  if (fatal) {
    return (
      <Centered>
        <h1>The dashboard cannot start</h1>
        <p class="error-text" role="alert">{fatal}</p>
      </Centered>
    );
  }
  if (!config || session === undefined) {
    return (
      <Centered>
        <p class="muted" aria-busy="true">Loading…</p>
      </Centered>
    );
  }
  if (!session) {
    return (
      <SignIn
        config={config}
        notice={notice}
        onSignedIn={(s) => {
          setNotice(undefined);
          setSession(s);
        }}
      />
    );
  }
  const signOut = async (why?: string) => {
    await session.signOut();
    setNotice(why);
    setSession(null);
  };
  return <Dashboard config={config} session={session} onSignOut={signOut} />;
}

function Centered({ children }: { children: preact.ComponentChildren }) {
  return (
    <main class="centered">
      <div class="panel narrow">{children}</div>
    </main>
  );
}

function SignIn(
  { config, notice, onSignedIn }: {
    config: DashboardConfig;
    notice?: string;
    onSignedIn: (s: Session) => void;
  },
) {
  const [error, setError] = useState<string>();
  const [busy, setBusy] = useState(false);

  const submit = async (event: Event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget as HTMLFormElement);
    setBusy(true);
    setError(undefined);
    try {
      onSignedIn(
        config.signIn === "token"
          ? signInWithToken(config, String(form.get("token") ?? ""))
          : await signInWithPassword(config, String(form.get("email")), String(form.get("password"))),
      );
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };

  return (
    <Centered>
      <h1>Video queue</h1>
      <p class="muted">Operations dashboard: sign in as a queue admin.</p>
      {notice && <p class="notice" role="status">{notice}</p>}
      <form onSubmit={submit} class="sign-in" data-testid="sign-in">
        {config.signIn === "token"
          ? (
            <label>
              Access token
              <textarea
                name="token"
                rows={4}
                required
                autocomplete="off"
                spellcheck={false}
                placeholder="eyJhbGciOi…"
              />
              <small class="muted">
                Mint one with{" "}
                <code>deno task stack token &lt;stack&gt; --admin</code>. It is kept in this tab only.
              </small>
            </label>
          )
          : (
            <>
              <label>
                Email
                <input name="email" type="email" required autocomplete="username" />
              </label>
              <label>
                Password
                <input name="password" type="password" required autocomplete="current-password" />
              </label>
            </>
          )}
        {error && <p class="error-text" role="alert">{error}</p>}
        <button type="submit" class="primary" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
      </form>
    </Centered>
  );
}
