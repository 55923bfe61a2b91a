// The defaults banner, on every page: which autoencoder serves each architecture, how faithful it
// is, and what the service is preparing (GET /defaults, worker/bootstrap.py's builds) with its ETA.
// It polls every PREPARING_MS while a build is preparing and every IDLE_MS otherwise, so a quick
// default being replaced by the full one shows without a reload.

import { get } from "./api.js";
import { fmtSeconds, h } from "./dom.js";

const PREPARING_MS = 5_000;
const IDLE_MS = 60_000;

const percent = (x) => (x == null ? "–" : `${(100 * x).toFixed(1)} %`);

function quality(q) {
  if (!q || q.agreement == null) return "not evaluated yet";
  const high = q.agreement_high_accuracy == null ? ""
    : `, ${percent(q.agreement_high_accuracy)} over originals ≥ ${percent(q.high_accuracy_threshold)} accuracy`;
  return `agreement ${percent(q.agreement)} on ${q.checkpoints} test checkpoints of ${q.measured_on.replace(/^the test split of /, "")}${high}`;
}

function defaultLine(d) {
  return h("li", { class: "default", dataset: { architecture: d.architecture, quick: String(d.quick) } },
    h("strong", {}, `Default for ${d.architecture}: `), d.name, d.quick ? h("span", { class: "tag" }, "quick") : null,
    ` — ${quality(d.quality)}`);
}

function buildLine(b) {
  const eta = b.eta_s == null ? "" : `, ready in about ${fmtSeconds(b.eta_s)}`;
  return h("li", { class: "build", dataset: { key: b.key, state: b.state } },
    h("strong", {}, "Preparing: "), b.title, b.stage ? ` — now: ${b.stage}${eta}` : eta);
}

export function render(el, answer) {
  const preparing = answer.builds.filter((b) => b.state === "preparing");
  const lines = [...answer.autoencoders.map(defaultLine), ...preparing.map(buildLine)];
  if (!answer.autoencoders.length && !preparing.length) {
    lines.push(h("li", { class: "none" }, "No default autoencoder yet: train one (a train_autoencoder job with make_default) or start the service with its first-start build."));
  }
  el.replaceChildren(h("ul", {}, lines));
  el.dataset.preparing = String(preparing.length);
  el.hidden = false;
  return preparing.length > 0;
}

export function start(el) {
  let timer = null;
  async function poll() {
    let preparing = false;
    try {
      preparing = render(el, await get("/defaults"));
    } catch {
      el.hidden = true; // no key yet, or the service is restarting: the page's own flash says why
    }
    timer = setTimeout(poll, preparing ? PREPARING_MS : IDLE_MS);
  }
  poll();
  return () => { if (timer) clearTimeout(timer); poll(); }; // look again now (a new API key)
}
