// Autoencoders: training curves of every loss term, the evaluation summary, which one is the
// default, a button to make another the default, and the weight-space map (maps.js).

import { get, post } from "../api.js";
import { lines } from "../charts.js";
import { flash, h, keyValueTable, statsTable } from "../dom.js";
import { renderMapCard } from "../maps.js";

// Bookkeeping in the log (timings, learning rate, loss weights, normalisers) is not a training curve.
const NOT_CURVES = /^(beta|gamma|lr|learning_rate|steps?)$|seconds|time|normali[sz]er/i;

// training_log is a list of per-epoch dicts, or wraps one ({epochs: [...]}); every numeric key but
// the epoch becomes a curve.
export function trainingCurves(log) {
  const wrapped = log && !Array.isArray(log) ? Object.values(log).find(Array.isArray) : null;
  const rows = (Array.isArray(log) ? log : wrapped || []).filter((r) => r && typeof r === "object").map((r) => flat(r));
  const epochs = rows.map((r, i) => r.epoch ?? i);
  const names = [...new Set(rows.flatMap((r) => Object.keys(r)))]
    .filter((k) => k !== "epoch" && !NOT_CURVES.test(k) && rows.some((r) => typeof r[k] === "number"));
  // Collapse diagnostics matter when something went wrong; they start hidden to keep the curves legible.
  return { epochs, series: names.map((k) => ({ label: k, hidden: /constant_fraction/.test(k),
    values: rows.map((r) => (typeof r[k] === "number" ? r[k] : null)) })) };
}

function flat(obj, prefix = "") {
  return Object.entries(obj || {}).reduce((acc, [k, v]) => (v && typeof v === "object" && !Array.isArray(v)
    ? { ...acc, ...flat(v, `${prefix}${k}.`) } : { ...acc, [`${prefix}${k}`]: v }), {});
}

export async function render(view) {
  const page = await get("/autoencoders");
  view.append(h("h1", {}, "Autoencoders"));
  if (!(page.items || []).length) view.append(h("p", {}, "No autoencoders yet: a train_autoencoder job makes one."));
  for (const item of page.items || []) {
    const ae = await get(`/autoencoders/${encodeURIComponent(item.id)}`);
    const canvasId = `ae-curves-${ae.id}`;
    const button = h("button", { class: "make-default", disabled: ae.is_default }, ae.is_default ? "default" : "Make default");
    button.addEventListener("click", async () => {
      try {
        await post(`/autoencoders/${encodeURIComponent(ae.id)}/default`);
        window.dispatchEvent(new HashChangeEvent("hashchange")); // redraw: the old default lost its badge
      } catch (err) {
        flash(err.message);
      }
    });
    view.append(h("section", { class: "card autoencoder", dataset: { autoencoderId: ae.id, isDefault: String(!!ae.is_default) } },
      h("div", { class: "row spread" },
        h("h2", {}, ae.name || `autoencoder ${ae.id}`, ae.is_default ? h("span", { class: "badge" }, "default") : null),
        button),
      h("div", { class: "canvas-box" }, h("canvas", { id: canvasId })),
      h("div", { class: "row" }, statsTable(ae.evaluation || ae.evaluation_summary, "evaluation"),
        h("details", {}, h("summary", {}, "configuration"), keyValueTable(flat(ae.config))))));
    const { epochs, series } = trainingCurves(ae.training_log);
    // Loss terms differ by orders of magnitude: a log axis keeps the small ones visible when all are positive.
    const losses = series.filter((x) => !/agree|acc|fraction/i.test(x.label)).flatMap((x) => x.values);
    const logLoss = losses.length > 0 && losses.every((v) => v === null || v > 0);
    if (epochs.length) lines(canvasId, epochs, series, { logLoss });
    // The card just appended gets the weight-space map; a failing map does not hide the other cards.
    await renderMapCard(view.lastElementChild, ae.id).catch((err) => flash(err.message));
  }
  return null;
}
