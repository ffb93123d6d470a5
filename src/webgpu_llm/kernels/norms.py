"""The norms some architectures add to Llama's layer, where no fused kernel can take them:
they reduce over a whole head or a whole row, which a linear layer's epilogue (a pair of rows
at a time, spread over workgroups) never sees.

  qk_norm    per-head RMSNorm of q and k before RoPE (Qwen3, Gemma 3), then the QKV epilogue
             (RoPE, q stored, K and V appended to the cache), after a QKV projection that
             stored its raw rows
  post_norm  Gemma's norm of the attention's or the FFN's output before the residual add,
             optionally followed by the next RMSNorm of the residual (the pre-FFN norm)
"""

from __future__ import annotations

from ..runtime.program import Kernel
from .common import Signature, Slots, f16x4_store, wgsl_reduce
from .linear import LinearSpec, QkvShape, Segment, epilogue_wgsl, rows_wgsl

QK_WG = 64  # threads per head (heads of up to 256 dims: 4 values a thread)
POST_WG = 256  # threads per row


def qk_norm_kernel(q: QkvShape, eps: float, q_off: int, k_off: int, rope_off: int,
                   slots: Slots | None = None, partials: int = 1) -> Kernel:
    """Row t of `x` holds a token's raw Q|K|V rows (q_rows + 2 kv_rows values, Q and K rows in
    RoPE's pair order), or with `partials` > 1 rows t * partials .. hold the parts that sum to
    them (a split-K matmul's `partial` epilogue): each q and k head is scaled by 1/rms over
    its head_dim values and by its norm weight (head_dim floats of `pv` at `q_off` / `k_off`,
    in the same order), then rotated and stored as the `qkv` epilogue does (with `slots`, at
    each row's slot and position); V heads go to the cache as they are. grid = qk_norm_grid(q)(n)."""
    spec = LinearSpec(k=4, segments=(Segment("f32", q.q_rows + 2 * q.kv_rows),), epilogue="qkv", qkv=q,
                      rope_off=rope_off, slots=slots)
    sig = Signature().state()
    sig.storage("x", "array<f32>")
    d = q.head_dim
    qh, kh = q.q_rows // d, q.kv_rows // d
    whole = " + ".join(f"x[(t * {partials}u + {s}u) * N + j]" for s in range(partials))
    body = rows_wgsl(spec) + epilogue_wgsl(spec, sig) + wgsl_reduce("red_sum", "sum", QK_WG) + f"""
const D: u32 = {d}u;
fn X(t: u32, j: u32) -> f32 {{ return {whole}; }}
@compute @workgroup_size({QK_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.y;
  if (t >= st.n) {{ return; }}
  let hd = wid.x;  // Q heads, then K heads, then V heads
  let normed = hd < {qh + kh}u;
  let xb = hd * D;
  var sc = 1.0;
  if (normed) {{
    var ss = 0.0;
    for (var i = lid; i < D; i += {QK_WG}u) {{ let v = X(t, xb + i); ss += v * v; }}
    sc = inverseSqrt(red_sum(ss, lid, 1u) / {float(d)!r} + {eps!r});
  }}
  let wo = select({k_off}u, {q_off}u, hd < {qh}u);
  for (var i = lid; i < D / 2u; i += {QK_WG}u) {{
    var v0 = X(t, xb + 2u * i);
    var v1 = X(t, xb + 2u * i + 1u);
    if (normed) {{
      v0 = v0 * sc * pvf(wo + 2u * i);
      v1 = v1 * sc * pvf(wo + 2u * i + 1u);
    }}
    epi(t, hd * (D / 2u) + i, v0, v1);
  }}
}}
"""
    return sig.kernel("qk_norm_rope" if partials == 1 else "split_finish_qk_norm_rope", body)


def qk_norm_grid(q: QkvShape):
    heads = (q.q_rows + 2 * q.kv_rows) // q.head_dim
    return lambda n: (heads, n, 1)


def post_norm_kernel(k: int, eps: float, post_off: int, partials: int = 1, next_off: int | None = None,
                     y_f16: bool = False) -> Kernel:
    """Row t: o = the sum of `partials` rows of `part` (rows t * partials ..: a split-K
    matmul's sums, or with 1 the output row itself); x[t] += o / rms(o) * w (w at float offset
    `post_off` of `pv`); with `next_off`, also y[t] = x[t] / rms(x[t]) * w' (w' at `next_off`),
    the norm before the next linear layer, with `y_f16` as f16s (clamped to their range; k a
    multiple of 8) for an f16-tile matmul that reads them (LinearSpec.x_f16). grid = (n,)."""
    assert not y_f16 or (next_off is not None and k % 8 == 0)
    sig = Signature().state()
    sig.storage("x", "array<vec4<f32>>", write=True)
    sig.storage("part", "array<vec4<f32>>")
    sig.storage("pv", "array<vec4<f32>>")
    if next_off is not None:
        sig.storage("y", "array<vec2<u32>>" if y_f16 else "array<vec4<f32>>", write=True)
    k4 = k // 4
    o = " + ".join(f"part[(t * {partials}u + {s}u) * {k4}u + i]" for s in range(partials))
    body = wgsl_reduce("red_sum", "sum", POST_WG) + f"""
fn out_row(t: u32, i: u32) -> vec4<f32> {{ return {o}; }}
@compute @workgroup_size({POST_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.x;
  if (t >= st.n) {{ return; }}
  var ss = 0.0;
  for (var i = lid; i < {k4}u; i += {POST_WG}u) {{ let o = out_row(t, i); ss += dot(o, o); }}
  let sc = inverseSqrt(red_sum(ss, lid, 1u) / {float(k)!r} + {eps!r});
  var sh = 0.0;
  for (var i = lid; i < {k4}u; i += {POST_WG}u) {{
    let v = x[t * {k4}u + i] + out_row(t, i) * sc * pv[{post_off // 4}u + i];
    x[t * {k4}u + i] = v;
    sh += dot(v, v);
  }}
"""
    if next_off is not None:
        value = f"x[t * {k4}u + i] * sn * pv[{next_off // 4}u + i]"
        store = f"y[t * {k4}u + i] = {value};"
        if y_f16:  # four f16s in two words
            store = f16x4_store(f"y[t * {k4}u + i]", value)
        body += f"""  let sn = inverseSqrt(red_sum(sh, lid, 1u) / {float(k)!r} + {eps!r});
  for (var i = lid; i < {k4}u; i += {POST_WG}u) {{ {store} }}
"""
    body += "}\n"
    return sig.kernel("post_norm" if next_off is None else "post_norm_next" + ("_f16" if y_f16 else ""), body)
