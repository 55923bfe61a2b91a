// Tiny DOM and formatting helpers, so pages read as markup rather than createElement calls.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function fmt(value, digits = 3) {
  if (value === undefined || value === null || Number.isNaN(value)) return "–";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString();
}

export function fmtSeconds(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function fmtDuration(startIso, endIso) {
  if (!startIso) return "–";
  const end = endIso ? new Date(endIso) : new Date();
  return fmtSeconds(Math.max(0, (end - new Date(startIso)) / 1000));
}

// The time left of a running job, as the service estimated it (eta_s); blank otherwise.
export function fmtEta(job) {
  if (job.state !== "running" || job.eta_s == null) return "";
  return `${fmtSeconds(job.eta_s)} left`;
}

export function flash(message, kind = "error") {
  const el = document.getElementById("flash");
  el.textContent = message;
  el.className = kind;
  el.hidden = !message;
}

export function keyValueTable(obj, caption) {
  const rows = Object.entries(obj || {}).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, fmt(v, 4))));
  return h("table", { class: "kv" }, caption ? h("caption", {}, caption) : null, h("tbody", {}, rows));
}

export const mean = (xs) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
export const numbers = (xs) => (xs || []).filter((x) => typeof x === "number" && Number.isFinite(x));

// Ids are UUIDs: eight characters tell rows apart on screen; the whole id stays in the tooltip.
export function shortId(id) {
  const text = String(id ?? "–");
  return h("span", { class: "mono", title: text }, text.length > 12 ? text.slice(0, 8) : text);
}

// {metric: {mean, std, max}} reads best as a matrix: a row a metric, a column a statistic. Scalars
// and deeper nesting fall back to a flat key/value row.
export function statsTable(obj, caption) {
  const entries = Object.entries(obj || {});
  const stats = [...new Set(entries.flatMap(([, v]) => (v && typeof v === "object" && !Array.isArray(v) ? Object.keys(v) : [])))];
  const head = h("tr", {}, h("th", {}, ""), stats.map((s) => h("th", {}, s)));
  const rows = entries.map(([k, v]) => (v && typeof v === "object" && !Array.isArray(v)
    ? h("tr", {}, h("th", {}, k), stats.map((s) => h("td", {}, fmt(v[s], 4))))
    : h("tr", {}, h("th", {}, k), h("td", { colspan: Math.max(1, stats.length) }, fmt(v, 4)))));
  return h("table", { class: "kv stats" }, caption ? h("caption", {}, caption) : null, h("thead", {}, head), h("tbody", {}, rows));
}
