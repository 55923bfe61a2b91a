// Checkpoints: upload by drag-and-drop or the file picker, and the list with architectures.

import { download, downloadUrl, get, query, request } from "../api.js";
import { flash, fmt, fmtTime, h, shortId } from "../dom.js";

function row(c) {
  const link = h("a", { href: downloadUrl(c.id), class: "download" }, "download");
  link.addEventListener("click", (event) => {
    event.preventDefault();
    download(c.id).catch((err) => flash(err.message));
  });
  return h("tr", { dataset: { checkpointId: c.id } },
    h("td", {}, shortId(c.id)), h("td", {}, c.name || "–"), h("td", {}, c.kind || "–"), h("td", {}, c.architecture || "–"),
    h("td", {}, fmt(c.n_parameters)), h("td", {}, fmt(c.n_tokens)),
    h("td", { class: "mono", title: c.sha256 || "" }, (c.sha256 || "").slice(0, 12)),
    h("td", {}, fmtTime(c.created_at)), h("td", {}, link));
}

async function uploadAll(files, log) {
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    try {
      const c = await request("POST", "/checkpoints", { form });
      log.append(h("li", { class: "ok" }, `${file.name}: ${c.architecture || "?"} (id ${c.id})`));
    } catch (err) {
      log.append(h("li", { class: "error" }, `${file.name}: ${err.message}`));
    }
  }
}

export async function render(view) {
  const tbody = h("tbody", {});
  const total = h("span", {});
  async function refresh() {
    const page = await get(`/checkpoints${query({ limit: 200 })}`);
    tbody.replaceChildren(...(page.items || []).map(row));
    total.textContent = `${page.total ?? (page.items || []).length} checkpoints`;
  }
  const log = h("ul", { class: "upload-log" });
  const picker = h("input", { type: "file", id: "checkpoint-file", multiple: true, accept: ".safetensors,.pt,.pth,.bin" });
  const drop = h("div", { class: "dropzone", id: "dropzone" },
    h("p", {}, "Drop .safetensors or torch state_dict files here, or "), h("label", { class: "button" }, "choose files", picker));
  async function take(files) {
    if (!files.length) return;
    drop.classList.add("busy");
    await uploadAll([...files], log);
    drop.classList.remove("busy");
    await refresh().catch((err) => flash(err.message));
  }
  picker.addEventListener("change", () => take(picker.files));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); take(e.dataTransfer.files); });

  view.append(h("h1", {}, "Checkpoints"), h("div", { class: "card" }, drop, log),
    h("h2", {}, "Stored ", total),
    h("table", { class: "data", id: "checkpoints-table" },
      h("thead", {}, h("tr", {}, ["id", "name", "kind", "architecture", "parameters", "tokens", "sha256", "created", ""]
        .map((t) => h("th", {}, t)))), tbody));
  await refresh();
  return null;
}
