// The chat page of `webgpu-llm serve`: plain JavaScript, no build step.
// Streams answers from POST /v1/chat/completions (server-sent events read from fetch), stops
// them with an AbortController (the server cancels the request when the connection closes),
// keeps the conversation in this browser, and renders answers as Markdown with marked 18.3.0,
// sanitized by DOMPurify 3.5.0 (both vendored in static/vendor/).
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "webgpu-llm-chat";
const FIELDS = ["system", "temperature", "max-tokens", "top-k", "top-p", "min-p", "repeat-penalty", "seed", "api-key"];

const chat = {
  messages: [],        // {role, content} of the kept conversation (without the system prompt)
  controller: null,    // the AbortController of the answer streaming now
  model: null,
};

// ---- Markdown ---------------------------------------------------------------------------
function renderMarkdown(text) {
  const html = window.marked.parse(text, { gfm: true, breaks: false, async: false });
  return window.DOMPurify.sanitize(html, { USE_PROFILES: { html: true } });
}

function setupMarkdown() {
  // links from an answer open elsewhere and get no access to this page
  window.DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });
}

// ---- settings ---------------------------------------------------------------------------
function loadSaved() {
  try {
    const saved = JSON.parse(localStorage.getItem(STORE) || "{}");
    for (const id of FIELDS) if (saved.settings && id in saved.settings) $(id).value = saved.settings[id];
    if (Array.isArray(saved.messages)) chat.messages = saved.messages.filter(
      (m) => m && (m.role === "user" || m.role === "assistant") && typeof m.content === "string");
  } catch (e) { /* a damaged store starts afresh */ }
}

function save() {
  const settings = {};
  for (const id of FIELDS) settings[id] = $(id).value;
  try { localStorage.setItem(STORE, JSON.stringify({ settings, messages: chat.messages })); } catch (e) { /* full */ }
}

function number(id, parse) {
  const v = $(id).value.trim();
  if (v === "") return undefined;
  const n = parse(v);
  return Number.isFinite(n) ? n : undefined;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function requestBody() {
  const system = $("system").value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(chat.messages);
  const body = { messages, stream: true, stream_options: { include_usage: true } };
  if (chat.model) body.model = chat.model;
  const opts = { temperature: ["temperature", parseFloat], max_tokens: ["max-tokens", (v) => parseInt(v, 10)],
    top_k: ["top-k", (v) => parseInt(v, 10)], top_p: ["top-p", parseFloat], min_p: ["min-p", parseFloat],
    repeat_penalty: ["repeat-penalty", parseFloat], seed: ["seed", (v) => parseInt(v, 10)] };
  for (const [name, [id, parse]] of Object.entries(opts)) {
    const v = number(id, parse);
    if (v !== undefined) body[name] = v;
  }
  return body;
}

// ---- the conversation on screen ---------------------------------------------------------
function fill(body, text) {
  body.innerHTML = renderMarkdown(text);
  for (const pre of body.querySelectorAll("pre")) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "copy";
    b.textContent = "Copy";
    pre.prepend(b);
  }
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  const body = document.createElement("div");
  body.className = "body";
  div.appendChild(body);
  if (role === "assistant") fill(body, text);
  else body.textContent = text;
  $("messages").appendChild(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

function note(div, text, kind) {
  let n = div.querySelector(".note");
  if (!n) {
    n = document.createElement("div");
    div.appendChild(n);
  }
  n.className = "note " + (kind || "");
  n.textContent = text;
}

function showAll() {
  $("messages").replaceChildren();
  for (const m of chat.messages) bubble(m.role, m.content);
  if (!chat.messages.length) {
    const hint = document.createElement("p");
    hint.className = "muted hint";
    hint.textContent = "Ask the model something. Answers stream as they are written; Stop ends one early.";
    $("messages").appendChild(hint);
  }
}

function busy(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("prompt").readOnly = on;
  document.body.classList.toggle("busy", on);
}

function speed(s) {
  const parts = [`${s.tokens} tokens`];
  if (s.first !== null) parts.push(`first token after ${((s.first - s.start) / 1000).toFixed(2)} s`);
  if (s.tokens > 1 && s.last > s.first) parts.push(`${((s.tokens - 1) / ((s.last - s.first) / 1000)).toFixed(1)} tok/s`);
  return parts.join(", ");
}

// ---- server-sent events from fetch --------------------------------------------------------
async function* events(response, signal) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trimStart()).join("\n");
        if (data === "[DONE]") return;
        if (data) yield JSON.parse(data);
      }
    }
  } finally {
    if (signal.aborted) reader.cancel().catch(() => {});
  }
}

async function errorText(response) {
  try {
    const j = await response.json();
    return (j.error && j.error.message) || response.statusText;
  } catch (e) {
    return `${response.status} ${response.statusText}`;
  }
}

