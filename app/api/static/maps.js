// The weight space as a picture: an autoencoder's embedding map (every checkpoint of its zoo on
// the first two principal components of the embeddings, coloured by test accuracy, init, epoch
// or split, filtered by init and epoch) and the probes' predicted against true test accuracy.
// Maps are made by embedding_map jobs and read from /embedding-maps; reconstruct and generate
// reports carry their models' places on one (report.embedding_map).

import { get, idempotencyKey, post, query } from "./api.js";
import { RAMP, categoryColour, pointMap, rampColour, scatterSeriesWithDiagonal } from "./charts.js";
import { flash, fmt, h, shortId } from "./dom.js";

const PAGE = 10_000; // the API's largest page of points (app/api/routes/embedding_maps.py)
const GREY = "rgba(156,163,175,.45)";
const COLOUR_BY = { test_acc: "test accuracy", init: "init", epoch: "epoch", split: "split" };

export async function latestMapId(autoencoderId) {
  const page = await get(`/embedding-maps${query({ autoencoder_id: autoencoderId, limit: 1 })}`);
  return page.items?.[0]?.id ?? null;
}

async function allPages(path, field) {
  const first = await get(`${path}${query({ limit: PAGE })}`);
  const items = [...first[field].items];
  while (items.length < first[field].total) {
    const next = await get(`${path}${query({ limit: PAGE, offset: items.length })}`);
    if (!next[field].items.length) break;
    items.push(...next[field].items);
  }
  return { ...first, [field]: items };
}

// A map with every point (the API pages them).
export const loadMap = (mapId) => allPages(`/embedding-maps/${encodeURIComponent(mapId)}`, "points");

// The map's prediction, or null when its zoo could not train a probe.
export async function loadPrediction(mapId) {
  try {
    return await allPages(`/embedding-maps/${encodeURIComponent(mapId)}/property-prediction`, "items");
  } catch (err) {
    if (err.status === 404) return null;
    throw err;
  }
}

function percent(v) {
  return typeof v === "number" ? `${(100 * v).toFixed(1)} % of variance` : "variance undefined";
}

export function axisTitles(projection) {
  const ratio = projection?.explained_variance_ratio || [];
  return { xTitle: `PC1 (${percent(ratio[0])})`, yTitle: `PC2 (${percent(ratio[1])})` };
}

const pointLabel = (p) => `${p.checkpoint} · ${p.init} · epoch ${p.epoch} · ${p.split} · test acc. ${fmt(p.test_acc)}`;

function hoverLine(key) {
  return h("p", { class: "map-hover meta", id: `map-hover-${key}` }, "Hover a point to name its checkpoint.");
}

function showHover(key, point) {
  const line = document.getElementById(`map-hover-${key}`);
  if (line) line.textContent = point ? point.label : "Hover a point to name its checkpoint.";
}

function select(id, label, options) {
  const el = h("select", { id }, options.map(([value, text]) => h("option", { value }, text)));
  return [h("label", {}, `${label} `, el), el];
}

function accuracyLegend() {
  return h("div", { class: "ramp-legend" }, h("span", {}, "test accuracy 0"),
    h("span", { class: "ramp", style: `background: linear-gradient(to right, ${RAMP.join(", ")})` }), h("span", {}, "1"));
}

function mapCaption(projection, what) {
  return h("p", { class: "meta" }, `${what} Each checkpoint is placed by its embedding (the mean of its token latents) `
    + `on the first two principal components of the zoo's embeddings: ${axisTitles(projection).xTitle}, `
    + `${axisTitles(projection).yTitle}.`);
}

