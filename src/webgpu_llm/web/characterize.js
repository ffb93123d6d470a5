// The browser leg of `webgpu-llm characterize` (characterize/browser.py drives it): the same
// naive / sequential / batched dispatch measurements and size sweep as the native ones
// (characterize/methods.py, sweep.py), with the same WGSL kernels (handed over in `cfg`), on
// the page's navigator.gpu. Raw samples go back to Python, which computes the statistics.
//
// Timing: performance.now() (5 µs steps in a cross-origin isolated page, 100 µs otherwise;
// every sample spans many dispatches); waiting: queue.onSubmittedWorkDone(); GPU time of the
// sweep from timestamp queries on the compute pass where the adapter has them.

const SLOT_BYTES = 256;
const SLOTS = 16;

function adapterRecord(adapter, device) {
  const i = adapter.info || {};
  const limits = {};
  for (const k of ["maxStorageBufferBindingSize", "maxBufferSize", "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup", "maxStorageBuffersPerShaderStage"]) limits[k] = adapter.limits[k];
  return {
    device: i.device || i.description || i.architecture || "", vendor: i.vendor || "",
    architecture: i.architecture || "", description: i.description || "",
    adapter_type: /swiftshader|llvmpipe|software/i.test(`${i.architecture} ${i.description} ${i.vendor}`) ? "CPU" : "",
    backend_type: "browser", features: [...device.features].sort(), limits,
    timestamps: device.features.has("timestamp-query"), wait: "queue.onSubmittedWorkDone()",
    subgroup_min_size: i.subgroupMinSize ?? null, subgroup_max_size: i.subgroupMaxSize ?? null,
  };
}

async function pipeline(device, code, label) {
  const module = device.createShaderModule({ code, label });
  return device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" }, label });
}

async function readU32(device, buf, size) {
  const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(buf, 0, staging, 0, size);
  device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Uint32Array(staging.getMappedRange().slice(0));
  staging.unmap();
  staging.destroy();
  return out;
}

/** cfg: {dispatches, naive_block, warmup, method_reps, reps, sweep_bytes, sweep_batch,
 *  sweep_cpu_max_bytes, trivial: [wgslA, wgslB], reduce: wgsl, reduce_wg, reduce_max_workgroups} */
