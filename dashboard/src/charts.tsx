/// <reference lib="dom" />
// Throughput and failures per hour over the last 24 hours (GET /status?view=history), as uPlot bar charts.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import type { HourlyPoint } from "../../client/mod.ts";

export function HourlyCharts({ history }: { history: HourlyPoint[] }) {
  const completed = history.reduce((n, h) => n + h.completed, 0);
  const failed = history.reduce((n, h) => n + h.failed, 0);
  return (
    <section class="panel" aria-labelledby="history-title">
      <h2 id="history-title">Last 24 hours</h2>
      <div class="grid-2 charts">
        <Chart
          title={`Completed per hour · ${completed} in all`}
          history={history}
          field="completed"
          color="#16a34a"
        />
        <Chart
          title={`Failed per hour · ${failed} in all`}
          history={history}
          field="failed"
          color="#dc2626"
        />
      </div>
      {completed + failed === 0 && <p class="muted small">No job finished in the last 24 hours.</p>}
    </section>
  );
}

const HEIGHT = 160;

function Chart(
  { title, history, field, color }: {
    title: string;
    history: HourlyPoint[];
    field: "completed" | "failed";
    color: string;
  },
) {
  const box = useRef<HTMLDivElement>(null);
  const plot = useRef<uPlot | null>(null);
  const data = (): uPlot.AlignedData => [
    history.map((h) => Date.parse(h.hour) / 1000),
    history.map((h) => h[field]),
  ];

  useEffect(() => {
    const el = box.current!;
    plot.current = new uPlot(
      {
        width: el.clientWidth,
        height: HEIGHT,
        legend: { show: false },
        cursor: { show: true, points: { show: false } },
        scales: {
          x: { time: true },
          y: { range: (_u, _min, max) => [0, Math.max(4, Math.ceil(max * 1.15))] },
        },
        axes: [
          { stroke: "#64748b", grid: { show: false }, ticks: { show: false }, space: 60 },
          { stroke: "#64748b", grid: { stroke: "#e2e8f0" }, ticks: { show: false }, size: 36 },
        ],
        series: [{}, {
          label: field,
          stroke: color,
          fill: `${color}cc`,
          width: 0,
          paths: uPlot.paths.bars!({ size: [0.7, 24] }),
          points: { show: false },
        }],
      },
      data(),
      el,
    );
    const resize = new ResizeObserver(() => plot.current?.setSize({ width: el.clientWidth, height: HEIGHT }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.current?.destroy();
    };
  }, []);
  useEffect(() => plot.current?.setData(data()), [history]);

  return (
    <figure class="chart" data-chart={field}>
      <figcaption>{title}</figcaption>
      <div ref={box} class="chart-box" role="img" aria-label={`${title}, by hour`} />
    </figure>
  );
}
