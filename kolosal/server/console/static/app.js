// Kolosal web console: overview, live metrics and a chat playground over the
// server's own API. No dependencies; the key typed in stays in sessionStorage.
"use strict";
(() => {
  const KEY = "kolosal.apiKey";
  const POLL_MS = 2000;
  const HISTORY = 90;          // chart points kept (3 minutes at 2 s)
  const TTFT_WINDOW = 15;      // polls the TTFT quantiles look back over (30 s)
  const $ = (id) => document.getElementById(id);

  let session = { authenticated: false, admin: false, keys_required: false, memory_budget_bytes: null };
  const unloaded = new Map();  // engine_id -> what POST /engines needs to load it again

  // ---- formatting ---------------------------------------------------------
  function fmtBytes(n) {
    if (n == null) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }
  function fmtDuration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    return (d ? d + "d " : "") + (d || h ? h + "h " : "") + (d || h || m ? m + "m " : "") + (s % 60) + "s";
  }
  function fmtNum(v, digits) { return v == null || !isFinite(v) ? "–" : v.toFixed(digits == null ? 1 : digits); }

  // ---- messages -----------------------------------------------------------
  let alertKind = null;
  function showAlert(kind, text) {
    alertKind = kind;
    const el = $("alert");
    el.textContent = text;
    el.hidden = false;
  }
  function clearAlert(kind) {
    if (kind && kind !== alertKind) return;
    alertKind = null;
    $("alert").hidden = true;
    $("alert").textContent = "";
  }

  // ---- the API ------------------------------------------------------------
  class ApiError extends Error {
    constructor(status, message, code) { super(message); this.status = status; this.code = code; }
  }
  function authHeaders(extra) {
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
  async function api(path, opts) {
    opts = opts || {};
    const resp = await fetch(path, Object.assign({}, opts, { headers: authHeaders(opts.headers) }));
    if (!resp.ok) throw await toError(resp);
    return resp;
  }
  async function getJSON(path, okStatuses) {
    const resp = await fetch(path, { headers: authHeaders() });
    if (!resp.ok && !(okStatuses || []).includes(resp.status)) throw await toError(resp);
    return resp.json();
  }

  // ---- tabs -----------------------------------------------------------------
  const TABS = ["overview", "metrics", "playground"];
  function showTab(name) {
    if (!TABS.includes(name)) name = "overview";
    for (const t of TABS) {
      $(t).hidden = t !== name;
      $("tab-" + t).setAttribute("aria-pressed", String(t === name));
    }
    if (name === "metrics") charts.forEach((c) => c.draw());
    if (name === "playground" && session.authenticated) loadModels();
    if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
  }

  // ---- session (key role, budget) ----------------------------------------
  async function refreshSession() {
    try {
      session = await getJSON("console/session");
      clearAlert("net");
      const key = sessionStorage.getItem(KEY);
      if (!session.authenticated) {
        showAlert("key", "This server needs an API key: type it above and press \u201cUse key\u201d.");
        $("key-role").textContent = "";
      } else {
        clearAlert("key");
        $("version").textContent = session.version ? "v" + session.version : "";
        $("key-role").textContent = session.admin
          ? (session.keys_required || key ? "admin key" : "no keys configured: full access")
          : "key accepted (not admin)";
      }
    } catch (e) {  // 401: a wrong key (toError showed why), or the server is unreachable
      session = { authenticated: false, admin: false, keys_required: true, memory_budget_bytes: null };
      $("key-role").textContent = "";
      if (!(e instanceof ApiError)) showAlert("net", "The server cannot be reached: " + e.message);
    }
    $("admin-note").hidden = session.admin;
    engineRows.forEach((row) => updateActions(row));
  }

  // ---- overview -------------------------------------------------------------
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
      b.hidden = !session.admin || !show[action];
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
    if (p == null) { row.bar.removeAttribute("value"); row.bar.hidden = true; row.pct.textContent = "–"; }
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
        setRow(row, { progress: 0, memory: null, stats: null }, "loading");
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

  async function refreshEngines() {
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
    const budget = session.memory_budget_bytes || lastHost.memory_total;
    $("memory-text").textContent = fmtBytes(used) + (session.memory_budget_bytes
      ? " of " + fmtBytes(budget) + " budget" : budget ? " (no budget; host RAM " + fmtBytes(budget) + ")" : "");
    const meter = $("memory-meter");
    meter.hidden = !budget;
    meter.max = budget || 1;
    meter.value = Math.min(used, meter.max);
  }

  async function refreshOverview() {
    const health = getJSON("health", [503]).then((h) => {
      const el = $("health-status");
      el.textContent = h.status;
      el.className = "state-" + h.status;
      $("uptime").textContent = fmtDuration(h.uptime_seconds);
      if (h.version) $("version").textContent = "v" + h.version;
    }).catch(() => { $("health-status").textContent = "unreachable"; $("health-status").className = "state-error"; });
    await Promise.allSettled([health, refreshEngines()]);
  }

  // ---- charts ---------------------------------------------------------------
  const COLORS = ["#2357c6", "#c2261d", "#1a7f37", "#9a6700"];

  class Chart {
    constructor(id, title, unit, names) {
      this.id = id; this.title = title; this.unit = unit; this.names = names;
      this.values = names.map(() => []);
      const fig = document.createElement("figure");
      fig.id = "chart-" + id;
      const cap = document.createElement("figcaption");
      cap.id = "chart-" + id + "-caption";
      this.canvas = document.createElement("canvas");
      this.canvas.setAttribute("role", "img");
      this.canvas.setAttribute("aria-labelledby", cap.id);
      this.canvas.height = 140;
      const legend = document.createElement("div");
      legend.className = "legend";
      names.forEach((n, i) => {
        const s = document.createElement("span");
        s.textContent = "\u25A0 " + n;
        s.style.color = COLORS[i];  // CSSOM, allowed by the page's style-src 'self'
        legend.appendChild(s);
      });
      fig.append(cap, this.canvas, legend);
      $("charts").appendChild(fig);
      this.fig = fig; this.cap = cap;
      this.caption();
    }
    push(row) {
      row.forEach((v, i) => {
        this.values[i].push(v == null || !isFinite(v) ? null : v);
        if (this.values[i].length > HISTORY) this.values[i].shift();
      });
      const all = this.values.flat().filter((v) => v != null);
      this.fig.dataset.max = all.length ? String(Math.max(...all)) : "";
      this.fig.dataset.points = String(this.values[0].length);
      this.caption();
      if (!$("metrics").hidden) this.draw();
    }
    caption() {
      const latest = this.values.map((s) => (s.length ? s[s.length - 1] : null));
      this.cap.textContent = this.title + ": ";
      this.names.forEach((n, i) => {
        const v = document.createElement("span");
        v.className = "value";
        v.textContent = fmtNum(latest[i], this.unit === "ms" ? 0 : 1) + (latest[i] == null ? "" : " " + this.unit);
        this.cap.append(i ? ", " + n + " " : n + " ", v);
      });
    }
    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1;
      const w = c.clientWidth || 360, h = 140;
      if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
      const ctx = c.getContext("2d");
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const all = this.values.flat().filter((v) => v != null);
      let top = Math.max(1, ...all);
      const mag = Math.pow(10, Math.floor(Math.log10(top)));
      top = Math.ceil(top / mag) * mag;
      const left = 44, right = 6, y0 = 8, y1 = h - 16;
      ctx.font = "11px system-ui, sans-serif";
      ctx.fillStyle = "#5b6470";
      ctx.strokeStyle = "#e3e7ec";
      ctx.lineWidth = 1;
      for (let k = 0; k <= 2; k++) {
        const y = y1 - (y1 - y0) * k / 2;
        ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
        ctx.fillText(String(+(top * k / 2).toPrecision(3)), 2, y + 4);
      }
      ctx.fillText("last " + Math.round(HISTORY * POLL_MS / 60000) + " min", left, h - 3);
      const step = (w - left - right) / (HISTORY - 1);
      this.values.forEach((series, i) => {
        ctx.strokeStyle = COLORS[i];
        ctx.lineWidth = 2;
        ctx.beginPath();
        let pen = false;
        const offset = HISTORY - series.length;
        let last = null;
        series.forEach((v, j) => {
          if (v == null) { pen = false; last = null; return; }
          const x = left + (offset + j) * step, y = y1 - (y1 - y0) * (v / top);
          if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          pen = true;
          last = [x, y];
        });
        ctx.stroke();
        if (last) {  // the latest value as a dot, so that a single point shows too
          ctx.fillStyle = COLORS[i];
          ctx.beginPath(); ctx.arc(last[0], last[1], 2.5, 0, 2 * Math.PI); ctx.fill();
        }
      });
    }
  }

  const charts = [];
  let tpsChart, ttftChart, reqChart, hostChart;
  function makeCharts() {
    tpsChart = new Chart("tokens", "Tokens/s", "tok/s", ["generated"]);
    ttftChart = new Chart("ttft", "Time to first token (last 30 s)", "ms", ["p50", "p90"]);
    reqChart = new Chart("requests", "Requests/s", "/s", ["finished", "failed"]);
    hostChart = new Chart("host", "Host", "%", ["CPU", "RAM", "GPU"]);
    charts.push(tpsChart, ttftChart, reqChart, hostChart);
  }

  // TTFT quantiles from the Prometheus histogram (summed over engines).
  function ttftBuckets(text) {
    const byLe = new Map();
    for (const line of text.split("\n")) {
      if (!line.startsWith("kolosal_completion_ttft_seconds_bucket{")) continue;
      const m = line.match(/le="([^"]+)"/);
      const value = parseFloat(line.slice(line.lastIndexOf(" ") + 1));
      if (!m || !isFinite(value)) continue;
      const le = m[1] === "+Inf" ? Infinity : parseFloat(m[1]);
      byLe.set(le, (byLe.get(le) || 0) + value);
    }
    return byLe;
  }
  function quantile(q, byLe) {
    const buckets = [...byLe.entries()].sort((a, b) => a[0] - b[0]);
    const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
    if (!total) return null;
    const rank = q * total;
    let prevLe = 0, prevCount = 0;
    for (const [le, count] of buckets) {
      if (count >= rank) {
        if (le === Infinity) return prevLe;
        return prevLe + (le - prevLe) * ((rank - prevCount) / ((count - prevCount) || 1));
      }
      prevLe = le; prevCount = count;
    }
    return null;
  }

  let lastTotals = null;
  const ttftHistory = [];
  const lastHost = { memory_total: null };

  async function refreshMetrics() {
    const now = performance.now() / 1000;
    const [comp, host, prom] = await Promise.allSettled([
      getJSON("completion-metrics"), getJSON("metrics"),
      api("metrics/prometheus").then((r) => r.text()),
    ]);
    if (comp.status === "fulfilled") {
      const s = comp.value.completion_metrics.summary, srv = comp.value.completion_metrics.server || {};
      $("inflight").textContent = srv.active_requests != null ? String(srv.active_requests) : "–";
      $("queued").textContent = srv.queued_requests != null ? String(srv.queued_requests) : "–";
      for (const e of comp.value.completion_metrics.per_engine || []) {
        const row = engineRows.get(e.engine_id);
        if (!row || row.state !== "loaded" || e.slots_total == null) continue;
        row.cells.busy.textContent = e.slots_busy + " / " + e.slots_total;
        row.cells.queued.textContent = String(e.queued_requests);
      }
      const totals = { t: now, out: s.total_output_tokens, req: s.completed_requests + s.failed_requests,
                       failed: s.failed_requests };
      if (lastTotals) {
        const dt = Math.max(0.001, now - lastTotals.t);
        tpsChart.push([(totals.out - lastTotals.out) / dt]);
        reqChart.push([(totals.req - lastTotals.req) / dt, (totals.failed - lastTotals.failed) / dt]);
      }
      lastTotals = totals;
    }
    if (host.status === "fulfilled") {
      const h = host.value;
      lastHost.memory_total = h.memory && h.memory.total_bytes;
      hostChart.push([h.cpu && h.cpu.usage_percent, h.memory && h.memory.utilization_percent,
                      h.summary ? h.summary.average_gpu_utilization_percent : null]);
    }
    if (prom.status === "fulfilled") {
      const now_b = ttftBuckets(prom.value);
      ttftHistory.push(now_b);
      if (ttftHistory.length > TTFT_WINDOW + 1) ttftHistory.shift();
      const then = ttftHistory[0];
      const win = new Map();
      for (const [le, c] of now_b) win.set(le, c - (ttftHistory.length > 1 ? (then.get(le) || 0) : 0));
      const p50 = quantile(0.5, win), p90 = quantile(0.9, win);
      ttftChart.push([p50 == null ? null : p50 * 1000, p90 == null ? null : p90 * 1000]);
    }
  }

  // ---- playground -----------------------------------------------------------
  const conversation = [];
  let controller = null;

  async function loadModels() {
    if (!session.authenticated) return;
    try {
      const models = (await getJSON("v1/models")).data.map((m) => m.id);
      const sel = $("pg-model"), current = sel.value;
      sel.replaceChildren(...models.map((id) => new Option(id, id)));
      if (models.includes(current)) sel.value = current;
    } catch (e) { /* the alert says why */ }
  }

  function addEntry(role, text) {
    const li = document.createElement("li");
    li.className = role;
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    const stats = document.createElement("span");
    stats.className = "stats";
    li.append(who, body, stats);
    $("transcript").appendChild(li);
    return { li, body, stats };
  }

  function requestBody() {
    const messages = [];
    const system = $("pg-system").value.trim();
    if (system) messages.push({ role: "system", content: system });
    messages.push(...conversation);
    const body = { model: $("pg-model").value || undefined, messages, stream: true,
                   stream_options: { include_usage: true } };
    const num = (id) => ($(id).value === "" ? undefined : Number($(id).value));
    body.temperature = num("pg-temperature");
    body.top_p = num("pg-top-p");
    body.max_tokens = num("pg-max-tokens");
    body.seed = num("pg-seed");
    const stops = $("pg-stop").value.split("\n").filter((s) => s !== "");
    if (stops.length) body.stop = stops;
    if ($("pg-json").checked) body.response_format = { type: "json_object" };
    return body;
  }

  function setGenerating(on) {
    $("pg-send").disabled = on;
    $("pg-stop-btn").disabled = !on;
    document.body.dataset.generating = on ? "true" : "false";
  }

  async function sendChat(ev) {
    ev.preventDefault();
    const text = $("pg-input").value;
    if (!text.trim() || controller) return;
    conversation.push({ role: "user", content: text });
    addEntry("user", text);
    $("pg-input").value = "";
    const out = addEntry("assistant", "");
    const body = requestBody();
    controller = new AbortController();
    setGenerating(true);
    $("pg-stats").textContent = "generating\u2026";
    const t0 = performance.now();
    let tFirst = null, chunks = 0, usage = null, answer = "", ended = "", failed = null;
    try {
      const resp = await api("v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
        signal: controller.signal,
      });
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).replace(/\r$/, "");
          buf = buf.slice(nl + 1);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const event = JSON.parse(data);
          if (event.error) { failed = event.error.message || "generation failed"; continue; }
          if (event.usage) usage = event.usage;
          for (const choice of event.choices || []) {
            const piece = choice.delta && choice.delta.content;
            if (piece) {
              if (tFirst == null) tFirst = performance.now();
              chunks++;
              answer += piece;
              out.body.textContent = answer;
            }
            if (choice.finish_reason) ended = choice.finish_reason;
          }
        }
      }
    } catch (e) {
      if (e.name === "AbortError") ended = "stopped";
      else failed = e.message;
    } finally {
      controller = null;
      setGenerating(false);
    }
    const tEnd = performance.now();
    if (answer) conversation.push({ role: "assistant", content: answer });
    const parts = [];
    if (tFirst != null) parts.push("TTFT " + Math.round(tFirst - t0) + " ms");
    const n = usage ? usage.completion_tokens : chunks;
    if (tFirst != null && n > 1 && tEnd > tFirst) parts.push(fmtNum((n - 1) / ((tEnd - tFirst) / 1000)) + " tokens/s");
    if (usage) parts.push(usage.prompt_tokens + " prompt + " + usage.completion_tokens + " completion tokens");
    else if (chunks) parts.push(chunks + " chunks");
    if (ended) parts.push(ended === "stopped" ? "stopped" : "finish: " + ended);
    if (failed) { parts.push("error: " + failed); out.li.classList.add("error"); }
    out.stats.textContent = parts.join(" \u00b7 ");
    out.li.dataset.finish = failed ? "error" : ended || "unknown";
    $("pg-stats").textContent = failed ? "The request failed: " + failed : "";
  }

  // ---- wiring -----------------------------------------------------------------
  function tick() {
    if (document.hidden || !session.authenticated) return;
    refreshOverview();
    refreshMetrics();
  }

  function init() {
    makeCharts();
    for (const t of TABS) $("tab-" + t).addEventListener("click", () => showTab(t));
    $("api-key").value = sessionStorage.getItem(KEY) || "";
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("api-key").value.trim();
      if (key) sessionStorage.setItem(KEY, key); else sessionStorage.removeItem(KEY);
      clearAlert();
      refreshSession().then(() => { tick(); loadModels(); });
    });
    $("key-forget").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      $("api-key").value = "";
      clearAlert();
      refreshSession().then(tick);
    });
    $("chat-form").addEventListener("submit", sendChat);
    $("pg-input").addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("chat-form").requestSubmit();
    });
    $("pg-stop-btn").addEventListener("click", () => { if (controller) controller.abort(); });
    $("pg-clear").addEventListener("click", () => { conversation.length = 0; $("transcript").replaceChildren(); });
    $("interval").textContent = String(POLL_MS / 1000);
    window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
    window.addEventListener("resize", () => charts.forEach((c) => c.draw()));
    showTab(location.hash.slice(1));
    refreshSession().then(() => { tick(); loadModels(); });
    setInterval(tick, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", init);
})();
