// Private Realtime channels, shared: supabase-js keeps one channel per topic per client, so several listeners
// of one topic (two waits on one job, a wait and a subscribe) share it here, and it is removed with the last.
import type { RealtimeChannel, SupabaseClient } from "@supabase/supabase-js";
import type { z } from "zod";

/** A channel's state, as realtime-js reports it to `subscribe`. */
export type ChannelState = "SUBSCRIBED" | "CHANNEL_ERROR" | "TIMED_OUT" | "CLOSED";

type Listener = { onMessage: (payload: never) => void; onState?: (state: ChannelState) => void };

type Shared = {
  channel: RealtimeChannel;
  event: string;
  listeners: Set<Listener>;
  state?: ChannelState;
};

const hubs = new WeakMap<SupabaseClient, ChannelHub>();

/** The hub of a supabase client (one per client, as its channels are). */
export function channelHub(supabase: SupabaseClient): ChannelHub {
  let hub = hubs.get(supabase);
  if (!hub) hubs.set(supabase, hub = new ChannelHub(supabase));
  return hub;
}

/** Listens on private broadcast topics, one channel per topic however many listeners it has. */
class ChannelHub {
  readonly #channels = new Map<string, Shared>();
  constructor(readonly supabase: SupabaseClient) {}

  /**
   * Calls `onMessage` with each `event` broadcast on the private `topic` whose payload `schema` accepts
   * (others are dropped), and `onState` with the channel's state now and on every change. Returns a
   * function that stops listening; the channel is removed when its last listener stops.
   */
  listen<S extends z.ZodType>(
    topic: string,
    event: string,
    schema: S,
    onMessage: (payload: z.infer<S>) => void,
    onState?: (state: ChannelState) => void,
  ): () => void {
    const shared = this.#channels.get(topic) ?? this.#open(topic, event);
    if (shared.event !== event) throw new Error(`${topic} is already listened to for "${shared.event}"`);
    const listener: Listener = {
      onMessage: (payload) => {
        const parsed = schema.safeParse(payload);
        if (parsed.success) onMessage(parsed.data);
      },
      onState,
    };
    shared.listeners.add(listener);
    if (shared.state) queueMicrotask(() => shared.listeners.has(listener) && onState?.(shared.state!));
    return () => {
      if (!shared.listeners.delete(listener) || shared.listeners.size > 0) return;
      this.#channels.delete(topic);
      void this.supabase.removeChannel(shared.channel);
    };
  }

  #open(topic: string, event: string): Shared {
    const channel = this.supabase.channel(topic, { config: { private: true } });
    const shared: Shared = { channel, event, listeners: new Set() };
    channel.on("broadcast", { event }, (message) => {
      for (const l of shared.listeners) l.onMessage(message.payload as never);
    });
    channel.subscribe((state) => {
      shared.state = state as ChannelState;
      for (const l of shared.listeners) l.onState?.(shared.state);
    });
    this.#channels.set(topic, shared);
    return shared;
  }
}
