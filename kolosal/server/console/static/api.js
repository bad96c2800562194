// The console's plumbing: the key (sessionStorage only), calls to the API
// with it, the message banner and number formats.

export const KEY = "kolosal.apiKey";
export const $ = (id) => document.getElementById(id);

// What the page knows of its key and the server (console/session), shared by the views.
export const state = {
  session: { authenticated: false, admin: false, keys_required: false, memory_budget_bytes: null,
             features: { health_check: true, metrics: true } },
  hostMemoryTotal: null,
};

// ---- formatting ---------------------------------------------------------
export function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}
export function fmtDuration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + (s % 60) + "s";
}
export function fmtNum(v, digits) { return v == null || !isFinite(v) ? "–" : v.toFixed(digits == null ? 1 : digits); }

// ---- messages -----------------------------------------------------------
let alertKind = null;
export function showAlert(kind, text) {
  alertKind = kind;
  const el = $("alert");
  el.textContent = text;
  el.hidden = false;
}
export function clearAlert(kind) {
  if (kind && kind !== alertKind) return;
  alertKind = null;
  $("alert").hidden = true;
  $("alert").textContent = "";
}

// ---- the API ------------------------------------------------------------
export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}
export function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const key = sessionStorage.getItem(KEY);
  if (key) h.Authorization = "Bearer " + key;
  return h;
}
async function toError(resp) {
  let message = resp.status + " " + resp.statusText, code = null;
  try {
    const body = await resp.json();
    if (body && body.error) { message = body.error.message || message; code = body.error.code || null; }
  } catch (e) { /* not JSON */ }
  const err = new ApiError(resp.status, message, code);
  if (resp.status === 401) {
    showAlert("key", sessionStorage.getItem(KEY)
      ? "The API key was refused (401): " + message + " Type a valid key above."
      : "This server needs an API key: type it above and press \u201cUse key\u201d.");
  }
  return err;
}
export async function api(path, opts) {
  opts = opts || {};
  const resp = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
  if (!resp.ok) throw await toError(resp);
  return resp;
}
export async function getJSON(path, okStatuses) {
  const resp = await fetch(path, { headers: authHeaders() });
  if (!resp.ok && !(okStatuses || []).includes(resp.status)) throw await toError(resp);
  return resp.json();
}

