/// <reference lib="dom" />
// Acting on the queue: every action asks for confirmation in a dialog, then shows what happened.
import { useEffect, useRef, useState } from "preact/hooks";

/** Something an operator may do, described for the confirmation dialog. */
export type Action = {
  title: string;
  body: string;
  confirm: string;
  /** Destructive (cancel): the confirm button is red. */
  danger?: boolean;
  /** Does it; resolves with a sentence saying what happened, rejects with an error to show. */
  run: () => Promise<string>;
};

export type Outcome = { ok: boolean; message: string };

/** The pending action, the last outcome, and `ask` to propose an action. */
export function useActions(afterRun: () => void) {
  const [pending, setPending] = useState<Action>();
  const [running, setRunning] = useState(false);
  const [outcome, setOutcome] = useState<Outcome>();

  const confirm = async () => {
    if (!pending) return;
    setRunning(true);
    try {
      setOutcome({ ok: true, message: await pending.run() });
    } catch (err) {
      setOutcome({
        ok: false,
        message: `${pending.title} failed: ${err instanceof Error ? err.message : err}`,
      });
    } finally {
      setRunning(false);
      setPending(undefined);
      afterRun();
    }
  };
  return {
    ask: (action: Action) => setPending(action),
    pending,
    running,
    confirm,
    dismiss: () => setPending(undefined),
    outcome,
    clearOutcome: () => setOutcome(undefined),
  };
}

export function ConfirmDialog(
  { action, running, onConfirm, onCancel }: {
    action?: Action;
    running: boolean;
    onConfirm: () => void;
    onCancel: () => void;
  },
) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current!;
    if (action && !dialog.open) dialog.showModal();
    if (!action && dialog.open) dialog.close();
  }, [action]);
  return (
    <dialog ref={ref} class="confirm" onCancel={(e) => (e.preventDefault(), running || onCancel())}>
      {action && (
        <form method="dialog" onSubmit={(e) => (e.preventDefault(), onConfirm())}>
          <h2>{action.title}</h2>
          <p>{action.body}</p>
          <div class="dialog-buttons">
            <button type="button" onClick={onCancel} disabled={running}>Keep as is</button>
            <button type="submit" class={action.danger ? "danger" : "primary"} disabled={running} autofocus>
              {running ? "Working…" : action.confirm}
            </button>
          </div>
        </form>
      )}
    </dialog>
  );
}

export function OutcomeBanner({ outcome, onClose }: { outcome?: Outcome; onClose: () => void }) {
  return (
    <div role="status" aria-live="polite" class="outcome-slot">
      {outcome && (
        <div class={`banner ${outcome.ok ? "success" : "danger"}`} data-testid="outcome">
          <span>{outcome.message}</span>
          <button type="button" class="link" onClick={onClose} aria-label="Dismiss">✕</button>
        </div>
      )}
    </div>
  );
}
