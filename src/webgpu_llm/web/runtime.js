// The browser runtime of webgpu-llm: replays the Programs of an exported plan (see
// engine/export.py) on the page's WebGPU device. The same WGSL, the same buffers and the same
// dispatch lists as the Python engine; one submit per decode step, the sampled token stays on
// the GPU (the next step's embedding reads it), tokens come back through mapped buffers
// asynchronously, a few steps behind.
//
//   const plan = await fetchPlan(url);                 // checks that it is an export
//   const engine = await Engine.create(plan, url, {onProgress, onLost});
//   for await (const id of engine.generate(ids, 32)) ...
//   const logits = await engine.logits(ids);            // the last prompt token's

export const PLAN_FORMAT = "webgpu-llm-plan";
export const PLAN_VERSION = 1;
const MAX_PENDING = 3; // read-backs in flight
const MAX_INTERVAL = 16; // steps per read-back at most
const TARGET_BATCH_MS = 20;

/** An error whose message is meant for the person at the page (no stack needed). */
export class PageError extends Error {
  constructor(message, kind = "error") {
    super(message);
    this.kind = kind;
  }
}

const MiB = 1024 * 1024;
function fmtBytes(n) {
  if (n >= 1024 * MiB) return `${(n / 1024 / MiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  return `${n} B`;
}

/** plan.json under `base` (a folder URL), checked to be a webgpu-llm export. */
export async function fetchPlan(base) {
  const url = new URL("plan.json", base);
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new PageError(`could not fetch ${url}: ${e.message}`, "not-export");
  }
  if (!res.ok) {
    throw new PageError(`${url} is not there (HTTP ${res.status}): give the folder that ` +
      "`webgpu-llm export --out DIR` wrote", "not-export");
  }
  let plan;
  try {
    plan = JSON.parse(await res.text());
  } catch {
    throw new PageError(`${url} is not a webgpu-llm export: it is not JSON`, "not-export");
  }
  if (!plan || typeof plan !== "object" || plan.format !== PLAN_FORMAT) {
    throw new PageError(`${url} is not a webgpu-llm export (it has no "format": "${PLAN_FORMAT}")`,
      "not-export");
  }
  if (plan.version !== PLAN_VERSION) {
    throw new PageError(`${url} is a plan of version ${plan.version}; this page reads version ` +
      `${PLAN_VERSION}: export the model again with this webgpu-llm`, "not-export");
  }
  for (const key of ["buffers", "kernels", "programs", "weights", "limits", "features", "state", "tokens"]) {
    if (!(key in plan)) throw new PageError(`${url} is not a complete export: no "${key}"`, "not-export");
  }
  return plan;
}

/** What the adapter lacks of what the plan needs: [] when it can run it. */
export function missingCapabilities(plan, adapter) {
  const missing = [];
  const lang = navigator.gpu.wgslLanguageFeatures;
  for (const f of plan.wgsl_language_features ?? []) {
    if (lang && !lang.has(f)) missing.push(`WGSL language feature ${f}`);
  }
  for (const f of plan.features) {
    if (!adapter.features.has(f)) missing.push(`feature ${f}`);
  }
  for (const [name, need] of Object.entries(plan.limits)) {
    const have = adapter.limits[name];
    if (have !== undefined && have < need) {
      const big = /Size$/.test(name) && need >= 65536;
      missing.push(`limit ${name}: needs ${big ? fmtBytes(need) : need}, the adapter has ${big ? fmtBytes(have) : have}`);
    }
  }
  return missing;
}

/** The adapter and a device with the plan's features and limits, or a PageError saying what is missing. */
export async function openDevice(plan, { adapterOptions = { powerPreference: "high-performance" } } = {}) {
  if (!("gpu" in navigator) || !navigator.gpu) {
    throw new PageError("this browser has no WebGPU (navigator.gpu is missing): use a browser with " +
      "WebGPU on (Chrome or Edge 113+, Safari 26, Firefox 141+ on Windows), over https or localhost",
    "no-webgpu");
  }
  const adapter = await navigator.gpu.requestAdapter(adapterOptions);
  if (!adapter) throw new PageError("WebGPU found no GPU adapter on this machine", "no-adapter");
  const missing = missingCapabilities(plan, adapter);
  if (missing.length) {
    throw new PageError(`this GPU cannot run ${plan.model?.name ?? "this model"}: it lacks ` +
      missing.join("; ") + ". Export the model for a smaller context or with other options, or use another GPU.",
    "missing-capability");
  }
  const requiredLimits = {};
  for (const [name, need] of Object.entries(plan.limits)) {
    if (adapter.limits[name] !== undefined) requiredLimits[name] = need;
  }
  const requiredFeatures = [...plan.features];
  if (adapter.features.has("timestamp-query")) requiredFeatures.push("timestamp-query");
  let device;
  try {
    device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (e) {
    throw new PageError(`the GPU refused a device for this model: ${e.message}`, "device");
  }
  return { adapter, device };
}

function adapterDescription(adapter) {
  const i = adapter.info || {};
  return [i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(" ") || "unknown adapter";
}

/** Fetch one file with progress; its bytes in a Uint8Array of the size the manifest gives. */
async function fetchBytes(url, size, onBytes) {
  const res = await fetch(url);
  if (!res.ok) throw new PageError(`${url}: HTTP ${res.status}; the export is incomplete`, "not-export");
  const out = new Uint8Array(size);
  let at = 0;
  const reader = res.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (at + value.length > size) {
      throw new PageError(`${url} is larger than the ${size} bytes the plan says: not this export's file`, "not-export");
    }
    out.set(value, at);
    at += value.length;
    onBytes(value.length);
  }
  if (at !== size) {
    throw new PageError(`${url} has ${at} bytes, the plan says ${size}: the export is incomplete`, "not-export");
  }
  return out;
}

