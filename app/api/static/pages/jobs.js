// Jobs: recent jobs with live state (polled every second while any is queued or running, and not
// at all otherwise), and a form that submits a reconstruct or generate job.

import { get, idempotencyKey, post, query } from "../api.js";
import { flash, fmt, fmtDuration, fmtEta, fmtTime, h, shortId } from "../dom.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["queued", "running"]);
const WITH_REPORT = new Set(["reconstruct", "evaluate", "encode", "generate"]);

function jobRow(job) {
  const progress = Math.round(100 * (job.progress || 0));
  // has_report is the service's word; older answers lack it, so fall back on the kind.
  const done = job.state === "succeeded" && (job.has_report ?? WITH_REPORT.has(job.kind));
  return h("tr", { dataset: { jobId: job.id, state: job.state } },
    h("td", {}, done ? h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, shortId(job.id)) : shortId(job.id)),
    h("td", {}, job.kind),
    h("td", {}, h("span", { class: `state state-${job.state}` }, job.state)),
    h("td", {}, h("div", { class: "bar", title: `${progress}%` }, h("div", { style: `width:${progress}%` })),
      h("small", {}, job.message || "")),
    h("td", {}, fmtTime(job.created_at)),
    h("td", {}, fmtDuration(job.started_at, job.finished_at)),
    h("td", { class: "eta" }, fmtEta(job)),
    h("td", { class: "error" }, job.error ? fmt(job.error) : ""),
    h("td", {}, done ? h("a", { href: `#/jobs/${encodeURIComponent(job.id)}`, class: "report-link" }, "report") : ""),
  );
}

function jobsTable() {
  return h("table", { id: "jobs-table", class: "data" },
    h("thead", {}, h("tr", {}, ["id", "kind", "state", "progress", "created", "duration", "ETA", "error", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}));
}

async function submitForm(onSubmitted) {
  const [ckpts, aes] = await Promise.all([
    get(`/checkpoints${query({ limit: 200 })}`),
    get("/autoencoders").catch(() => ({ items: [] })), // the form still works with the default autoencoder
  ]);
  const boxes = (ckpts.items || []).map((c) =>
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "checkpoint", value: c.id }),
      ` ${c.name || c.id} `, h("small", {}, c.architecture || "")));
  const kind = h("select", { name: "kind", id: "job-kind" },
    h("option", { value: "reconstruct" }, "reconstruct"), h("option", { value: "generate" }, "generate"));
  const ae = h("select", { name: "autoencoder_id" }, h("option", { value: "" }, "default autoencoder"),
    (aes.items || []).map((a) => h("option", { value: a.id }, `${a.name || a.id}${a.is_default ? " (default)" : ""}`)));
  const nSamples = h("input", { type: "number", name: "n_samples", min: 1, value: 10 });
  const bandwidth = h("input", { type: "number", name: "bandwidth", step: "any", min: 0, placeholder: "auto" });
  const generateFields = h("div", { class: "generate-only", hidden: true },
    h("label", {}, "samples ", nSamples), h("label", {}, "bandwidth ", bandwidth));
  const checkpointFields = h("fieldset", { class: "checkpoints" }, h("legend", {}, "checkpoints"),
    boxes.length ? boxes : h("p", {}, "No checkpoints yet: upload some on the Checkpoints page."));
  kind.addEventListener("change", () => {
    generateFields.hidden = kind.value !== "generate";
    checkpointFields.hidden = kind.value === "generate";
  });

  const form = h("form", { id: "job-form", class: "card" }, h("h2", {}, "Submit a job"),
    h("div", { class: "row" }, h("label", {}, "kind ", kind), h("label", {}, "autoencoder ", ae)),
    checkpointFields, generateFields, h("button", { type: "submit" }, "Submit"));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const params = {};
    if (ae.value) params.autoencoder_id = ae.value;
    if (kind.value === "generate") {
      params.n_samples = Number(nSamples.value);
      if (bandwidth.value) params.bandwidth = Number(bandwidth.value);
    } else {
      params.checkpoint_ids = [...form.querySelectorAll("input[name=checkpoint]:checked")].map((b) => b.value);
      if (!params.checkpoint_ids.length) return flash("Choose at least one checkpoint.");
    }
    const button = form.querySelector("button");
    button.disabled = true; // one click, one job
    try {
      const job = await post("/jobs", { kind: kind.value, params }, { "Idempotency-Key": idempotencyKey() });
      flash(`Job ${job.id ?? ""} submitted.`, "info");
      onSubmitted();
    } catch (err) {
      flash(err.message);
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

export async function render(view) {
  const table = jobsTable();
  let timer = null;
  let stopped = false;

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    try {
      const page = await get(`/jobs${query({ limit: 50 })}`);
      if (stopped) return;
      table.tBodies[0].replaceChildren(...(page.items || []).map(jobRow));
      const active = (page.items || []).some((j) => ACTIVE.has(j.state));
      if (active) timer = setTimeout(refresh, POLL_MS);
    } catch (err) {
      flash(err.message);
      if (!stopped) timer = setTimeout(refresh, 5 * POLL_MS); // keep trying, gently, after an outage
    }
    // A hook for tests and for people: is the page polling right now?
    document.body.dataset.polling = String(timer !== null);
  }

  view.append(h("h1", {}, "Jobs"), await submitForm(refresh), h("h2", {}, "Recent jobs"), table);
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
    document.body.dataset.polling = "false";
  };
}
