// Zoos: each zoo's models and splits, and its accuracy by epoch.

import { get, request } from "../api.js";
import { lines } from "../charts.js";
import { flash, fmt, h, keyValueTable } from "../dom.js";

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

// Upload a zoo archive (.zip / .tar.gz): the service checks and unpacks it and answers with the
// import_zoo job, which is followed here until it ends (a link leads to the jobs page).
function uploadCard() {
  const picker = h("input", { type: "file", id: "zoo-archive-file", accept: ".zip,.tar.gz,.tgz,application/zip,application/gzip" });
  const name = h("input", { type: "text", id: "zoo-archive-name", placeholder: "name (default: the file's)" });
  const button = h("button", { type: "submit", id: "zoo-archive-upload" }, "Upload zoo archive");
  const status = h("p", { class: "upload-log", id: "zoo-archive-status" });
  const form = h("form", { class: "card", id: "zoo-archive-form" },
    h("h2", {}, "Upload a zoo"),
    h("p", { class: "meta" }, "A .zip or .tar.gz of a zoo in the public Model Zoos layout or zooscope's own; it becomes an import_zoo job."),
    h("div", { class: "row" }, picker, name, button), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const file = picker.files && picker.files[0];
    if (!file) { flash("choose a .zip or .tar.gz archive first"); return; }
    const body = new FormData();
    body.append("file", file, file.name);
    if (name.value.trim()) body.append("name", name.value.trim());
    button.disabled = true;
    status.className = "upload-log";
    status.textContent = `uploading ${file.name}…`;
    try {
      const job = await request("POST", "/zoos/archives", { form: body });
      status.replaceChildren(`import job `, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "mono" }, job.id), `: ${job.state}`);
      status.dataset.jobId = job.id;
      await follow(job, status);
    } catch (err) {
      status.className = "upload-log error";
      status.textContent = `${file.name}: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

async function follow(job, status) {
  let current = job;
  while (!["succeeded", "failed", "cancelled"].includes(current.state)) {
    if (!status.isConnected) return; // the user left the page: stop following
    current = await get(`/jobs/${encodeURIComponent(job.id)}?wait=20`);
    const pct = Math.round(100 * (current.progress || 0));
    status.lastChild.textContent = `: ${current.state} ${pct}% ${current.message || ""}`;
  }
  status.dataset.state = current.state;
  status.className = `upload-log ${current.state === "succeeded" ? "ok" : "error"}`;
  if (current.state !== "succeeded") {
    status.lastChild.textContent = `: ${current.state}: ${current.error || ""}`;
    return;
  }
  const report = await get(`/jobs/${encodeURIComponent(job.id)}/report`);
  const skipped = (report.skipped || []).length;
  status.lastChild.textContent = `: succeeded, zoo ${report.zoo_id}${skipped ? ` (${skipped} models skipped)` : ""}; reload the page to see it`;
}

export async function render(view) {
  const page = await get("/zoos");
  view.append(h("h1", {}, "Zoos"), uploadCard());
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