async function sha256Hex(bytes) {
  if (!crypto?.subtle) return null; // not a secure context: the sizes are still checked
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Engine {
  constructor(plan, adapter, device) {
    this.plan = plan;
    this.adapter = adapter;
    this.device = device;
    this.adapterName = adapterDescription(adapter);
    this.vocab = plan.model.vocab;
    this.ctx = plan.tokens.capacity;
    this.batch = plan.model.batch;
    this.lostInfo = null;
    this.errors = [];
    this.staging = [];
    this.stats = {};
  }

  /** Open the device, upload the weights, build the pipelines and bind groups.
   *  onProgress({phase, done, total}); onLost(message) when the device is lost later. */
  static async create(plan, base, { onProgress = () => {}, onLost = () => {}, opened = null } = {}) {
    opened = opened ?? await openDevice(plan);
    const engine = new Engine(plan, opened.adapter, opened.device);
    engine.device.lost.then((info) => {
      engine.lostInfo = info;
      if (engine.destroyed) return;
      onLost(`the GPU device was lost (${info.reason || "unknown"}${info.message ? ": " + info.message : ""}); ` +
        "reload the page to start again");
    });
    engine.device.onuncapturederror = (ev) => engine.errors.push(ev.error.message);
    engine.createBuffers();
    await engine.uploadWeights(base, onProgress);
    onProgress({ phase: "compile", done: 0, total: plan.kernels.length });
    await engine.createPipelines((done) => onProgress({ phase: "compile", done, total: plan.kernels.length }));
    engine.bindPrograms();
    await engine.checkErrors("building the Programs");
    return engine;
  }

  destroy() {
    this.destroyed = true;
    this.device.destroy();
  }

  createBuffers() {
    const U = GPUBufferUsage;
    this.buffers = this.plan.buffers.map((b) =>
      this.device.createBuffer({ size: b.size, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST, label: b.name }));
    this.stBuf = this.buffers[this.plan.state.buffer];
    this.tokBuf = this.buffers[this.plan.tokens.buffer];
    this.logitsBuf = this.buffers[this.plan.logits.buffer];
  }

  async uploadWeights(base, onProgress) {
    const { files, tensors } = this.plan.weights;
    const total = files.reduce((a, f) => a + f.size, 0);
    let done = 0;
    onProgress({ phase: "weights", done, total });
    for (let fi = 0; fi < files.length; fi++) {
      const f = files[fi];
      const url = new URL(f.path, base);
      const bytes = await fetchBytes(url, f.size, (n) => {
        done += n;
        onProgress({ phase: "weights", done, total });
      });
      const sum = await sha256Hex(bytes);
      if (sum !== null && sum !== f.sha256) {
        throw new PageError(`${f.path}: its checksum differs from the plan's: not this export's file`, "not-export");
      }
      for (const t of tensors) {
        if (t.file !== fi) continue;
        const n = Math.ceil(t.size / 4) * 4; // queue writes take whole words; the file pads to 256
        this.device.queue.writeBuffer(this.buffers[t.buffer], 0, bytes, t.offset, n);
      }
    }
  }

  async createPipelines(onDone) {
    let done = 0;
    this.pipelines = await Promise.all(this.plan.kernels.map(async (k) => {
      const module = this.device.createShaderModule({ code: k.wgsl, label: k.name });
      const info = await module.getCompilationInfo();
      const errs = info.messages.filter((m) => m.type === "error");
      if (errs.length) {
        throw new PageError(`kernel ${k.name} does not compile here: ` +
          errs.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; "), "compile");
      }
      const p = await this.device.createComputePipelineAsync({
        layout: "auto", compute: { module, entryPoint: "main" }, label: k.name });
      onDone(++done);
      return p;
    }));
  }

  bindPrograms() {
    this.programs = {};
    const groups = new Map(); // the same kernel on the same buffers shares one bind group
    for (const [name, list] of Object.entries(this.plan.programs)) {
      this.programs[name] = list.map((d) => {
        const pipeline = this.pipelines[d.kernel];
        const key = d.kernel + ":" + JSON.stringify(d.bind);
        let bindGroup = groups.get(key);
        if (!bindGroup) {
          bindGroup = this.device.createBindGroup({
            layout: pipeline.getBindGroupLayout(0),
            label: d.label,
            entries: d.bind.map((b, i) => ({
              binding: i,
              resource: Array.isArray(b)
                ? { buffer: this.buffers[b[0]], offset: b[1], size: b[2] }
                : { buffer: this.buffers[b] },
            })),
          });
          groups.set(key, bindGroup);
        }
        const fixed = Array.isArray(d.grid) ? d.grid : null;
        return { label: d.label, pipeline, bindGroup, fixed, table: fixed ? null : this.plan.grids[d.grid.table] };
      });
    }
  }

  async checkErrors(what) {
    if (this.errors.length) {
      const e = this.errors.splice(0);
      throw new PageError(`WebGPU reported an error while ${what}: ${e.join("; ")}`, "gpu");
    }
  }

  /** Encode a Program's dispatches for n tokens into an open compute pass. */
  encode(pass, name, n) {
    for (const d of this.programs[name]) {
      const g = d.fixed || d.table[n - 1];
      if (!g[0] || !g[1] || !g[2]) continue; // an empty grid is skipped, as in Python
      pass.setPipeline(d.pipeline);
      pass.setBindGroup(0, d.bindGroup);
      pass.dispatchWorkgroups(g[0], g[1], g[2]);
    }
  }

  /** Several Programs (name, n) in one encoder, one pass, one submit; `after(encoder)` adds copies. */
  run(list, after = null) {
    if (this.lostInfo) throw new PageError("the GPU device was lost; reload the page", "lost");
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const [name, n] of list) this.encode(pass, name, n);
    pass.end();
    if (after) after(enc);
    this.device.queue.submit([enc.finish()]);
  }

  // -- state -----------------------------------------------------------------------------
  samplerOf(params) {
    const filtered = params.temperature > 0 && (params.top_k > 0 || params.top_p < 1 || params.min_p > 0);
    // as SamplingParams.penalised: the penalty kernel also applies OpenAI's additive penalties
    const penalty = params.repeat_last_n > 0 && (params.repeat_penalty !== 1 ||
      (params.frequency_penalty ?? 0) !== 0 || (params.presence_penalty ?? 0) !== 0);
    return this.plan.sampling.variants[(filtered ? "filtered" : "greedy") + (penalty ? "_penalty" : "")];
  }

  params(p = {}) {
    return { ...this.plan.sampling.defaults, ...p };
  }

  /** The state buffer's words for `values`, laid out by the plan's fields (kernels/common.py
   *  pack_state); a field not given is 0. */
  stateWords(values) {
    const words = new ArrayBuffer(this.plan.state.words * 4);
    const view = new DataView(words);
    this.plan.state.fields.forEach(([name, type], i) => {
      const v = values[name] ?? 0;
      if (type === "f32") view.setFloat32(i * 4, v, true);
      else view.setUint32(i * 4, v >>> 0, true);
    });
    return new Uint32Array(words);
  }

  writeState(values) {
    this.device.queue.writeBuffer(this.stBuf, 0, this.stateWords(values));
  }

  writeTokens(start, ids) {
    if (start + ids.length > this.ctx) {
      throw new PageError(`${start + ids.length} tokens do not fit the context of ${this.ctx}`, "input");
    }
    this.device.queue.writeBuffer(this.tokBuf, start * 4, new Uint32Array(ids));
  }

  stagingBuffer() {
    return this.staging.pop() || this.device.createBuffer({
      size: MAX_INTERVAL * 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  }

  /** The prompt through the layers in chunks of at most `batch` tokens; the last chunk ends
   *  with the head and the sampler, which writes the next token at start + ids.length. */
  prefill(ids, start, params, seed, afterLast = null) {
    this.writeTokens(start, ids);
    const sampler = this.samplerOf(params);
    let pos = start;
    for (let i = 0; i < ids.length; i += this.batch) {
      const n = Math.min(this.batch, ids.length - i);
      const last = i + n >= ids.length;
      this.writeState({ ...params, pos, n, seed, n_gen: 0, limit: 0 });
      const list = [["embed", n], ["prefill", n]];
      if (last) list.push(["head", n], [sampler, n]);
      this.run(list, last ? afterLast : null);
      pos += n;
    }
  }

  /** Up to maxNew new token ids after prompt `ids` (at position `start`), as they come back.
   *  Stop early by leaving the loop: steps already submitted finish and are discarded. */
  async *generate(ids, maxNew, p = {}, start = 0) {
    const params = this.params(p);
    if (!ids.length) throw new PageError("the prompt is empty", "input");
    const first = start + ids.length;
    if (first >= this.ctx) {
      throw new PageError(`the prompt has ${first} tokens, the context holds ${this.ctx}`, "input");
    }
    maxNew = Math.min(maxNew, this.ctx - first);
    if (maxNew <= 0) return;
    const seed = params.seed ?? (crypto.getRandomValues(new Uint32Array(1))[0]);
    const sampler = this.samplerOf(params);
    const step = [["decode", 1], ["head", 1], [sampler, 1]];
    const pending = [];
    let nextRead = 0;
    let submitted = 0;
    let interval = 1;
    let lastT = 0;
    let lastN = 0;
    const st = (this.stats = { prompt_tokens: ids.length, generated_tokens: 0, prefill_ms: 0, decode_ms: 0 });
    const copier = (upto) => {
      const lo = nextRead;
      const cnt = upto - nextRead;
      const buf = this.stagingBuffer();
      nextRead = upto;
      return { buf, lo, cnt, after: (enc) => enc.copyBufferToBuffer(this.tokBuf, (first + lo) * 4, buf, 0, cnt * 4) };
    };
    const t0 = performance.now();
    let tFirst = null;
    let c = copier(1);
    this.prefill(ids, start, params, seed, c.after);
    pending.push({ ...c, mapped: c.buf.mapAsync(GPUMapMode.READ) });
    submitted = 1;
    try {
      while (pending.length || submitted < maxNew) {
        if (pending.length && (pending.length >= MAX_PENDING || submitted >= maxNew)) {
          const r = pending.shift();
          await r.mapped;
          const toks = Array.from(new Uint32Array(r.buf.getMappedRange(0, r.cnt * 4).slice(0)));
          r.buf.unmap();
          this.staging.push(r.buf);
          const now = performance.now();
          if (tFirst === null) {
            tFirst = now;
            st.prefill_ms = now - t0;
          } else if (now > lastT) {
            const rate = (r.lo + r.cnt - lastN) / (now - lastT); // tokens a ms
            interval = Math.floor(Math.min(MAX_INTERVAL, Math.max(1, rate * TARGET_BATCH_MS)));
          }
          lastT = now;
          lastN = r.lo + r.cnt;
          for (const tok of toks) {
            st.generated_tokens += 1;
            st.decode_ms = now - tFirst;
            yield tok;
          }
          continue;
        }
        const upto = submitted + 1;
        if (upto - nextRead >= interval || upto === maxNew) {
          c = copier(upto);
          this.run(step, c.after);
          pending.push({ ...c, mapped: c.buf.mapAsync(GPUMapMode.READ) });
        } else {
          this.run(step);
        }
        submitted = upto;
      }
    } finally {
      // read-backs still in flight: their buffers go back to the pool once mapped
      for (const r of pending) {
        r.mapped.then(() => { r.buf.unmap(); this.staging.push(r.buf); }, () => {});
      }
    }
  }

  /** The logits of the last token of `ids` (prefill + head from an empty cache), a Float32Array. */
  async logits(ids) {
    const size = this.vocab * 4;
    const buf = this.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.prefill(ids, 0, this.params({ temperature: 0 }), 0, (enc) => enc.copyBufferToBuffer(this.logitsBuf, 0, buf, 0, size));
    await buf.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(buf.getMappedRange().slice(0));
    buf.unmap();
    buf.destroy();
    await this.checkErrors("computing logits");
    return out;
  }
}

export function decodeTokPerS(stats) {
  return stats.generated_tokens > 1 && stats.decode_ms > 0
    ? (stats.generated_tokens - 1) / (stats.decode_ms / 1000) : 0;
}
