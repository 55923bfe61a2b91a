// Zoos: each zoo's models and splits, and its accuracy by epoch.

import { get } from "../api.js";
import { lines } from "../charts.js";
import { fmt, h, keyValueTable } from "../dom.js";

// The accuracy-by-epoch shape is read defensively: a list of {epoch, mean, ...} rows, a dict
// {epoch: number | {mean, ...}}, or columns {epochs: [...], mean: [...], ...}.
export function epochSeries(byEpoch) {
  let rows = [];
  if (Array.isArray(byEpoch)) rows = byEpoch.map((r, i) => (typeof r === "number" ? { epoch: i, mean: r } : r));
  else if (byEpoch && Array.isArray(byEpoch.epochs || byEpoch.epoch)) {
    const epochs = byEpoch.epochs || byEpoch.epoch;
    rows = epochs.map((e, i) => Object.fromEntries([["epoch", e],
      ...Object.entries(byEpoch).filter(([, v]) => Array.isArray(v) && v !== epochs).map(([k, v]) => [k, v[i]])]));
  } else if (byEpoch && typeof byEpoch === "object") {
    rows = Object.entries(byEpoch).map(([e, v]) => (typeof v === "number" ? { epoch: Number(e), mean: v } : { epoch: Number(e), ...v }));
  }
  rows.sort((a, b) => a.epoch - b.epoch);
  const names = [...new Set(rows.flatMap((r) => Object.keys(r)))]
    .filter((k) => k !== "epoch" && rows.some((r) => typeof r[k] === "number"));
  return { epochs: rows.map((r) => r.epoch), series: names.map((k) => ({ label: k, values: rows.map((r) => r[k] ?? null) })) };
}

// The zoo's summary nests its accuracy-by-epoch somewhere (summary.accuracy.by_epoch, summary.accuracy_by_epoch,
// ...): take the first key that names epochs, searching breadth-first.
export function findByEpoch(obj) {
  const queue = [obj];
  while (queue.length) {
    const node = queue.shift();
    if (!node || typeof node !== "object" || Array.isArray(node)) continue;
    for (const [k, v] of Object.entries(node)) if (/(by|per)_?epoch/i.test(k) && v && typeof v === "object") return v;
    queue.push(...Object.values(node));
  }
  return null;
}

// Scalars of the summary (models, diverged, last epoch...) and the accuracy at the last epoch.
function summaryFigures(summary, byEpoch) {
  const acc = summary.accuracy || summary.accuracy_summary || {};
  const figures = Object.fromEntries(Object.entries(summary).filter(([, v]) => typeof v === "number"));
  for (const [k, v] of Object.entries(typeof acc === "object" ? acc : {})) if (typeof v === "number") figures[`accuracy ${k}`] = v;
  const { epochs, series } = epochSeries(byEpoch);
  if (!Object.keys(acc).length && epochs.length) {
    for (const s of series) if (s.label !== "count") figures[`test acc. ${s.label} (epoch ${epochs.at(-1)})`] = s.values.at(-1);
  }
  return figures;
}

// A count of models is not an accuracy: it stays in the table, out of the chart.
const NOT_PLOTTED = new Set(["count", "n", "std"]);

function countOf(v) {
  return Array.isArray(v) ? v.length : (v && typeof v === "object" ? Object.keys(v).length : v);
}

export async function render(view) {
  const page = await get("/zoos");
  view.append(h("h1", {}, "Zoos"));
  if (!(page.items || []).length) view.append(h("p", {}, "No zoos yet: a build_zoo or import_zoo job makes one."));
  for (const item of page.items || []) {
    const zoo = await get(`/zoos/${encodeURIComponent(item.id)}`);
    const canvasId = `zoo-accuracy-${zoo.id}`;
    const summary = zoo.summary || {};
    const models = zoo.n_models ?? countOf(summary.models ?? zoo.models);
    const rawSplits = summary.splits || summary.models_per_split || zoo.splits;
    const splits = rawSplits && typeof rawSplits === "object"
      ? Object.fromEntries(Object.entries(rawSplits).map(([k, v]) => [k, countOf(v)])) : {};
    const arch = zoo.architecture && typeof zoo.architecture === "object"
      ? `${zoo.architecture.family} ${zoo.architecture.in_channels}×${zoo.architecture.image_size}²` : zoo.architecture;
    view.append(h("section", { class: "card zoo", dataset: { zooId: zoo.id } },
      h("h2", {}, zoo.name || `zoo ${zoo.id}`),
      h("p", { class: "meta" }, [arch, zoo.dataset, models !== undefined ? `${models} models` : null]
        .filter(Boolean).map(fmt).join(" · ")),
      h("div", { class: "row" }, keyValueTable(splits, "splits"), keyValueTable(summaryFigures(summary, findByEpoch(zoo)), "summary")),
      h("div", { class: "canvas-box" }, h("canvas", { id: canvasId }))));
    const { epochs, series } = epochSeries(findByEpoch(zoo));
    const plotted = series.filter((s) => !NOT_PLOTTED.has(s.label)).map((s) => ({ ...s, label: `accuracy ${s.label}` }));
    if (epochs.length) lines(canvasId, epochs, plotted);
  }
  return null;
}