// ---- asking ------------------------------------------------------------------------------
async function ask(text) {
  document.querySelector("#messages .hint")?.remove();
  chat.messages.push({ role: "user", content: text });
  bubble("user", text);
  const div = bubble("assistant", "");
  div.classList.add("streaming");
  const body = div.querySelector(".body");
  const controller = new AbortController();
  chat.controller = controller;
  busy(true);
  const s = { start: performance.now(), first: null, last: null, tokens: 0 };
  let answer = "";
  let usage = null;
  let finish = null;
  let failed = null;
  let pending = false;
  const draw = () => {
    pending = false;
    fill(body, answer);
    div.scrollIntoView({ block: "end" });
  };
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(requestBody()), signal: controller.signal,
    });
    if (!response.ok) {
      failed = await errorText(response);
      if (response.status === 401) openSettings("api-key");
    } else {
      for await (const ev of events(response, controller.signal)) {
        if (ev.error) { failed = ev.error.message; break; }
        if (ev.usage) usage = ev.usage;
        const choice = ev.choices && ev.choices[0];
        if (!choice) continue;
        if (choice.finish_reason) finish = choice.finish_reason;
        const piece = choice.delta && choice.delta.content;
        if (piece) {
          const now = performance.now();
          if (s.first === null) s.first = now;
          s.last = now;
          s.tokens += 1;
          answer += piece;
          if (!pending) { pending = true; requestAnimationFrame(draw); }
          $("stats").textContent = speed(s);
        }
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") failed = String(e.message || e);
  } finally {
    chat.controller = null;
    busy(false);
  }
  if (usage) s.tokens = usage.completion_tokens;
  draw();
  div.classList.remove("streaming");
  const stopped = controller.signal.aborted;
  if (failed && !answer) {
    chat.messages.pop();  // the question stays in the box, to ask again
    div.previousElementSibling.remove();
    div.remove();
    const err = bubble("error", failed);
    err.classList.add("error");
    $("prompt").value = text;
  } else if (stopped && !answer) {  // stopped before the first token: as if never asked
    chat.messages.pop();
    div.previousElementSibling.remove();
    div.remove();
    $("prompt").value = text;
    $("stats").textContent = "stopped before the answer began";
  } else {
    chat.messages.push({ role: "assistant", content: answer });
    div.dataset.finish = stopped ? "stopped" : (finish || "");
    const what = stopped ? "stopped" : finish === "length" ? "cut at max tokens" : "";
    note(div, [speed(s), what, failed ? "error: " + failed : ""].filter(Boolean).join(" · "), failed ? "error" : "");
    $("stats").textContent = speed(s) + (stopped ? " (stopped)" : "");
  }
  save();
}

function stop() {
  if (chat.controller) chat.controller.abort();
}

function openSettings(focus) {
  $("settings").hidden = false;
  $("toggle-settings").setAttribute("aria-expanded", "true");
  if (focus) $(focus).focus();
}

async function loadModel() {
  try {
    const r = await fetch("/v1/models", { headers: headers() });
    if (r.status === 401) {
      $("model").textContent = "API key needed (Settings)";
      openSettings("api-key");
      return;
    }
    const j = await r.json();
    const m = j.data && j.data[0];
    if (m) {
      chat.model = m.id;
      $("model").textContent = `${m.id} · context ${m.context_length} tokens`;
      // "run in this browser": where the server was given an export of the model (--web-plan)
      if (m.web_page) $("run-in-browser").href = m.web_page;
      $("where").hidden = !m.web_page;
    }
  } catch (e) {
    $("model").textContent = "server unreachable";
  }
}

function main() {
  setupMarkdown();
  loadSaved();
  showAll();
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || chat.controller) return;
    $("prompt").value = "";
    ask(text);
  });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", stop);
  $("new-chat").addEventListener("click", () => {
    stop();
    chat.messages = [];
    save();
    showAll();
    $("stats").textContent = "";
  });
  $("toggle-settings").addEventListener("click", () => {
    const open = $("settings").hidden;
    $("settings").hidden = !open;
    $("toggle-settings").setAttribute("aria-expanded", String(open));
  });
  for (const id of FIELDS) $(id).addEventListener("change", () => { save(); if (id === "api-key") loadModel(); });
  // copy buttons on code blocks
  $("messages").addEventListener("click", (e) => {
    const pre = e.target.closest("pre");
    if (pre && e.target.classList.contains("copy")) navigator.clipboard?.writeText(pre.querySelector("code")?.textContent || "");
  });
  loadModel();
  $("prompt").focus();
}

window.chatPage = { renderMarkdown, chat };
document.addEventListener("DOMContentLoaded", main);
