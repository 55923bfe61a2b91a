// Chart.js wrappers. Every chart is registered in window.__zooscopeCharts under its canvas id so
// that tests (and curious people in the console) can read what was drawn.

const charts = (window.__zooscopeCharts = window.__zooscopeCharts || {});
const COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

function make(canvasId, config) {
  charts[canvasId]?.destroy();
  const canvas = document.getElementById(canvasId);
  // No animation: screenshots and tests see the final picture at once.
  config.options = { animation: false, responsive: true, maintainAspectRatio: false, ...config.options };
  charts[canvasId] = new window.Chart(canvas, config);
  return charts[canvasId];
}

export function destroyAll() {
  for (const id of Object.keys(charts)) {
    charts[id].destroy();
    delete charts[id];
  }
}

// Original vs reconstructed accuracy, one dot per checkpoint; dataset 0 holds exactly the dots.
export function scatterWithDiagonal(canvasId, points, { x = "original accuracy", y = "reconstructed accuracy" } = {}) {
  const values = points.flatMap((p) => [p.x, p.y]);
  const lo = Math.min(0, ...values);
  const hi = Math.max(1, ...values);
  return make(canvasId, {
    type: "scatter",
    data: {
      datasets: [
        { label: "checkpoints", data: points, backgroundColor: COLOURS[0], pointRadius: 4 },
        {
          label: "y = x", type: "line", data: [{ x: lo, y: lo }, { x: hi, y: hi }],
          borderColor: "#9ca3af", borderDash: [6, 4], pointRadius: 0, borderWidth: 1,
        },
      ],
    },
    options: {
      scales: {
        x: { title: { display: true, text: x }, min: lo, max: hi },
        y: { title: { display: true, text: y }, min: lo, max: hi },
      },
      plugins: {
        tooltip: { callbacks: { label: (c) => `${c.raw.label ?? ""} (${c.raw.x.toFixed(3)}, ${c.raw.y.toFixed(3)})` } },
      },
    },
  });
}

export function bins(values, lo, hi, n = 10) {
  const width = (hi - lo) / n || 1;
  const counts = new Array(n).fill(0);
  for (const v of values) counts[Math.min(n - 1, Math.max(0, Math.floor((v - lo) / width)))] += 1;
  const labels = counts.map((_, i) => `${(lo + i * width).toFixed(2)}–${(lo + (i + 1) * width).toFixed(2)}`);
  return { labels, counts };
}

// Several samples over common bins, side by side (generated models beside the anchors).
export function histogram(canvasId, series, { lo = 0, hi = 1, n = 10, xTitle = "" } = {}) {
  const shared = bins([], lo, hi, n).labels;
  return make(canvasId, {
    type: "bar",
    data: {
      labels: shared,
      datasets: series.map((s, i) => ({
        label: s.label, data: bins(s.values, lo, hi, n).counts, backgroundColor: COLOURS[i % COLOURS.length],
      })),
    },
    options: {
      scales: { x: { title: { display: !!xTitle, text: xTitle } }, y: { beginAtZero: true, ticks: { precision: 0 } } },
    },
  });
}

// One line per series over a shared x axis; series whose name says agreement/accuracy go on a 0..1 axis.
export function lines(canvasId, xs, series, { xTitle = "epoch", logLoss = false } = {}) {
  const isRate = (name) => /agree|acc|fraction/i.test(name);
  const anyRate = series.some((s) => isRate(s.label));
  return make(canvasId, {
    type: "line",
    data: {
      labels: xs,
      datasets: series.map((s, i) => ({
        label: s.label, data: s.values, borderColor: COLOURS[i % COLOURS.length],
        backgroundColor: COLOURS[i % COLOURS.length], pointRadius: 2, spanGaps: true,
        yAxisID: isRate(s.label) ? "rate" : "y",
        hidden: !!s.hidden, // still in the legend: one click shows it
      })),
    },
    options: {
      scales: {
        x: { title: { display: true, text: xTitle } },
        y: { display: series.some((s) => !isRate(s.label)), type: logLoss ? "logarithmic" : "linear",
          title: { display: true, text: "loss" } },
        rate: { display: anyRate, position: "right", min: 0, max: 1, grid: { drawOnChartArea: false },
          title: { display: true, text: "agreement / accuracy / fraction" } },
      },
    },
  });
}
