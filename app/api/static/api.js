// The one place that talks to the API: adds the Bearer key and turns problem+json into errors.

export const API = "/api/v1";
const KEY_STORAGE = "zooscope.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

export class ApiError extends Error {
  constructor(status, title, detail) {
    super(detail ? `${title}: ${detail}` : title);
    this.status = status;
    this.title = title;
    this.detail = detail;
  }
}

function authHeaders(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function errorOf(response) {
  let body = null;
  try { body = await response.json(); } catch { /* a proxy's HTML page: use the status line */ }
  const detail = body && body.detail;
  const text = Array.isArray(detail) ? detail.map((d) => d.msg || JSON.stringify(d)).join("; ")
    : (typeof detail === "string" ? detail : "");
  const title = (body && body.title) || response.statusText || `HTTP ${response.status}`;
  return new ApiError(response.status, title, text);
}

export async function request(method, path, { json, form, headers } = {}) {
  const init = { method, headers: authHeaders(headers) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // the browser sets the multipart boundary itself
  }
  const response = await fetch(API + path, init);
  if (!response.ok) throw await errorOf(response);
  return response.status === 204 ? null : response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, json, headers) => request("POST", path, { json, headers });

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

export function downloadUrl(checkpointId, format = "safetensors") {
  return `${API}/checkpoints/${encodeURIComponent(checkpointId)}/download?format=${format}`;
}

// A plain link cannot carry the Authorization header, so downloads go through fetch and a blob.
export async function download(checkpointId, format = "safetensors") {
  const response = await fetch(downloadUrl(checkpointId, format), { headers: authHeaders() });
  if (!response.ok) throw await errorOf(response);
  const blob = await response.blob();
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob);
  a.download = `checkpoint-${checkpointId}.${format}`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// Retried submits with the same key must not make two jobs; randomUUID needs a secure context.
export function idempotencyKey() {
  if (globalThis.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}
