// A job's report: fidelity of reconstructions (aggregate, scatter, agreement histogram, table with
// downloads) or, for generate, generated accuracies beside the anchors' and the diversity figures;
// both on the embedding map when placed on one; an embedding_map job's map and prediction (maps.js).

import { download, downloadUrl, get } from "../api.js";
import { histogram, scatterWithDiagonal } from "../charts.js";
import { flash, fmt, fmtDuration, h, keyValueTable, mean, numbers, shortId, statsTable } from "../dom.js";
import { renderMapReport, renderPlacedOnMap } from "../maps.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const PLACED_ON_MAP = new Set(["reconstruct", "generate"]); // their reports carry embedding_map

// Aggregate names may shift between API versions (agreement_mean, mean_agreement, {agreement: {mean}}):
// try them all, and fall back to computing the mean from the items.
export function aggregateMean(aggregate, items, metric) {
  const a = aggregate || {};
  const candidates = [a[metric]?.mean, a[`${metric}_mean`], a[`mean_${metric}`], a[`${metric}.mean`],
    typeof a[metric] === "number" ? a[metric] : undefined];
  const found = candidates.find((v) => typeof v === "number");
  return found !== undefined ? found : mean(numbers((items || []).map((i) => i[metric])));
}

function card(label, value, id) {
  return h("div", { class: "figure", id }, h("div", { class: "value" }, fmt(value)), h("div", { class: "label" }, label));
}

function canvasBox(id, title) {
  return h("div", { class: "chart card" }, h("h3", {}, title), h("div", { class: "canvas-box" }, h("canvas", { id })));
}

function downloadLink(id) {
  if (id === undefined || id === null) return "–";
  const a = h("a", { href: downloadUrl(id), class: "download", dataset: { checkpointId: id } }, "safetensors");
  a.addEventListener("click", (event) => {
    event.preventDefault(); // the Bearer key cannot ride on a plain link
    download(id).catch((err) => flash(err.message));
  });
  return a;
}

function renderReconstruction(view, report) {
  const items = report.items || [];
  const agg = report.aggregate || {};
  view.append(
    h("div", { class: "figures" },
      card("mean agreement", aggregateMean(agg, items, "agreement"), "fig-agreement"),
      card("original accuracy", aggregateMean(agg, items, "original_accuracy"), "fig-original"),
      card("reconstructed accuracy", aggregateMean(agg, items, "reconstructed_accuracy"), "fig-reconstructed"),
      card("structural distance", aggregateMean(agg, items, "structural_distance"), "fig-structural")),
    h("div", { class: "charts" },
      canvasBox("scatter-plot", "Original vs reconstructed accuracy"),
      canvasBox("agreement-histogram", "Agreement of predictions")),
    h("h2", {}, "Per checkpoint"),
    h("table", { class: "data", id: "report-items" },
      h("thead", {}, h("tr", {}, ["checkpoint", "original acc.", "reconstructed acc.", "agreement",
        "structural dist.", "behavioural dist.", "reconstruction"].map((t) => h("th", {}, t)))),
      h("tbody", {}, items.map((i) => h("tr", { dataset: { checkpointId: i.checkpoint_id } },
        h("td", {}, shortId(i.checkpoint_id)), h("td", {}, fmt(i.original_accuracy)),
        h("td", {}, fmt(i.reconstructed_accuracy)), h("td", {}, fmt(i.agreement)),
        h("td", {}, fmt(i.structural_distance)), h("td", {}, fmt(i.behavioural_distance)),
        h("td", {}, downloadLink(i.reconstruction_id)))))),
    h("details", {}, h("summary", {}, "All aggregate figures"), statsTable(agg)),
  );
  const points = items
    .filter((i) => typeof i.original_accuracy === "number" && typeof i.reconstructed_accuracy === "number")
    .map((i) => ({ x: i.original_accuracy, y: i.reconstructed_accuracy, label: String(i.checkpoint_id) }));
  scatterWithDiagonal("scatter-plot", points);
  histogram("agreement-histogram", [{ label: "checkpoints", values: numbers(items.map((i) => i.agreement)) }],
    { xTitle: "agreement" });
}

// Generated models: [{checkpoint_id, accuracy}] in the contract, generated_ids beside accuracies in
// the worker's report; both are read.
export function generatedRows(report) {
  if (Array.isArray(report.generated)) return report.generated;
  const ids = report.generated_ids || [];
  return (report.accuracies || []).map((accuracy, i) => ({ checkpoint_id: ids[i], accuracy }));
}

function comparisonTable(generated, anchors) {
  const stats = [...new Set([...Object.keys(generated || {}), ...Object.keys(anchors || {})])]
    .filter((k) => typeof (generated || {})[k] === "number" || typeof (anchors || {})[k] === "number");
  return h("table", { class: "kv", id: "accuracy-comparison" }, h("caption", {}, "accuracy"),
    h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "generated"), h("th", {}, "anchors"))),
    h("tbody", {}, stats.map((k) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(generated?.[k])), h("td", {}, fmt(anchors?.[k]))))));
}

