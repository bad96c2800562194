// Playground: a streaming chat over /v1/chat/completions (fetch and a
// ReadableStream); Stop aborts the request, which cancels the generation.
import { $, api, fmtNum, getJSON, state } from "./api.js";

const conversation = [];
let controller = null;

export async function loadModels() {
  if (!state.session.authenticated) return;
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

export async function sendChat(ev) {
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

export function stopChat() {
  if (controller) controller.abort();
}

export function clearChat() {
  conversation.length = 0;
  $("transcript").replaceChildren();
}
