"""Stand-alone versions of the fused epilogues, for the unfused decode path (fusion ablation).

Each kernel applies one linear-layer epilogue (bias + RoPE + KV append, residual add,
SiLU·mul, GELU·mul) or the attention combine to a vector that a plain mat-vec stored: the same WGSL as
the fused path, one dispatch per operation, as an eager framework would run it.
"""

from __future__ import annotations

from ..runtime.program import Kernel
from .common import Signature
from .linear import AttnShape, LinearSpec, QkvShape, Segment, combine_wgsl, epilogue_kernel

WG = 256


def grid(n: int) -> tuple[int, int, int]:
    return (-(-n // WG), 1, 1)


def _pointwise(name: str, spec: LinearSpec) -> Kernel:
    """For every row pair p: epi(0, p, x[row0(p)], x[row1(p)])."""
    return epilogue_kernel(spec, wg=WG, name=name)


def _vec(rows: int) -> tuple[Segment, ...]:
    return (Segment("f32", rows),)  # the format is irrelevant here: only the row count is used


def rope_append_kernel(q: QkvShape, rope_off: int, bias_off: int = 0, bias: bool = False) -> Kernel:
    """x holds the raw Q|K|V rows: add bias, rotate Q and K, store Q, append K and V to the cache.
    grid(pairs)."""
    spec = LinearSpec(k=4, segments=_vec(q.q_rows + 2 * q.kv_rows), epilogue="qkv", qkv=q,
                      rope_off=rope_off, bias=bias, bias_off=bias_off)
    return _pointwise("rope_append", spec)


def residual_kernel(n: int) -> Kernel:
    """y += x over n values; grid(ceil(n/2))."""
    return _pointwise("residual_add", LinearSpec(k=4, segments=_vec(n), epilogue="add"))


def silu_mul_kernel(n: int) -> Kernel:
    """y[i] = silu(x[i]) * x[n + i]; grid(n)."""
    return _pointwise("silu_mul", LinearSpec(k=4, segments=_vec(2 * n), epilogue="silu_mul"))


def gelu_mul_kernel(n: int) -> Kernel:
    """y[i] = gelu_tanh(x[i]) * x[n + i]; grid(n)."""
    return _pointwise("gelu_mul", LinearSpec(k=4, segments=_vec(2 * n), epilogue="gelu_mul"))


def combine_kernel(a: AttnShape, per_block: bool = False) -> Kernel:
    """Merge split-K attention partials into y (heads * head_dim); grid(q_dim / 4). With
    `per_block` (a batched step), those of each query block of one row: block z of the table
    `blocks` (first row, rows, slot, position), its partials at its slot's, into y's row; grid
    (q_dim / 4 / WG, blocks)."""
    sig = Signature().state()
    if per_block:
        sig.storage("blocks", "array<vec4<u32>>")
    sig.storage("ml", "array<vec2<f32>>")
    sig.storage("acc", "array<vec4<f32>>")
    if a.sinks >= 0:
        sig.storage("pv", "array<vec4<f32>>")
    sig.storage("y", "array<vec4<f32>>", write=True)
    d4 = a.head_dim // 4
    if not per_block:
        body = combine_wgsl(a) + f"""
@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let i = gid.x;
  if (i >= {a.n_heads * d4}u) {{ return; }}
  y[i] = combine4(i / {d4}u, i % {d4}u);
}}
"""
        return sig.kernel("attn_combine", body)
    body = "var<private> blk: vec4<u32>;\n" + combine_wgsl(a, "blk.w", f"(blk.z * {a.n_heads}u + h)") + f"""
@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let i = wid.x * {WG}u + lid;
  blk = blocks[wid.y];
  if (i >= {a.n_heads * d4}u || blk.y != 1u) {{ return; }}
  y[blk.x * {a.n_heads * d4}u + i] = combine4(i / {d4}u, i % {d4}u);
}}
"""
    return sig.kernel("attn_combine_blocks", body)
