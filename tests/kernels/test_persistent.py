"""kernels/persistent.py: a chain of kernels as one dispatch computes what the chain computes.

On llvmpipe one workgroup runs the persistent kernel (more would spin on workgroups that a CPU
adapter runs one after another): that still exercises the renaming, the merged bindings, the
stage loops and the barrier's counting. The give-up path is exercised for real: 64 workgroups
cannot all be resident on a CPU adapter.
"""

from __future__ import annotations

import numpy as np
import pytest

from webgpu_llm.kernels.common import Signature, pack_state
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.kernels.linear import LinearSpec, Segment, matvec_groups, matvec_kernel
from webgpu_llm.kernels.persistent import GIVE_UP, SYNC_WORDS, Stage, persistent_kernel
from webgpu_llm.runtime.gpu import Gpu
from webgpu_llm.runtime.program import Kernel, Program

WG = 64
N = 32 * 7  # floats: 7 rows of 8 vec4s, 3.5 workgroups


def _scale() -> Kernel:
    """y[i] = 2 x[i] + 1, one f32 per thread; the module names (WG, f) recur in the others."""
    sig = Signature().storage("x", "array<f32>").storage("y", "array<f32>", write=True)
    return sig.kernel("scale", f"""
const WG: u32 = {WG}u;
fn f(v: f32) -> f32 {{ return 2.0 * v + 1.0; }}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let i = wid.x * WG + lid;
  if (i < {N}u) {{ y[i] = f(x[i]); }}
}}""")


def _rowsum() -> Kernel:
    """out[r] = sum of the r-th row of 8 vec4s of y (read as vec4s) + st.pos, r = wid.y * 3 +
    wid.x on a grid 3 wide, summed through workgroup memory."""
    sig = Signature().state().storage("y", "array<vec4<f32>>").storage("out", "array<f32>", write=True)
    return sig.kernel("rowsum", f"""
const WG: u32 = {WG}u;
var<workgroup> buf: array<f32, WG>;
fn f(r: u32, l: u32) -> f32 {{ let v = y[r * 8u + l]; return v.x + v.y + v.z + v.w; }}
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
  let r = wid.y * nwg.x + wid.x;
  let ok = r < {N // 32}u && lid < 8u;
  buf[lid] = select(0.0, f(min(r, {N // 32 - 1}u), lid % 8u), ok);
  workgroupBarrier();
  if (lid == 0u && r < {N // 32}u) {{
    var s = 0.0;
    for (var j = 0u; j < 8u; j++) {{ s += buf[j]; }}
    out[r] = s + f32(st.pos);
  }}
}}""")


def _accumulate() -> Kernel:
    """y[i] += out[i / 32] (y as f32 again, written in place), with the same workgroup array."""
    sig = Signature().storage("out", "array<f32>").storage("y", "array<f32>", write=True)
    return sig.kernel("accumulate", f"""
const WG: u32 = {WG}u;
var<workgroup> buf: array<f32, WG>;
@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let i = wid.x * WG + lid;
  buf[lid] = select(0.0, out[min(i, {N - 1}u) / 32u], i < {N}u);
  workgroupBarrier();
  if (i < {N}u) {{ y[i] = y[i] + buf[lid]; }}
}}""")


