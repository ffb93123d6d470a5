// The page of `webgpu-llm web`: loads an exported model (plan.json + weights + tokenizer) and
// chats with it entirely in this browser, through runtime.js. Nothing is sent to a server
// after the files load. `window.webgpuLlm` is the page's API for scripts and tests.

import { Engine, PageError, decodeTokPerS, fetchPlan, openDevice } from "./runtime.js";
import { WebTokenizer } from "./tokenizer.js";

const $ = (id) => document.getElementById(id);

const page = {
  state: "idle", // idle | loading | ready | error | lost
  engine: null,
  tokenizer: null,
  plan: null,
  base: null,
  messages: [],
  cached: [], // token ids whose KV cache entries are valid (a shared prefix is not run again)
  stopping: false,
  busy: false,
  error: null,
};

function showError(e) {
  const msg = e instanceof PageError ? e.message : `${e?.name ?? "Error"}: ${e?.message ?? e}`;
  page.error = { kind: e?.kind ?? "error", message: msg };
  const box = $("error");
  box.textContent = msg;
  box.dataset.kind = page.error.kind;
  box.hidden = false;
  return msg;
}

function clearError() {
  page.error = null;
  $("error").hidden = true;
  $("error").textContent = "";
}

function setStatus(text) {
  $("status").textContent = text;
}

function setReady(ready) {
  $("prompt").disabled = !ready;
  $("send").disabled = !ready;
}

function progress({ phase, done, total }) {
  $("progress-row").hidden = false;
  const bar = $("progress");
  bar.max = total || 1;
  bar.value = done;
  const what = phase === "weights"
    ? `weights ${(done / 2 ** 20).toFixed(1)} / ${(total / 2 ** 20).toFixed(1)} MiB`
    : `compiling kernels ${done} / ${total}`;
  $("progress-text").textContent = what;
  setStatus(phase === "weights" ? "downloading the weights and uploading them to the GPU"
    : "compiling the kernels (pipelines)");
}

function onLost(message) {
  page.state = "lost";
  setReady(false);
  showError(new PageError(message, "lost"));
}

/** Load the export at `url` (a folder): {ok: true} or {ok: false, error}. */
async function load(url) {
  if (page.busy) return { ok: false, error: "busy" };
  clearError();
  if (page.engine) {
    page.engine.destroy();
    page.engine = null;
  }
  page.state = "loading";
  setReady(false);
  const t0 = performance.now();
  try {
    const base = new URL(url, location.href);
    if (!base.pathname.endsWith("/")) base.pathname += "/";
    setStatus(`reading ${base}plan.json`);
    const plan = await fetchPlan(base);
    $("model").textContent = `${plan.model.name} (${(plan.model.weight_bytes / 2 ** 20).toFixed(0)} MiB, ctx ${plan.model.ctx})`;
    // the adapter's features and limits are checked before anything large is downloaded
    const opened = await openDevice(plan);
    let tokenizer;
    try {
      tokenizer = await WebTokenizer.load(plan.tokenizer, base);
    } catch (e) {
      opened.device.destroy();
      throw new PageError(`the tokenizer of this export could not be read: ${e.message}`, "not-export");
    }
    const engine = await Engine.create(plan, base, { onProgress: progress, onLost, opened });
    Object.assign(page, { plan, base, engine, tokenizer, state: "ready", cached: [] });
    $("adapter").textContent = engine.adapterName;
    setStatus(`ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${plan.kernels.length} kernels, ` +
      `${plan.programs.decode.length + plan.programs.head.length} dispatches a token, one submit each`);
    setReady(true);
    return { ok: true };
  } catch (e) {
    page.state = "error";
    const error = showError(e);
    setStatus("not loaded");
    return { ok: false, error, kind: e?.kind ?? "error" };
  } finally {
    $("progress-row").hidden = true;
  }
}

function need() {
  if (page.state !== "ready") throw new PageError(page.error?.message ?? "no model is loaded", "state");
  return page.engine;
}