// The zoo's map with its controls: colour by test accuracy (default), init, epoch or split; show
// one init, one epoch, or all. `section.dataset.shown` is the number of points drawn.
export function renderZooMap(container, key, map, points) {
  const canvasId = `embedding-map-${key}`;
  const inits = [...new Set(points.map((p) => p.init))].sort();
  const epochs = [...new Set(points.map((p) => p.epoch))].sort((a, b) => a - b);
  const [colourLabel, colourBy] = select(`map-colour-${key}`, "colour by", Object.entries(COLOUR_BY));
  const [initLabel, init] = select(`map-init-${key}`, "init", [["", "all"], ...inits.map((i) => [i, i])]);
  const [epochLabel, epoch] = select(`map-epoch-${key}`, "epoch", [["", "all"], ...epochs.map((e) => [String(e), String(e)])]);
  const legend = h("div", { class: "map-legend" });
  const section = h("div", { class: "embedding-map", dataset: { mapId: map.id ?? "" } },
    h("h3", {}, "Embedding map"),
    mapCaption(map.projection, `${points.length} checkpoints of the zoo.`),
    h("div", { class: "row map-controls" }, colourLabel, initLabel, epochLabel, legend),
    h("div", { class: "canvas-box map-box" }, h("canvas", { id: canvasId })),
    hoverLine(key));
  container.append(section);

  const draw = () => {
    const shown = points.filter((p) => (!init.value || p.init === init.value) && (!epoch.value || String(p.epoch) === epoch.value))
      .map((p) => ({ x: p.x, y: p.y, label: pointLabel(p), point: p }));
    const by = colourBy.value;
    let layers;
    if (by === "test_acc") {
      layers = [{ label: "checkpoints", points: shown.map((p) => ({ ...p, colour: rampColour(p.point.test_acc) })) }];
      legend.replaceChildren(accuracyLegend());
    } else {
      const values = [...new Set(points.map((p) => p[by]))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      layers = values.map((v, i) => ({ label: `${COLOUR_BY[by]} ${v}`, colour: categoryColour(i), points: shown.filter((p) => p.point[by] === v) }));
      legend.replaceChildren();
    }
    section.dataset.shown = String(shown.length);
    pointMap(canvasId, layers, [], { ...axisTitles(map.projection), onHover: (p) => showHover(key, p) });
  };
  for (const control of [colourBy, init, epoch]) control.addEventListener("change", draw);
  draw();
  return section;
}

// Predicted against true test accuracy on the test split, both probes, with their R^2.
export function renderPrediction(container, key, prediction) {
  const probes = prediction.probes || {};
  const items = prediction.items || [];
  const r2 = (kind) => probes[kind]?.r2_test;
  const kinds = [["embedding", "embedding probe"], ["weight_statistics", "weight-statistics baseline"]];
  container.append(h("div", { class: "prediction" },
    h("h3", {}, "Property prediction: test accuracy"),
    h("p", { class: "meta" }, `Predicted against true test accuracy of the zoo's ${items.length} ${prediction.split}-split `
      + "checkpoints, by a ridge probe on the autoencoder's embedding and, as the baseline, on simple statistics of "
      + "each layer's weights (both fitted on the train split, regulariser chosen on validation)."),
    h("div", { class: "figures" }, kinds.map(([kind, label]) => h("div", { class: "figure", id: `r2-${kind}-${key}` },
      h("div", { class: "value" }, fmt(r2(kind))), h("div", { class: "label" }, `R² ${label}`)))),
    h("div", { class: "canvas-box" }, h("canvas", { id: `prediction-plot-${key}` }))));
  scatterSeriesWithDiagonal(`prediction-plot-${key}`, kinds.map(([kind, label]) => ({
    label: `${label} (R² ${fmt(r2(kind))})`,
    points: items.filter((i) => typeof i.true === "number" && typeof i[kind] === "number")
      .map((i) => ({ x: i.true, y: i[kind], label: i.checkpoint })),
  })), { x: "true test accuracy", y: "predicted test accuracy" });
}

// A reconstruct or generate report's models on the map they were placed on, the zoo in grey.
function overlay(placed, kind) {
  const xy = (p) => ({ x: p.x, y: p.y });
  if (kind === "reconstruct") {
    const items = placed.items || [];
    const originals = items.map((i) => ({ ...xy(i.original), label: `original ${i.checkpoint_id}` }));
    const rebuilt = items.map((i) => ({ ...xy(i.reconstruction), label: `reconstruction of ${i.checkpoint_id}` }));
    return {
      layers: [{ label: "originals", colour: categoryColour(0), points: originals, radius: 5, border: "#1e3a8a" },
        { label: "reconstructions", colour: categoryColour(1), points: rebuilt, radius: 6, style: "triangle", border: "#7f1d1d" }],
      links: [{ label: "original → reconstruction", colour: "#4b5563", pairs: items.map((_, i) => [originals[i], rebuilt[i]]) }],
      what: `${items.length} originals (circles) and their reconstructions (triangles), each pair joined,`,
    };
  }
  const anchors = (placed.anchors || []).map((a) => ({ ...xy(a), label: `anchor ${a.checkpoint ?? ""} · acc. ${fmt(a.accuracy)}` }));
  const generated = (placed.generated || []).map((g) => ({ ...xy(g), anchor: g.anchor,
    label: `generated ${g.checkpoint_id ?? ""} · acc. ${fmt(g.accuracy)}` }));
  return {
    layers: [{ label: "anchors", colour: categoryColour(2), points: anchors, radius: 5, border: "#14532d" },
      { label: "generated", colour: categoryColour(4), points: generated, radius: 6, style: "rectRot", border: "#3b0764" }],
    links: [{ label: "anchor → generated", colour: "#4b5563",
      pairs: generated.filter((g) => anchors[g.anchor]).map((g) => [anchors[g.anchor], g]) }],
    what: `${generated.length} generated models (diamonds), each joined to the anchor its sample was drawn around (circles),`,
  };
}

export async function renderPlacedOnMap(container, report, kind) {
  const placed = report.embedding_map;
  const section = h("div", { class: "card placed-on-map" }, h("h2", {}, "On the embedding map"));
  container.append(section);
  if (!placed) {
    section.append(h("p", { class: "meta", id: "no-map" }, "Not placed on a map: the autoencoder had no embedding map when "
      + "this job ran. Compute one on the Autoencoders page (an embedding_map job), then run the job again."));
    return;
  }
  const map = await loadMap(placed.map_id);
  const { layers, links, what } = overlay(placed, kind);
  const zoo = { label: "zoo checkpoints", colour: GREY, radius: 2.5,
    points: map.points.map((p) => ({ x: p.x, y: p.y, label: pointLabel(p) })) };
  section.append(mapCaption(map.projection, `${what} over the ${map.points.length} checkpoints of the zoo (grey).`),
    h("p", { class: "meta" }, "Map of job ", h("a", { href: `#/jobs/${encodeURIComponent(map.id)}` }, shortId(map.id)), "."),
    h("div", { class: "canvas-box map-box" }, h("canvas", { id: "embedding-map-report" })), hoverLine("report"));
  pointMap("embedding-map-report", [zoo, ...layers], links, { ...axisTitles(map.projection), onHover: (p) => showHover("report", p) });
}

// An embedding_map job's own report: the map and the prediction, straight from the report.
export function renderMapReport(view, report) {
  const points = report.points || [];
  const ratio = report.projection?.explained_variance_ratio || [];
  const probes = report.prediction?.probes || {};
  const card = (label, value, id) => h("div", { class: "figure", id }, h("div", { class: "value" }, fmt(value)), h("div", { class: "label" }, label));
  view.append(h("div", { class: "figures" },
    card("checkpoints on the map", points.length, "fig-map-points"),
    card("PC1 share of variance", ratio[0], "fig-pc1"), card("PC2 share of variance", ratio[1], "fig-pc2"),
    card("R² embedding probe", probes.embedding?.r2_test, "fig-r2-embedding"),
    card("R² weight statistics", probes.weight_statistics?.r2_test, "fig-r2-weights")));
  const box = h("div", { class: "card" });
  view.append(box);
  renderZooMap(box, "report", report, points);
  if (report.prediction) renderPrediction(box, "report", report.prediction);
}

// The Autoencoders page's card: the latest map and prediction of an autoencoder, or a button
// that submits the embedding_map job and draws the map when it has succeeded.
export async function renderMapCard(container, autoencoderId) {
  const box = h("div", { class: "weight-space", dataset: { autoencoderId } });
  container.append(box);
  const mapId = await latestMapId(autoencoderId);
  if (mapId) {
    const [map, prediction] = await Promise.all([loadMap(mapId), loadPrediction(mapId)]);
    renderZooMap(box, autoencoderId, map, map.points);
    box.append(h("p", { class: "meta" }, "Map of job ", h("a", { href: `#/jobs/${encodeURIComponent(mapId)}` }, shortId(mapId)),
      "; a newer embedding_map job replaces it here."));
    if (prediction) renderPrediction(box, autoencoderId, prediction);
    return;
  }
  const status = h("p", { class: "meta" }, "No embedding map yet: an embedding_map job encodes every checkpoint of the zoo, "
    + "places it on the first two principal components and fits the accuracy probes.");
  const button = h("button", { class: "make-map" }, "Compute the embedding map");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      let job = await post("/jobs", { kind: "embedding_map", params: { autoencoder_id: autoencoderId } },
        { "Idempotency-Key": idempotencyKey() });
      while (!["succeeded", "failed", "cancelled"].includes(job.state)) {
        if (!box.isConnected) return; // the page was left: stop following
        status.textContent = `embedding_map job ${job.id}: ${job.state} ${Math.round(100 * (job.progress || 0))}%`;
        job = await get(`/jobs/${encodeURIComponent(job.id)}?wait=20`);
      }
      if (job.state !== "succeeded") throw new Error(`the embedding_map job ${job.state}: ${job.error || ""}`);
      box.remove(); // drawn again, now with the map
      await renderMapCard(container, autoencoderId);
    } catch (err) {
      flash(err.message);
      button.disabled = false;
    }
  });
  box.append(h("h3", {}, "Embedding map"), status, button);
}
