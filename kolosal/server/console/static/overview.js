// Overview: health, uptime, requests, model memory and the engines, with
// load / unload / reload for admin keys and each load's progress.
import { $, api, clearAlert, fmtBytes, fmtDuration, getJSON, showAlert, state } from "./api.js";

const unloaded = new Map();  // engine_id -> what POST /engines needs to load it again
const engineRows = new Map();  // engine_id -> row state

function makeRow(id) {
  const tr = document.createElement("tr");
  const cells = {};
  for (const name of ["id", "state", "progress", "memory", "busy", "queued", "actions"]) {
    cells[name] = document.createElement(name === "id" ? "th" : "td");
    if (name === "id") cells[name].scope = "row";
    tr.appendChild(cells[name]);
  }
  cells.id.textContent = id;
  const bar = document.createElement("progress");
  bar.max = 1;
  bar.setAttribute("aria-label", "Load progress of " + id);
  const pct = document.createElement("span");
  cells.progress.append(bar, " ", pct);
  const buttons = {};
  for (const [action, label] of [["load", "Load"], ["unload", "Unload"], ["reload", "Reload"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.setAttribute("aria-label", label + " " + id);
    b.dataset.action = action;
    b.addEventListener("click", () => engineAction(id, action, b));
    cells.actions.appendChild(b);
    buttons[action] = b;
  }
  const row = { id, tr, cells, bar, pct, buttons, info: null, state: null };
  $("engine-rows").appendChild(tr);
  engineRows.set(id, row);
  return row;
}

function updateActions(row) {
  const s = row.state;
  const show = {
    load: ["registered", "error", "removed"].includes(s),
    unload: s === "loaded",
    reload: s === "loaded",
  };
  for (const [action, b] of Object.entries(row.buttons)) {
    b.hidden = !state.session.admin || !show[action];
    if (row.busy) b.disabled = true;
  }
}

function setRow(row, info, state) {
  row.info = info || row.info;
  row.state = state;
  row.tr.dataset.state = state;
  row.cells.state.textContent = state;
  row.cells.state.className = "state-" + state;
  const p = info && info.progress != null ? info.progress : (state === "loaded" ? 1 : null);
  const waiting = state === "loading" || state === "reloading";  // no figure yet: an indeterminate bar
  if (p == null) { row.bar.removeAttribute("value"); row.bar.hidden = !waiting; row.pct.textContent = waiting ? "" : "–"; }
  else { row.bar.hidden = false; row.bar.value = p; row.pct.textContent = Math.round(p * 100) + "%"; }
  const mem = info && info.memory;
  row.cells.memory.textContent = mem && state === "loaded"
    ? fmtBytes((mem.measured_bytes || 0) + (mem.prompt_cache_bytes || 0)) : "–";
  if (state !== "loaded") { row.cells.busy.textContent = "–"; row.cells.queued.textContent = "–"; }
  updateActions(row);
}

async function engineAction(id, action, button) {
  const row = engineRows.get(id);
  row.busy = true;
  Object.values(row.buttons).forEach((b) => { b.disabled = true; });
  $("engines").setAttribute("aria-busy", "true");
  try {
    if (action === "unload") {
      const info = row.info;
      await api("engines/" + encodeURIComponent(id), { method: "DELETE" });
      unloaded.set(id, { engine_id: id, model_path: info.model_path, loading_parameters: info.loading_parameters,
                         priority: info.priority, pinned: info.pinned });
      setRow(row, null, "removed");
    } else {
      const info = unloaded.get(id) || row.info;
      const body = { engine_id: id, model_path: info.model_path, loading_parameters: info.loading_parameters };
      if (!unloaded.has(id)) body.replace = true;  // an engine the server still knows: load it in place
      else { body.priority = info.priority; body.pinned = info.pinned; }
      // With replace the new copy loads out of sight (an old one serves meanwhile): no figure to show;
      // a fresh POST /engines registers the engine at once, and its progress shows while it loads.
      const pending = { progress: body.replace ? null : 0, memory: null, stats: null };
      setRow(row, action === "reload" ? Object.assign({}, row.info, pending) : pending,
             action === "reload" ? "reloading" : "loading");
      const poll = setInterval(refreshEngines, 300);  // the load progress while the request runs
      try {
        await api("engines", { method: "POST", headers: { "Content-Type": "application/json" },
                               body: JSON.stringify(body) });
      } finally {
        clearInterval(poll);
      }
      unloaded.delete(id);
    }
    clearAlert("action");
  } catch (e) {
    if (e.status === 403) showAlert("action", "Only an admin key may " + action + " models: " + e.message);
    else if (e.status !== 401) showAlert("action", "Could not " + action + " " + id + ": " + e.message);
  } finally {
    row.busy = false;
    Object.values(row.buttons).forEach((b) => { b.disabled = false; });
    $("engines").removeAttribute("aria-busy");
    await refreshEngines();
    if (document.activeElement === button && button.hidden) row.tr.querySelector("th").focus();
  }
}

export async function refreshEngines() {
  let list;
  try {
    list = (await getJSON("engines")).engines;
  } catch (e) {
    return;
  }
  const seen = new Set();
  for (const info of list) {
    seen.add(info.engine_id);
    const row = engineRows.get(info.engine_id) || makeRow(info.engine_id);
    if (!row.busy || info.status === "loading") setRow(row, info, info.status);
    unloaded.delete(info.engine_id);
  }
  for (const [id, row] of engineRows) {
    if (seen.has(id) || row.busy) continue;
    if (unloaded.has(id)) setRow(row, null, "removed");
    else { row.tr.remove(); engineRows.delete(id); }
  }
  let used = 0;
  for (const info of list) {
    if (info.status === "loaded" && info.memory) used += (info.memory.measured_bytes || 0) + (info.memory.prompt_cache_bytes || 0);
  }
  const budget = state.session.memory_budget_bytes || state.hostMemoryTotal;
  $("memory-text").textContent = fmtBytes(used);
  $("memory-note").textContent = state.session.memory_budget_bytes ? "of " + fmtBytes(budget) + " budget"
    : budget ? "no budget; host RAM " + fmtBytes(budget) : "";
  const meter = $("memory-meter");
  meter.hidden = !budget;
  meter.max = budget || 1;
  meter.value = Math.min(used, meter.max);
}

export async function refreshOverview() {
  if (!state.session.features.health_check) {  // features.health_check: false, nothing to ask
    $("health-status").textContent = "off (features.health_check)";
    $("health-status").className = "state-off";
    $("uptime").textContent = "\u2013";
    await refreshEngines();
    return;
  }
  const health = getJSON("health", [503]).then((h) => {
    const el = $("health-status");
    el.textContent = h.status;
    el.className = "state-" + h.status;
    $("uptime").textContent = fmtDuration(h.uptime_seconds);
    if (h.version) $("version").textContent = "v" + h.version;
  }).catch((e) => {
    $("health-status").textContent = e.status === 404 ? "not served (features.health_check)" : "unreachable";
    $("health-status").className = "state-error";
  });
  await Promise.allSettled([health, refreshEngines()]);
}


// Slots and queue per engine, and the server's requests, from /completion-metrics.
export function showLoad(report) {
  const srv = report.server || {};
  $("inflight").textContent = srv.active_requests != null ? String(srv.active_requests) : "–";
  $("queued").textContent = srv.queued_requests != null ? String(srv.queued_requests) : "–";
  for (const e of report.per_engine || []) {
    const row = engineRows.get(e.engine_id);
    if (!row || row.state !== "loaded" || e.slots_total == null) continue;
    row.cells.busy.textContent = e.slots_busy + " / " + e.slots_total;
    row.cells.queued.textContent = String(e.queued_requests);
  }
}

export function showAdmin() {
  $("admin-note").hidden = state.session.admin;
  engineRows.forEach((row) => updateActions(row));
}
