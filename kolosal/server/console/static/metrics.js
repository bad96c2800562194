// Metrics: line charts on <canvas>, fed every few seconds from
// /completion-metrics, /metrics and the TTFT histogram of /metrics/prometheus.
import { $, api, fmtNum, getJSON, state } from "./api.js";
import { showLoad } from "./overview.js";

export const POLL_MS = 2000;
const HISTORY = 90;          // chart points kept (3 minutes at 2 s)
const TTFT_WINDOW = 15;      // polls the TTFT quantiles look back over (30 s)

const COLORS = ["#2357c6", "#c2261d", "#1a7f37", "#9a6700"];

export class Chart {
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

export const charts = [];
let tpsChart, ttftChart, reqChart, hostChart;
export function makeCharts() {
  tpsChart = new Chart("tokens", "Tokens/s", "tok/s", ["generated"]);
  ttftChart = new Chart("ttft", "Time to first token (last 30 s)", "ms", ["p50", "p90"]);
  reqChart = new Chart("requests", "Requests/s", "/s", ["finished", "failed"]);
  hostChart = new Chart("host", "Host", "%", ["CPU", "RAM", "GPU"]);
  charts.push(tpsChart, ttftChart, reqChart, hostChart);
}

// TTFT quantiles from the Prometheus histogram (summed over engines).
export function ttftBuckets(text) {
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
export function quantile(q, byLe) {
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

let off = false;  // the server has no metrics endpoints (features.metrics: false)

export async function refreshMetrics() {
  if (!off && !state.session.features.metrics) {  // features.metrics: false, nothing to ask
    off = true;
    $("metrics-off").hidden = false;
    $("charts").hidden = true;
    $("inflight").textContent = $("queued").textContent = "\u2013";
  }
  if (off) return;
  const now = performance.now() / 1000;
  const [comp, host, prom] = await Promise.allSettled([
    getJSON("completion-metrics"), getJSON("metrics"),
    api("metrics/prometheus").then((r) => r.text()),
  ]);
  if ([comp, host, prom].some((r) => r.status === "rejected" && r.reason.status === 404)) {
    off = true;
    $("metrics-off").hidden = false;
    $("charts").hidden = true;
    return;
  }
  if (comp.status === "fulfilled") {
    const s = comp.value.completion_metrics.summary;
    showLoad(comp.value.completion_metrics);
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
    state.hostMemoryTotal = h.memory && h.memory.total_bytes;
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