export async function characterize(cfg, log = () => {}) {
  if (!navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new Error("WebGPU found no adapter");
  const ts = adapter.features.has("timestamp-query");
  const device = await adapter.requestDevice({
    requiredFeatures: ts ? ["timestamp-query"] : [],
    requiredLimits: { maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize },
  });
  const errors = [];
  device.onuncapturederror = (ev) => errors.push(ev.error.message);
  const rec = { adapter: adapterRecord(adapter, device), notes: [],
    cross_origin_isolated: self.crossOriginIsolated === true };
  if (!rec.cross_origin_isolated) rec.notes.push("page not cross-origin isolated: performance.now() has 100 µs steps");
  const wait = () => device.queue.onSubmittedWorkDone();
  const now = () => performance.now() / 1000;

  // -- the methods: trivial dispatches alternating two pipelines over 16 bind groups -----------
  const counter = device.createBuffer({ size: SLOTS * SLOT_BYTES, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  const pipes = await Promise.all(cfg.trivial.map((code, i) => pipeline(device, code, `trivial_${"AB"[i]}`)));
  const pool = [];
  for (let s = 0; s < SLOTS; s++) {
    for (const p of pipes) {
      pool.push([p, device.createBindGroup({ layout: p.getBindGroupLayout(0),
        entries: [{ binding: 0, resource: { buffer: counter, offset: s * SLOT_BYTES, size: 4 } }] })]);
    }
  }
  const disp = Array.from({ length: cfg.dispatches }, (_, i) => pool[i % pool.length]);
  const naiveDisp = disp.slice(0, cfg.naive_block);
  const q = device.queue;
  const one = (enc, p, bg) => {
    const cp = enc.beginComputePass();
    cp.setPipeline(p);
    cp.setBindGroup(0, bg);
    cp.dispatchWorkgroups(1, 1, 1);
    cp.end();
  };
  const methods = {
    naive: [naiveDisp.length, async () => {
      const t0 = now();
      for (const [p, bg] of naiveDisp) {
        const enc = device.createCommandEncoder();
        one(enc, p, bg);
        q.submit([enc.finish()]);
        await wait();
      }
      return now() - t0;
    }],
    sequential: [disp.length, async () => {
      const t0 = now();
      for (const [p, bg] of disp) {
        const enc = device.createCommandEncoder();
        one(enc, p, bg);
        q.submit([enc.finish()]);
      }
      await wait();
      return now() - t0;
    }],
    batched: [disp.length, async () => {
      const t0 = now();
      const enc = device.createCommandEncoder();
      const cp = enc.beginComputePass();
      for (const [p, bg] of disp) {
        cp.setPipeline(p);
        cp.setBindGroup(0, bg);
        cp.dispatchWorkgroups(1, 1, 1);
      }
      cp.end();
      q.submit([enc.finish()]);
      await wait();
      return now() - t0;
    }],
  };
  q.writeBuffer(counter, 0, new Uint32Array(SLOTS * SLOT_BYTES / 4));
  await wait();
  let expected = 0;
  const samples = { naive: [], sequential: [], batched: [] };
  log(`methods ${Object.keys(methods).join(", ")} (${cfg.warmup} warm-up + ${cfg.method_reps} rounds, N=${cfg.dispatches})`);
  for (let r = 0; r < cfg.warmup + cfg.method_reps; r++) {
    for (const [m, [count, fn]] of Object.entries(methods)) {
      const dt = await fn();
      expected += count;
      if (r >= cfg.warmup) samples[m].push(dt / count);
    }
  }
  const words = await readU32(device, counter, SLOTS * SLOT_BYTES);
  let counted = 0;
  for (let s = 0; s < SLOTS; s++) counted += words[s * SLOT_BYTES / 4];
  rec.methods = {};
  for (const [m, [count]] of Object.entries(methods)) {
    rec.methods[m] = { samples_s: samples[m], dispatches_per_sample: count, verified: counted === expected };
  }
  rec.counted = { counted, expected };

  // -- the size sweep: a streaming reduction, single and batched, GPU time from timestamps ----
  const cap0 = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
  let cap = cap0;
  let why = "the adapter's storage-binding limit";
  if (rec.adapter.adapter_type === "CPU" && cfg.sweep_cpu_max_bytes < cap) {
    cap = cfg.sweep_cpu_max_bytes;
    why = "the cap for CPU adapters (sweep_cpu_max_bytes)";
  }
  const sizes = cfg.sweep_bytes.filter((s) => s <= cap);
  const sweepNotes = cfg.sweep_bytes.filter((s) => s > cap).map((s) => `skipped ${s} bytes: over ${why} (${cap} bytes)`);
  if (!ts) sweepNotes.push("no timestamp-query feature on this adapter: GPU times are absent");
  const points = [];
  if (sizes.length) {
    const maxBytes = Math.max(...sizes);
    const src = device.createBuffer({ size: maxBytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    q.writeBuffer(src, 0, new Float32Array(maxBytes / 4).fill(1));
    const dst = device.createBuffer({ size: 4 * cfg.reduce_max_workgroups, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
    const pipe = await pipeline(device, cfg.reduce, "reduce");
    const rounds = cfg.warmup + cfg.reps;
    log(`kernel-size sweep, ${sizes.length} sizes ${sizes[0]}..${sizes[sizes.length - 1]} bytes`);
    for (const size of sizes) {
      const bg = device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries: [
        { binding: 0, resource: { buffer: src, offset: 0, size } }, { binding: 1, resource: { buffer: dst } }] });
      const vec4s = Math.max(1, Math.floor(size / 16));
      const wg = Math.max(1, Math.min(cfg.reduce_max_workgroups, Math.ceil(vec4s / (4 * cfg.reduce_wg))));
      const counts = { single: 1, batched: cfg.sweep_batch };
      const wall = { single: [], batched: [] };
      const qsets = {};
      if (ts) for (const p of ["single", "batched"]) qsets[p] = device.createQuerySet({ type: "timestamp", count: 2 * rounds });
      for (let r = 0; r < rounds; r++) {
        for (const p of ["single", "batched"]) {
          const t0 = now();
          const enc = device.createCommandEncoder();
          const cp = enc.beginComputePass(ts ? { timestampWrites: { querySet: qsets[p],
            beginningOfPassWriteIndex: 2 * r, endOfPassWriteIndex: 2 * r + 1 } } : {});
          cp.setPipeline(pipe);
          cp.setBindGroup(0, bg);
          for (let i = 0; i < counts[p]; i++) cp.dispatchWorkgroups(wg, 1, 1);
          cp.end();
          q.submit([enc.finish()]);
          await wait();
          wall[p].push((now() - t0) / counts[p]);
        }
      }
      const point = { bytes: size, workgroups: wg, dispatches: counts, wall_s: {}, gpu_ns: {} };
      for (const p of ["single", "batched"]) {
        point.wall_s[p] = wall[p].slice(cfg.warmup);
        if (ts) {
          const n = 2 * rounds;
          const res = device.createBuffer({ size: 8 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
          const enc = device.createCommandEncoder();
          enc.resolveQuerySet(qsets[p], 0, n, res, 0);
          q.submit([enc.finish()]);
          const raw = await readU32(device, res, 8 * n);
          const t = [];
          for (let i = 0; i < n; i++) t.push(raw[2 * i] + raw[2 * i + 1] * 4294967296);
          const d = [];
          for (let i = cfg.warmup; i < rounds; i++) d.push(Math.max(0, t[2 * i + 1] - t[2 * i]) / counts[p]);
          point.gpu_ns[p] = d;
        }
      }
      const parts = new Float32Array((await readU32(device, dst, 4 * wg)).buffer);
      let sum = 0;
      for (const v of parts) sum += v;
      point.verified = Math.abs(sum - size / 4) <= 1e-6 * (size / 4);
      points.push(point);
      log(`  ${size} bytes: wall ${(point.wall_s.single[0] * 1e6).toFixed(1)} µs`);
    }
  }
  rec.sweep = { points, notes: sweepNotes, timestamps: ts, kernel: "reduce", dtype: "vec4<f32>", batch: cfg.sweep_batch };
  if (errors.length) rec.notes.push(`WebGPU errors: ${errors.join("; ")}`);
  device.destroy();
  return rec;
}
