// The renderer's event log: one object per event, by default one JSON line on stdout (see README "Logs").

export type LogEntry = { event: string; renderer: string } & Record<string, unknown>;

/** Logs one event of this renderer; `fields` are added to the entry. */
export type Log = (event: string, fields?: Record<string, unknown>) => void;

/** The default sink: `{"ts": …, "event": …, "renderer": …, …}` as one line on stdout. */
export function jsonLine(entry: LogEntry): void {
  console.log(JSON.stringify({ ts: new Date().toISOString(), ...entry }));
}

/** A Log that stamps every entry with the renderer's name and hands it to `sink`. */
export function rendererLog(name: string, sink: (entry: LogEntry) => void = jsonLine): Log {
  return (event, fields = {}) => sink({ event, renderer: name, ...fields });
}