function renderGeneration(view, report) {
  const rows = generatedRows(report);
  const generated = numbers(rows.map((g) => g.accuracy));
  // Per-anchor accuracies when the report has them; otherwise the anchors' summary is the comparison.
  const anchorAccuracies = numbers(report.anchors?.accuracies || []);
  const anchorSummary = report.anchors?.accuracy || (anchorAccuracies.length ? { mean: mean(anchorAccuracies) } : {});
  const generatedSummary = report.accuracy || { mean: mean(generated) };
  const diversity = report.diversity || {};
  const groups = Object.entries(diversity).filter(([, v]) => v && typeof v === "object");
  const scalars = Object.fromEntries(Object.entries(diversity).filter(([, v]) => !v || typeof v !== "object"));
  if (Object.keys(scalars).length) groups.push(["overall", scalars]);
  const series = [{ label: "generated", values: generated }];
  if (anchorAccuracies.length) series.push({ label: "anchors", values: anchorAccuracies });
  view.append(
    h("div", { class: "figures" },
      card("generated models", rows.length, "fig-generated"),
      card("mean generated accuracy", generatedSummary.mean ?? mean(generated), "fig-generated-acc"),
      card("mean anchor accuracy", anchorSummary.mean, "fig-anchor-acc"),
      card("anchors", report.anchors?.count ?? (anchorAccuracies.length || null), "fig-anchors")),
    h("div", { class: "charts" },
      canvasBox("generation-histogram", anchorAccuracies.length ? "Accuracy: generated vs anchors" : "Accuracy of generated models"),
      h("div", { class: "card" }, comparisonTable(generatedSummary, anchorSummary),
        report.anchors ? keyValueTable(Object.fromEntries(Object.entries(report.anchors)
          .filter(([, v]) => typeof v !== "object")), "anchors") : null)),
    h("h2", {}, "Diversity"),
    h("div", { class: "row", id: "diversity" }, groups.map(([name, values]) => keyValueTable(values, name))),
    h("h2", {}, "Generated models"),
    h("table", { class: "data", id: "generated-items" },
      h("thead", {}, h("tr", {}, h("th", {}, "checkpoint"), h("th", {}, "accuracy"), h("th", {}, "download"))),
      h("tbody", {}, rows.map((g) => h("tr", {},
        h("td", {}, shortId(g.checkpoint_id)), h("td", {}, fmt(g.accuracy)), h("td", {}, downloadLink(g.checkpoint_id)))))),
  );
  histogram("generation-histogram", series, { xTitle: "accuracy" });
}

// Embeddings: {embeddings: [...]} in the contract, {dim, items: [{checkpoint_id, embedding}]} from the worker.
function renderEmbeddings(view, report) {
  const embeddings = report.embeddings || report.items || [];
  const first = embeddings[0];
  const vector = Array.isArray(first) ? first : first?.embedding;
  view.append(h("div", { class: "figures" }, card("embeddings", embeddings.length, "fig-embeddings"),
    card("width", report.dim ?? vector?.length, "fig-width")));
}

// Kinds without a dedicated view (build_zoo, train_autoencoder, import_zoo): the stored JSON, readable.
function renderRaw(view, report) {
  const text = JSON.stringify(report, null, 2);
  const limit = 50_000; // a browser tab should not freeze on a huge report
  view.append(h("pre", { class: "raw-report" }, text.length > limit ? `${text.slice(0, limit)}\n…` : text));
}

export async function render(view, jobId) {
  const job = await get(`/jobs/${encodeURIComponent(jobId)}`);
  view.append(h("p", {}, h("a", { href: "#/jobs" }, "← all jobs")),
    h("h1", {}, "Report of job ", shortId(job.id)),
    h("p", { class: "meta", id: "report-meta", dataset: { state: job.state } },
      `${job.kind} · ${job.state} · ${fmtDuration(job.started_at, job.finished_at)}`));
  if (!TERMINAL.has(job.state)) {
    // Come back when it is done rather than show an empty report.
    const timer = setTimeout(() => window.dispatchEvent(new HashChangeEvent("hashchange")), 1000);
    view.append(h("p", {}, `The job is ${job.state} (${Math.round(100 * (job.progress || 0))}%)…`));
    return () => clearTimeout(timer);
  }
  if (job.state !== "succeeded") {
    view.append(h("p", { class: "error" }, job.error ? fmt(job.error) : `The job was ${job.state}.`));
    return null;
  }
  const report = await get(`/jobs/${encodeURIComponent(jobId)}/report`);
  const firstItem = (report.items || [])[0];
  if (report.projection && Array.isArray(report.points)) renderMapReport(view, report);
  else if (Array.isArray(report.generated) || Array.isArray(report.generated_ids)) renderGeneration(view, report);
  else if (Array.isArray(report.embeddings) || (firstItem && "embedding" in firstItem)) renderEmbeddings(view, report);
  else if (Array.isArray(report.items) || report.aggregate) renderReconstruction(view, report);
  else renderRaw(view, report);
  if (PLACED_ON_MAP.has(job.kind)) await renderPlacedOnMap(view, report, job.kind);
  return null;
}
