// Entry point: hash routing, the API-key field, and page lifecycle (each page may return a cleanup
// function, which the router calls on leaving so that no polling outlives its page).

import { getKey, setKey } from "./api.js";
import { destroyAll } from "./charts.js";
import * as defaults from "./defaults.js";
import { flash } from "./dom.js";
import * as autoencoders from "./pages/autoencoders.js";
import * as checkpoints from "./pages/checkpoints.js";
import * as jobs from "./pages/jobs.js";
import * as report from "./pages/report.js";
import * as zoos from "./pages/zoos.js";

const routes = [
  [/^#\/jobs\/([^/]+)$/, report, "jobs"],
  [/^#\/jobs$/, jobs, "jobs"],
  [/^#\/checkpoints$/, checkpoints, "checkpoints"],
  [/^#\/zoos$/, zoos, "zoos"],
  [/^#\/autoencoders$/, autoencoders, "autoencoders"],
];

let cleanup = null;
let generation = 0; // a slow page that finishes after the user moved on must not draw over the new one

async function route() {
  const hash = location.hash || "#/jobs";
  const match = routes.find(([re]) => re.test(hash));
  if (!match) {
    location.hash = "#/jobs";
    return;
  }
  const [re, page, nav] = match;
  const args = hash.match(re).slice(1).map(decodeURIComponent);
  if (cleanup) cleanup();
  cleanup = null;
  destroyAll();
  flash("");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === nav);
  const view = document.getElementById("view");
  view.replaceChildren();
  view.dataset.page = nav;
  const mine = ++generation;
  try {
    const result = await page.render(view, ...args);
    if (mine === generation) cleanup = result || null;
    else if (result) result();
  } catch (err) {
    if (mine === generation) flash(err.status === 401 ? `${err.message} — set the API key above.` : err.message);
  }
}

let refreshDefaults = () => {};

function initKeyField() {
  const field = document.getElementById("api-key");
  field.value = getKey();
  field.addEventListener("change", () => {
    setKey(field.value.trim());
    refreshDefaults();
    route(); // reload the page's data with the new credentials
  });
}

initKeyField();
refreshDefaults = defaults.start(document.getElementById("defaults"));
window.addEventListener("hashchange", route);
route();
