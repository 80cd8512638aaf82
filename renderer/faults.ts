// Controlled faults for tests and demos: a seeded share of renders misbehave in one of four ways.
import { z } from "zod";

export type FaultKind = "retryable" | "permanent" | "hang" | "duplicate";

const share = z.number().min(0).max(1);
export const FaultConfigSchema = z.strictObject({
  retryable: share.optional(), // fail with retryable: true
  permanent: share.optional(), // fail with retryable: false
  hang: share.optional(), // never call back again (the queue's lease must expire)
  duplicate: share.optional(), // deliver the completed callback twice
  seed: z.number().int().optional(),
}).refine(
  (c) => (c.retryable ?? 0) + (c.permanent ?? 0) + (c.hang ?? 0) + (c.duplicate ?? 0) <= 1,
  { message: "fault shares must add up to at most 1" },
);
export type FaultConfig = z.infer<typeof FaultConfigSchema>;

/** Parses RENDER_FAULTS-style JSON, e.g. `{"retryable":0.2,"hang":0.05,"seed":42}`; empty means no faults. */
export function parseFaultConfig(json: string | undefined): FaultConfig {
  if (!json?.trim()) return {};
  const parsed = FaultConfigSchema.safeParse(JSON.parse(json));
  if (!parsed.success) throw new Error(`invalid fault config: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

/** mulberry32: tiny, fast and good enough to make fault sequences reproducible from a seed. */
export function createSeededRandom(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Returns a function that picks the fault (or null) for each new render, in dispatch order. */
export function createFaultPicker(config: FaultConfig): () => FaultKind | null {
  const random = createSeededRandom(config.seed ?? Date.now());
  const kinds: FaultKind[] = ["retryable", "permanent", "hang", "duplicate"];
  return () => {
    const roll = random();
    let threshold = 0;
    for (const kind of kinds) {
      threshold += config[kind] ?? 0;
      if (roll < threshold) return kind;
    }
    return null;
  };
}
