// Kolosal web console: overview, live metrics and a chat playground over the
// server's own API, as ES modules with no dependencies. The key typed in
// stays in sessionStorage.
import { $, ApiError, KEY, clearAlert, getJSON, showAlert, state } from "./api.js";
import { POLL_MS, charts, makeCharts, refreshMetrics } from "./metrics.js";
import { refreshOverview, showAdmin } from "./overview.js";
import { clearChat, loadModels, sendChat, stopChat } from "./playground.js";

const TABS = ["overview", "metrics", "playground"];
const ALL_FEATURES = { health_check: true, metrics: true };  // until the session says otherwise
function showTab(name) {
  if (!TABS.includes(name)) name = "overview";
  for (const t of TABS) {
    $(t).hidden = t !== name;
    $("tab-" + t).setAttribute("aria-pressed", String(t === name));
  }
  if (name === "overview" && state.session.authenticated) refreshOverview();
  if (name === "metrics") charts.forEach((c) => c.draw());
  if (name === "playground" && state.session.authenticated) loadModels();
  if (location.hash !== "#" + name) history.replaceState(null, "", "#" + name);
}

async function refreshSession() {
  try {
    const session = state.session = Object.assign({ features: ALL_FEATURES }, await getJSON("console/session"));
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
    state.session = { authenticated: false, admin: false, keys_required: true, memory_budget_bytes: null,
                      features: ALL_FEATURES };
    $("key-role").textContent = "";
    if (!(e instanceof ApiError)) showAlert("net", "The server cannot be reached: " + e.message);
  }
  showAdmin();
}

function tick() {
  if (document.hidden || !state.session.authenticated) return;
  if (!$("overview").hidden) refreshOverview();  // engines: only while shown (they count against rate limits)
  refreshMetrics();  // always, to keep the charts' history
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
  $("pg-stop-btn").addEventListener("click", stopChat);
  $("pg-clear").addEventListener("click", clearChat);
  $("interval").textContent = String(POLL_MS / 1000);
  window.addEventListener("hashchange", () => showTab(location.hash.slice(1)));
  window.addEventListener("resize", () => charts.forEach((c) => c.draw()));
  showTab(location.hash.slice(1));
  refreshSession().then(() => { tick(); loadModels(); });
  setInterval(tick, POLL_MS);
}

init();  // a module runs once the document is parsed