/** The generated ids after `ids` (stops at a stop token unless `noStop`). */
async function generateIds(ids, maxNew, params = {}, { noStop = false, start = 0, onIds = null } = {}) {
  const engine = need();
  const out = [];
  page.busy = true;
  page.stopping = false;
  try {
    for await (const tok of engine.generate(ids, maxNew, params, start)) {
      if (!noStop && page.tokenizer.stopIds.has(tok)) break;
      out.push(tok);
      if (onIds) onIds(out);
      if (page.stopping) break;
    }
  } finally {
    page.busy = false;
  }
  await engine.checkErrors("generating");
  return out;
}

function commonPrefix(a, b) {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  const body = document.createElement("span");
  body.className = "body";
  body.textContent = text;
  div.append(body);
  $("messages").append(div);
  div.scrollIntoView({ block: "end" });
  return div;
}

async function send(text) {
  const engine = need();
  const tok = page.tokenizer;
  page.messages.push({ role: "user", content: text });
  addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.classList.add("streaming");
  const ids = tok.hasChatTemplate ? tok.chatIds(page.messages) : tok.encode(text);
  // the KV cache already holds a shared prefix: only the rest goes through the layers
  const start = Math.min(commonPrefix(page.cached, ids), ids.length - 1);
  const maxNew = Math.max(1, Number($("max-tokens").value) || 128);
  const temperature = Math.max(0, Number($("temperature").value) || 0);
  $("send").hidden = true;
  $("stop").hidden = false;
  let out = [];
  try {
    out = await generateIds(ids.slice(start), maxNew, { temperature }, {
      start, onIds: (got) => { answer.querySelector(".body").textContent = tok.decode(got); } });
  } catch (e) {
    showError(e);
  } finally {
    $("send").hidden = false;
    $("stop").hidden = true;
    answer.classList.remove("streaming");
  }
  const reply = tok.decode(out);
  answer.querySelector(".body").textContent = reply;
  page.messages.push({ role: "assistant", content: reply });
  page.cached = [...ids, ...out.slice(0, -1)];
  const s = engine.stats;
  const note = document.createElement("span");
  note.className = "note muted";
  note.textContent = `${out.length} tokens, ${decodeTokPerS(s).toFixed(1)} tok/s` +
    ` (prompt ${ids.length - start} new of ${ids.length} tokens in ${(s.prefill_ms / 1000).toFixed(2)} s)`;
  answer.append(note);
  answer.dataset.finish = page.stopping ? "stopped" : out.length >= maxNew ? "length" : "stop";
  $("stats").textContent = note.textContent;
}

function setup() {
  $("load-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    load($("plan-url").value.trim());
  });
  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || page.busy || page.state !== "ready") return;
    $("prompt").value = "";
    send(text);
  });
  $("prompt").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => { page.stopping = true; });
  $("new-chat").addEventListener("click", () => {
    page.messages = [];
    $("messages").replaceChildren();
    $("stats").textContent = "";
  });
  // anything that escapes still reaches the page, not only the console
  window.addEventListener("unhandledrejection", (ev) => showError(ev.reason));
  window.addEventListener("error", (ev) => showError(ev.error ?? ev.message));
  const params = new URLSearchParams(location.search);
  if (params.has("plan")) {
    $("plan-url").value = params.get("plan");
    load(params.get("plan"));
  }
}

window.webgpuLlm = {
  page,
  load,
  encode: (text, opts) => page.tokenizer.encode(text, opts),
  chatIds: (messages) => page.tokenizer.chatIds(messages),
  applyChatTemplate: (messages) => page.tokenizer.applyChatTemplate(messages),
  decode: (ids) => page.tokenizer.decode(ids),
  generateIds,
  logits: async (ids) => Array.from(await need().logits(ids)),
  send,
  stats: () => ({ ...page.engine?.stats, decode_tok_s: page.engine ? decodeTokPerS(page.engine.stats) : 0 }),
  loseDevice: () => page.engine?.device.destroy(), // for tests: what a lost device looks like
};

setup();
