"""Fusion passes over functionalized ATen graphs of Llama-style decoders.

Each pass finds one pattern as transformers' modules emit it and puts a fused `webgpu` op in
its place; nodes left without users are removed at the end. Patterns that do not match
exactly (other dtypes, other axes, extra users of an intermediate) are left alone: the graph
stays correct, only slower.

    RMSNorm          pow(x, 2) -> mean(-1) -> add eps -> rsqrt -> mul x -> [cast] -> mul w
    residual linear  add(r, linear(x, W, b))                   -> linear(x, W, b, residual=r)
    SwiGLU           mul(silu(linear(x, Wg)), linear(x, Wu))   -> gated_linear(x, Wg, Wu)
    RoPE             x * cos + cat(-x2, x1) * sin              -> rope(x, cos, sin)
    QKV              linear(x, Wq, bq), linear(x, Wk, bk), ... -> linear_group(x, [Wq, Wk, ...], [bq, bk, ...])
    norm + linear    linear-like(rms_norm(x, w))               -> linear-like(x, ..., norm_w=w)
    last token       slice(rms_norm(x), seq, -1:)             -> rms_norm(slice(x, seq, -1:))
    KV cache update  copy_(cache, index_copy(cache, ...))      -> index_copy_(cache, ...)
    counter update   copy_(n, add(n, k))                       -> add_(n, k)
    counter batch    add_(n1, k), add_(n2, k), ... (graph end)  -> _foreach_add_([n1, n2, ...], k)
    KV append        index_copy_(kc, 2, p, rope(k)), index_copy_(vc, 2, p, v) -> kv_append(kc, vc, k, v, p, cos, sin)
    attention        sdpa(rope(q), repeat_kv(kc), repeat_kv(vc), mask) -> attention(q, kc, vc, mask, cos, sin)
    append + attend  kv_append(kc, vc, k, v, p), attention(q, kc, vc, ...) (one token) -> attention_append(...)
    attend + O       linear(view(attention_append(...)), Wo, b, r) (one query row) -> attention_linear(..., Wo, b, r)
    no-op scaling    mul(x, 1.0)                               -> x
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node

from .fuse_attention import (
    batch_inplace_adds,
    fuse_append_into_attention,
    fuse_attention,
    fuse_attention_into_linear,
    fuse_inplace_counter,
    fuse_inplace_index_copy,
    fuse_kv_append,
    fuse_rope,
)
from .fuse_linear import (
    fuse_gated_linear,
    fuse_linear_group,
    fuse_norm_into_linear,
    fuse_residual_linear,
    fuse_rms_norm,
    slice_before_norm,
)
from .graph_utils import is_op, val

aten = torch.ops.aten


def drop_identity_scaling(gm: GraphModule) -> int:
    count = 0
    for n in list(gm.graph.nodes):
        if is_op(n, aten.mul.Tensor) and n.args[1] == 1.0 and isinstance(n.args[0], Node):
            x = n.args[0]
            if val(x) is not None and val(n) is not None and val(x).dtype == val(n).dtype:
                n.replace_all_uses_with(x)
                gm.graph.erase_node(n)
                count += 1
    return count


PASSES: list[Callable[[GraphModule], int]] = [
    drop_identity_scaling, fuse_inplace_index_copy, fuse_inplace_counter, fuse_rms_norm, fuse_rope,
    fuse_gated_linear, fuse_residual_linear, fuse_linear_group, slice_before_norm, fuse_norm_into_linear, fuse_attention,
    fuse_kv_append, fuse_append_into_attention, fuse_attention_into_linear, batch_inplace_adds,
]


def fuse(gm: GraphModule) -> dict[str, int]:
    """Run every pass; returns how many times each one fired."""
    fired = {}
    for p in PASSES:
        fired[p.__name__] = p(gm)
        gm.graph.eliminate_dead_code()
    gm.graph.lint()
    gm.recompile()
    return fired
