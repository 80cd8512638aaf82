// Prometheus text exposition (format 0.0.4) of what public.get_queue_metrics() returns. SQL computes every
// number; this only names and formats them.

/** The JSON of public.get_queue_metrics(). */
export type QueueMetrics = {
  queued_by_priority?: Record<string, number | null> | null;
  processing_by_renderer?: Record<string, number | null> | null;
  renderer_limit?: Record<string, number | null> | null;
  capacity?: { max_concurrent?: number; effective?: number; peak?: boolean; multiplier?: number } | null;
  oldest_queued_seconds?: number | null;
  /** Monotonic totals: `<name>_total` counters, and `<x>_seconds_sum` / `_count` of the summaries. */
  counters?: Record<string, number> | null;
  wait_seconds_quantiles?: Record<string, number | null> | null;
  processing_seconds_quantiles?: Record<string, number | null> | null;
};

type Labels = Record<string, string>;
type Sample = { suffix?: string; labels?: Labels; value: number | boolean | null | undefined };

const PREFIX = "video_queue_";

export function prometheusText(metrics: QueueMetrics): string {
  const out: string[] = [];
  const family = (name: string, type: string, help: string, samples: Sample[]) => {
    out.push(`# HELP ${PREFIX}${name} ${help}`, `# TYPE ${PREFIX}${name} ${type}`);
    for (const s of samples) {
      out.push(`${PREFIX}${name}${s.suffix ?? ""}${labelText(s.labels)} ${valueText(s.value)}`);
    }
  };
  const byLabel = (label: string, values?: Record<string, number | null> | null): Sample[] =>
    Object.entries(values ?? {}).map(([key, value]) => ({ labels: { [label]: key }, value }));

  family(
    "queued_jobs",
    "gauge",
    "Jobs waiting to start, by priority.",
    byLabel("priority", metrics.queued_by_priority),
  );
  family(
    "processing_jobs",
    "gauge",
    "Jobs rendering now, by renderer.",
    byLabel("renderer", metrics.processing_by_renderer),
  );
  family(
    "renderer_limit",
    "gauge",
    "Concurrent render cap of each renderer.",
    byLabel("renderer", metrics.renderer_limit),
  );
  const capacity = metrics.capacity ?? {};
  family("capacity_max_concurrent", "gauge", "Configured global render cap (max_concurrent_renders).", [
    { value: capacity.max_concurrent },
  ]);
  family("capacity_effective", "gauge", "Global render cap in force now (peak multiplier applied).", [
    { value: capacity.effective },
  ]);
  family("peak", "gauge", "1 inside a peak-hour window, else 0.", [{ value: capacity.peak }]);
  family("oldest_queued_seconds", "gauge", "Age of the oldest queued job.", [{
    value: metrics.oldest_queued_seconds,
  }]);

  const counters = metrics.counters ?? {};
  for (const [name, value] of Object.entries(counters)) {
    if (name.endsWith("_total")) {
      family(name, "counter", `Total ${name.slice(0, -6).replaceAll("_", " ")}.`, [{ value }]);
    }
  }
  for (
    const [name, help, quantiles] of [
      [
        "wait_seconds",
        "Time from enqueue to start (quantiles over the last hour).",
        metrics.wait_seconds_quantiles,
      ],
      [
        "processing_seconds",
        "Render time (quantiles over the last hour).",
        metrics.processing_seconds_quantiles,
      ],
    ] as const
  ) {
    family(name, "summary", help, [
      ...byLabel("quantile", quantiles),
      { suffix: "_sum", value: counters[`${name}_sum`] },
      { suffix: "_count", value: counters[`${name}_count`] },
    ]);
  }
  return out.join("\n") + "\n";
}

function labelText(labels?: Labels): string {
  if (!labels) return "";
  const escape = (v: string) => v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
  return `{${Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`).join(",")}}`;
}

// Prometheus has no null: an unknown value (no completed job in the last hour, say) is NaN.
function valueText(value: Sample["value"]): string {
  if (typeof value === "boolean") return value ? "1" : "0";
  return typeof value === "number" && Number.isFinite(value) ? String(value) : "NaN";
}
