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
  return scatterSeriesWithDiagonal(canvasId, [{ label: "checkpoints", points }], { x, y });
}

// Several sets of dots on one 0..1 square with the diagonal drawn last; dataset i holds exactly
// series i's dots ({x, y, label}).
export function scatterSeriesWithDiagonal(canvasId, series, { x, y }) {
  const values = series.flatMap((s) => s.points.flatMap((p) => [p.x, p.y]));
  const lo = Math.min(0, ...values);
  const hi = Math.max(1, ...values);
  return make(canvasId, {
    type: "scatter",
    data: {
      datasets: [
        ...series.map((s, i) => ({ label: s.label, data: s.points, backgroundColor: COLOURS[i % COLOURS.length], pointRadius: 4 })),
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

// A colour for a value in 0..1 (test accuracy on the embedding map): viridis, dark to bright.
export const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
export function rampColour(t) {
  if (typeof t !== "number" || !Number.isFinite(t)) return "#9ca3af"; // unknown: grey
  const at = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(at));
  const [a, b] = [RAMP[i], RAMP[i + 1]].map((c) => [1, 3, 5].map((k) => parseInt(c.slice(k, k + 2), 16)));
  return `rgb(${a.map((v, k) => Math.round(v + (at - i) * (b[k] - v))).join(",")})`;
}
export const categoryColour = (i) => COLOURS[i % COLOURS.length];

// Points on a 2-D map (the embedding map's PC1/PC2). `layers`: [{label, points: [{x, y, label,
// colour?}], colour, radius, style}], one dataset each, in order (dataset i is layer i);
// `links`: [{label, pairs: [[from, to], ...], colour}], segments drawn beneath the points (an
// original and its reconstruction, an anchor and a model sampled around it). `onHover(point)`
// gets the hovered point, or null.
export function pointMap(canvasId, layers, links = [], { xTitle = "PC1", yTitle = "PC2", onHover } = {}) {
  const pointSets = layers.map((layer) => ({
    label: layer.label, data: layer.points, pointStyle: layer.style || "circle",
    backgroundColor: layer.points.map((p) => p.colour || layer.colour),
    borderColor: layer.border || "rgba(17,24,39,.35)", borderWidth: layer.border ? 1.5 : 0.5,
    pointRadius: layer.radius || 3.5, pointHoverRadius: (layer.radius || 3.5) + 2, order: 1,
  }));
  // A point without coordinates between pairs breaks the line (Chart.js skips it; a bare null it
  // cannot parse): one dataset draws every segment of a kind.
  const gap = { x: null, y: null };
  const linkSets = links.map((link) => ({
    label: link.label, data: link.pairs.flatMap(([a, b]) => [a, b, gap]), showLine: true, spanGaps: false,
    borderColor: link.colour, borderWidth: 1, pointRadius: 0, pointHitRadius: 0, order: 2, isLink: true,
  }));
  return make(canvasId, {
    type: "scatter",
    data: { datasets: [...pointSets, ...linkSets] },
    options: {
      scales: { x: { title: { display: true, text: xTitle } }, y: { title: { display: true, text: yTitle } } },
      plugins: {
        // One layer coloured point by point (test accuracy) has no single swatch: the page says its colours.
        legend: { display: pointSets.length + linkSets.length > 1 },
        tooltip: {
          filter: (item) => !item.dataset.isLink,
          callbacks: { label: (c) => c.raw.label ?? `(${c.raw.x.toFixed(3)}, ${c.raw.y.toFixed(3)})` },
        },
      },
      onHover: (_event, elements, chart) => {
        const hit = elements.find((e) => !chart.data.datasets[e.datasetIndex].isLink);
        if (onHover) onHover(hit ? chart.data.datasets[hit.datasetIndex].data[hit.index] : null);
      },
    },
  });
}
