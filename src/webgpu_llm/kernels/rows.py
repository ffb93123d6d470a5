"""Row-wise kernels of the prompt path: embedding lookup and RMSNorm, one workgroup per token."""

from __future__ import annotations

from ..runtime.program import Kernel
from .common import Signature, wgsl_reduce
from .formats import UNIT
from .linear import LinearSpec, _loaders_wgsl

WG = 64


def embed_kernel(fmt_segments: LinearSpec) -> Kernel:
    """x[t, :] = E[tokens[pos + t], :] for t < st.n; E given as (possibly split) segments.

    `fmt_segments.k` is the hidden size; grid = (n,).
    """
    spec = fmt_segments
    sig = Signature().state()
    sig.storage("tokens", "array<u32>")
    loaders = _loaders_wgsl(spec, sig)
    sig.storage("x", "array<vec4<f32>>", write=True)
    k4 = spec.k // 4
    body = loaders + f"""
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.x;
  if (t >= st.n) {{ return; }}
  let tok = min(tokens[st.pos + t], {spec.rows - 1}u);
  for (var u = lid; u < {spec.kp // UNIT}u; u += {WG}u) {{
    let w = load_row(tok, u);
    for (var i = 0u; i < 8u; i++) {{
      if (u * 8u + i < {k4}u) {{ x[t * {k4}u + u * 8u + i] = w[i]; }}
    }}
  }}
}}
"""
    return sig.kernel("embed_" + "+".join(s.fmt for s in spec.segments), body)


def rmsnorm_kernel(k: int, eps: float, nw_off: int = 0, partials: int = 0, norm: bool = True) -> Kernel:
    """y[t] = x[t] / rms(x[t]) * w for t < st.n, w at float offset `nw_off` of the parameter
    buffer `pv`; grid = (n,).

    With `partials` > 0 the split-K sums of the previous matmul (`part`, rows t * partials ..)
    are first added to x (the residual add that matmul left out), and x is written back.
    With `norm` False only that addition is done (after the last layer).
    """
    sig = Signature().state()
    sig.storage("x", "array<vec4<f32>>", write=partials > 0)
    if partials:
        sig.storage("part", "array<vec4<f32>>")
    if norm:
        sig.storage("pv", "array<vec4<f32>>")
        sig.storage("y", "array<vec4<f32>>", write=True)
    k4 = k // 4
    add = " ".join(f"v += part[(t * {partials}u + {s}u) * {k4}u + i];" for s in range(partials))
    read = f"var v = x[t * {k4}u + i]; {add} x[t * {k4}u + i] = v;" if partials else f"let v = x[t * {k4}u + i];"
    scale = f"""  let sc = inverseSqrt(red_sum(ss, lid, 1u) / {float(k)} + {eps!r});
  for (var i = lid; i < {k4}u; i += 256u) {{ y[t * {k4}u + i] = x[t * {k4}u + i] * sc * pv[{nw_off // 4}u + i]; }}""" if norm else ""
    body = wgsl_reduce("red_sum", "sum", 256) + f"""
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let t = wid.x;
  if (t >= st.n) {{ return; }}
  var ss = 0.0;
  for (var i = lid; i < {k4}u; i += 256u) {{ {read} ss += dot(v, v); }}
{scale}
}}
"""
    return sig.kernel("rmsnorm" if norm else "add_partials", body)