def _chain(gpu: Gpu, groups: int, pos: int = 5) -> tuple[Program, dict[str, object], np.ndarray]:
    x = np.random.default_rng(7).standard_normal(N).astype(np.float32)
    bufs = {"st": gpu.upload(pack_state(pos=pos)), "x": gpu.upload(x), "y": gpu.buffer(N * 4),
            "out": gpu.buffer(N // 32 * 4), "sync": gpu.buffer(SYNC_WORDS * 4)}
    stages = [Stage(_scale(), bufs, f"{-(-N // WG)}u"),
              Stage(_rowsum(), bufs, f"{N // 32}u + st.pos - st.pos", width=3),
              Stage(_accumulate(), bufs, f"{-(-N // WG)}u")]
    kernel, order = persistent_kernel("chain", stages, groups, WG)
    prog = Program(gpu, "chain")
    prog.add(kernel, [*order, bufs["sync"]], (groups, 1, 1))
    y = 2 * x + 1
    want = y + np.repeat(y.reshape(-1, 32).sum(1) + pos, 32)
    return prog, bufs, want


def test_chain_matches_numpy(gpu: Gpu) -> None:
    prog, bufs, want = _chain(gpu, 1)
    for _ in range(2):  # the counters are back at zero for the next dispatch
        prog.run()
        got = gpu.read_array(bufs["y"], np.float32, N)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        assert gpu.read_array(bufs["sync"], np.uint32, SYNC_WORDS).tolist() == [0] * SYNC_WORDS


def test_one_binding_per_buffer_and_shared_workgroup_memory(wgpu_gpu: Gpu) -> None:
    wgsl = _persistent_wgsl(wgpu_gpu)
    # y is viewed as f32 (scale, accumulate) and vec4 (rowsum): one read_write vec4 binding
    assert wgsl.count("@binding(") == 5  # st, x, y, out, sync
    assert "var<storage, read_write> pbuf1: array<vec4<f32>>;" in wgsl
    assert "pbuf1[(i) >> 2u][(i) & 3u]" in wgsl
    # rowsum's and accumulate's `buf` (same name and type) share one array
    assert wgsl.count("var<workgroup>") == 1


def _persistent_wgsl(gpu: Gpu) -> str:
    bufs = {n: gpu.buffer(N * 4) for n in ("st", "x", "y", "out")}
    kernel, _ = persistent_kernel("chain", [Stage(_scale(), bufs, "1u"), Stage(_rowsum(), bufs, "1u", width=3),
                                            Stage(_accumulate(), bufs, "1u")], 1, WG)
    return kernel.wgsl


def test_barrier_gives_up_when_workgroups_are_not_resident(wgpu_gpu: Gpu) -> None:
    """A CPU adapter runs a few workgroups at a time: 64 cannot meet at a barrier. The waiting
    ones give up, raise the flag, and the kernel still ends with its counters at zero."""
    if not wgpu_gpu.is_cpu:
        pytest.skip("a GPU holds all 64 workgroups at once: none gives up")
    prog, bufs, _ = _chain(wgpu_gpu, 64)
    prog.run()
    sync = wgpu_gpu.read_array(bufs["sync"], np.uint32, SYNC_WORDS)
    assert sync[GIVE_UP] == 1
    assert not sync[GIVE_UP + 1:].any()


def test_refuses_what_it_cannot_rewrite(wgpu_gpu: Gpu) -> None:
    bufs = {n: wgpu_gpu.buffer(64) for n in ("x", "y")}
    sig = Signature().storage("x", "array<f32>").storage("y", "array<f32>", write=True)
    shadow = sig.kernel("shadow", """
fn g(x: f32) -> f32 { return x; }
@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) lid: u32) { y[lid] = g(x[lid]); }""")
    with pytest.raises(ValueError, match="shadows binding 'x'"):
        persistent_kernel("k", [Stage(shadow, bufs, "1u")], 1, 64)
    with pytest.raises(ValueError, match="workgroup size 64"):
        persistent_kernel("k", [Stage(_scale(), {**bufs}, "1u")], 1, 128)


def test_stage_waits_after_its_early_weight_requests(gpu: Gpu) -> None:
    """Two real mat-vecs, the second with early weight requests (kernels/linear.py): its wait
    for the first moves into its first turn, after the requests, and the chain still computes
    W2 (W1 x) (f32 weights; odd sizes)."""
    rng = np.random.default_rng(5)
    k1, n1, n2 = 96, 76, 59  # n1, the second's input, is ragged in 32-value units; n2 rows odd
    w1 = rng.standard_normal((n1, k1)).astype(np.float32)
    w2 = rng.standard_normal((n2, n1)).astype(np.float32)
    x = rng.standard_normal(k1).astype(np.float32)
    s1 = LinearSpec(k=k1, segments=(Segment("f32", n1),))
    s2 = LinearSpec(k=n1, segments=(Segment("f32", n2),))
    h = gpu.buffer(n1 * 4)
    bufs1 = {"w0": gpu.upload(FORMATS["f32"].pack(w1, k1)), "x": gpu.upload(x), "y": h}
    bufs2 = {"w0": gpu.upload(FORMATS["f32"].pack(w2, n1)), "x": h, "y": gpu.buffer(n2 * 4)}
    kern = [matvec_kernel(s, wg=WG, tpr=8, early=e) for s, e in ((s1, 0), (s2, 1))]
    assert "early_requested();" in kern[1].wgsl
    stages = [Stage(kern[0], bufs1, f"{matvec_groups(s1, WG, 8)}u"), Stage(kern[1], bufs2, f"{matvec_groups(s2, WG, 8)}u")]
    kernel, order = persistent_kernel("chain", stages, 1, WG)
    assert "if (first) { p_wait(" in kernel.wgsl
    sync = gpu.buffer(SYNC_WORDS * 4)
    prog = Program(gpu, "chain")
    prog.add(kernel, [*order, sync], (1, 1, 1))
    prog.run()
    got = gpu.read_array(bufs2["y"], np.float32, n2)
    np.testing.assert_allclose(got, w2 @ (w1 @ x), rtol=1e-4, atol=1e-3)
