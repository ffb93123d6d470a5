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
    KV append        index_copy_(kc, 2, p, rope(k)), index_copy_(vc, 2, p, v) -> kv_append(kc, vc, k, v, p, cos, sin)
    attention        sdpa(rope(q), repeat_kv(kc), repeat_kv(vc), mask) -> attention(q, kc, vc, mask, cos, sin)
    no-op scaling    mul(x, 1.0)                               -> x
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
from torch.fx import GraphModule, Node

from .. import fused_ops  # noqa: F401  (defines torch.ops.webgpu)

aten = torch.ops.aten
webgpu = torch.ops.webgpu
END = 2**63 - 1


def is_op(n: Any, *targets: Any) -> bool:
    return isinstance(n, Node) and n.op == "call_function" and n.target in targets


def val(n: Any) -> Any:
    """The example value (a FakeTensor) that tracing attached to a node."""
    return n.meta.get("val") if isinstance(n, Node) else None


def strip_cast(n: Any) -> Any:
    """The input of a dtype-only `_to_copy` (or `n` itself)."""
    if is_op(n, aten._to_copy.default) and set(n.kwargs) <= {"dtype"}:
        return n.args[0]
    return n


def other(n: Node, x: Any) -> Any:
    """The operand of a binary node that is not `x` (None if x is not an operand)."""
    a, b = n.args[0], n.args[1]
    return b if a is x else a if b is x else None


def single_use(n: Any) -> bool:
    return isinstance(n, Node) and len(n.users) == 1


def replace(graph: torch.fx.Graph, old: Node, target: Any, args: tuple[Any, ...]) -> Node:
    with graph.inserting_before(old):
        new = graph.call_function(target, args)
    new.meta.update(old.meta)
    old.replace_all_uses_with(new)
    return new


# -- RMSNorm ----------------------------------------------------------------------------------
def _rms_norm_parts(n: Node) -> tuple[Any, Any, float] | None:
    """(x, weight, eps) if `n` is `weight * rmsnorm(x)` as transformers computes it."""
    if not is_op(n, aten.mul.Tensor):
        return None
    for y, w in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
        z = strip_cast(y)
        if not is_op(z, aten.mul.Tensor):
            continue
        for xf, r in ((z.args[0], z.args[1]), (z.args[1], z.args[0])):
            if not is_op(r, aten.rsqrt.default):
                continue
            a = r.args[0]
            if not (is_op(a, aten.add.Tensor, aten.add.Scalar) and isinstance(a.args[1], float)):
                continue
            m = a.args[0]
            if not (is_op(m, aten.mean.dim) and len(m.args) > 2 and m.args[2] and len(m.args[1]) == 1):
                continue
            p = m.args[0]
            if not (is_op(p, aten.pow.Tensor_Scalar) and p.args[0] is xf and p.args[1] == 2):
                continue
            x = strip_cast(xf)
            xv, wv = val(x), val(w)
            if xv is None or wv is None or wv.dim() != 1 or m.args[1][0] not in (-1, xv.dim() - 1):
                continue
            if y is not z and val(y).dtype != xv.dtype:  # the cast must go back to x's dtype
                continue
            if xf is not x and val(xf).dtype != torch.float32:
                continue
            return x, w, float(a.args[1])
    return None


def fuse_rms_norm(gm: GraphModule) -> int:
    count = 0
    for n in list(gm.graph.nodes):
        parts = _rms_norm_parts(n)
        if parts is not None:
            replace(gm.graph, n, webgpu.rms_norm.default, parts)
            count += 1
    return count


# -- linear layers ----------------------------------------------------------------------------
def _linear_args(n: Any) -> tuple[Any, Any, Any] | None:
    if not is_op(n, aten.linear.default):
        return None
    x, w = n.args[0], n.args[1]
    b = n.args[2] if len(n.args) > 2 else n.kwargs.get("bias")
    return x, w, b


def fuse_residual_linear(gm: GraphModule) -> int:
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, aten.add.Tensor) or n.kwargs.get("alpha", 1) != 1 or len(n.args) > 2:
            continue
        for lin in n.args:
            parts = _linear_args(lin)
            r = other(n, lin)
            if parts is None or not single_use(lin) or not isinstance(r, Node):
                continue
            lv, rv = val(lin), val(r)
            if lv is None or rv is None or lv.shape != rv.shape or lv.dtype != rv.dtype or val(n).dtype != lv.dtype:
                continue
            x, w, b = parts
            replace(gm.graph, n, webgpu.linear.default, (x, w, b, r))
            count += 1
            break
    return count


def fuse_gated_linear(gm: GraphModule) -> int:
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, aten.mul.Tensor):
            continue
        for s, up in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
            if not (is_op(s, aten.silu.default) and single_use(s)):
                continue
            gate, upp = _linear_args(s.args[0]), _linear_args(up)
            if gate is None or upp is None or gate[2] is not None or upp[2] is not None:
                continue
            if gate[0] is not upp[0] or not single_use(s.args[0]) or not single_use(up):
                continue
            replace(gm.graph, n, webgpu.gated_linear.default, (gate[0], gate[1], upp[1]))
            count += 1
            break
    return count


def fuse_linear_group(gm: GraphModule) -> int:
    """Projections of one input (Q, K, V) become one launch."""
    count = 0
    by_input: dict[Node, list[Node]] = {}
    for n in gm.graph.nodes:
        parts = _linear_args(n)
        if parts is not None and isinstance(parts[0], Node) and val(parts[1]) is not None:
            by_input.setdefault(parts[0], []).append(n)
    for lins in by_input.values():
        lins = [n for n in lins if val(n.args[1]).dtype == val(lins[0].args[1]).dtype][:3]
        if len(lins) < 2:
            continue
        x = lins[0].args[0]
        ws = [n.args[1] for n in lins]
        bs = [_linear_args(n)[2] for n in lins]
        with gm.graph.inserting_before(lins[0]):
            group = gm.graph.call_function(webgpu.linear_group.default, (x, ws, bs))
            group.meta["val"] = [val(n) for n in lins]
            for i, n in enumerate(lins):
                item = gm.graph.call_function(operator.getitem, (group, i))
                item.meta.update(n.meta)
                n.replace_all_uses_with(item)
        for n in lins:
            gm.graph.erase_node(n)
        count += 1
    return count


_LINEAR_LIKE = {webgpu.linear.default: 4, webgpu.linear_group.default: 3, webgpu.gated_linear.default: 3,
                aten.linear.default: 4}


def slice_before_norm(gm: GraphModule) -> int:
    """Normalise only the rows that are kept (the LM head reads the last token's row)."""
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, aten.slice.Tensor) or not is_op(n.args[0], webgpu.rms_norm.default):
            continue
        norm = n.args[0]
        if not single_use(norm) or val(n) is None or n.args[1] % val(n).dim() == val(n).dim() - 1:
            continue
        x, w, eps = norm.args
        if val(x) is None or val(x).dtype != val(n).dtype:
            continue
        with gm.graph.inserting_before(n):
            sl = gm.graph.call_function(aten.slice.Tensor, (x, *n.args[1:]))
            sl.meta["val"] = val(n)  # same shape and dtype as the sliced norm
            new = gm.graph.call_function(webgpu.rms_norm.default, (sl, w, eps))
        new.meta.update(n.meta)
        n.replace_all_uses_with(new)
        gm.graph.erase_node(n)
        gm.graph.erase_node(norm)
        count += 1
    return count


def fuse_norm_into_linear(gm: GraphModule) -> int:
    """An RMSNorm read only by linear layers is computed inside each of them."""
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, webgpu.rms_norm.default) or not n.users:
            continue
        users = list(n.users)
        if not all(is_op(u, *_LINEAR_LIKE) and u.args[0] is n and n not in u.args[1:] for u in users):
            continue
        if val(n).dtype != val(n.args[0]).dtype:  # the kernels round the normalised row to x's dtype
            continue
        x, w, eps = n.args
        for u in users:
            slot = _LINEAR_LIKE[u.target]
            args = list(u.args) + [None] * (slot - len(u.args))
            if u.target is aten.linear.default:  # (x, w, bias) -> webgpu.linear(x, w, bias, residual)
                u.target = webgpu.linear.default
            u.args = (x, *args[1:slot], w, eps)
        gm.graph.erase_node(n)
        count += 1
    return count


# -- RoPE -------------------------------------------------------------------------------------
def _rotate_half_of(n: Any) -> Any:
    """x if n is cat([-x[..., h:], x[..., :h]], -1) (transformers' rotate_half)."""
    if not is_op(n, aten.cat.default) or len(n.args[0]) != 2:
        return None
    neg, first = n.args[0]
    if not is_op(neg, aten.neg.default):
        return None
    second = neg.args[0]
    if not (is_op(second, aten.slice.Tensor) and is_op(first, aten.slice.Tensor)):
        return None
    x = first.args[0]
    xv = val(x)
    if xv is None or second.args[0] is not x:
        return None
    last = xv.dim() - 1
    d = xv.shape[-1]

    def sl(s: Node) -> tuple[int, int, int]:
        dim = s.args[1] % xv.dim()
        start, end = (s.args[2] if len(s.args) > 2 else 0), (s.args[3] if len(s.args) > 3 else END)
        return dim, start, min(end, d)

    cat_dim = n.args[1] if len(n.args) > 1 else 0
    if cat_dim % xv.dim() != last or d % 2 or sl(first) != (last, 0, d // 2) or sl(second) != (last, d // 2, d):
        return None
    return x


def fuse_rope(gm: GraphModule) -> int:
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, aten.add.Tensor) or len(n.args) > 2 or n.kwargs.get("alpha", 1) != 1:
            continue
        for m1, m2 in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
            if not (is_op(m1, aten.mul.Tensor) and is_op(m2, aten.mul.Tensor)):
                continue
            for rot, sin in ((m2.args[0], m2.args[1]), (m2.args[1], m2.args[0])):
                x = _rotate_half_of(rot)
                cos = other(m1, x) if x is not None else None
                if cos is None or not isinstance(cos, Node) or not isinstance(sin, Node):
                    continue
                if val(cos).shape != val(sin).shape or val(n).dtype != torch.promote_types(val(x).dtype, val(cos).dtype):
                    continue
                replace(gm.graph, n, webgpu.rope.default, (x, cos, sin))
                count += 1
                break
            else:
                continue
            break
    return count


# -- in-place cache updates -------------------------------------------------------------------
def fuse_inplace_index_copy(gm: GraphModule) -> int:
    """Functionalization turns `cache.index_copy_(...)` into a full copy of the cache and a
    copy_ back; write in place instead (when nothing else reads the old cache)."""
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, aten.index_copy.default):
            continue
        cache = n.args[0]
        if not isinstance(cache, Node) or cache.op != "placeholder":
            continue
        copies = [u for u in cache.users if is_op(u, aten.copy_.default) and u.args[1] is n]
        if len(copies) != 1 or set(cache.users) != {n, copies[0]}:
            continue
        inplace = replace(gm.graph, n, aten.index_copy_.default, tuple(n.args))
        copies[0].replace_all_uses_with(inplace)
        gm.graph.erase_node(copies[0])
        gm.graph.erase_node(n)
        count += 1
    return count


def fuse_inplace_counter(gm: GraphModule) -> int:
    """copy_(n, add(n, k)) at the end of a graph (a cache's length counter) -> n.add_(k)."""
    count = 0
    for c in list(gm.graph.nodes):
        if not is_op(c, aten.copy_.default):
            continue
        dst, a = c.args[0], c.args[1]
        if not (is_op(a, aten.add.Tensor) and a.args[0] is dst and single_use(a) and len(a.args) == 2):
            continue
        if val(a) is None or val(dst) is None or val(a).dtype != val(dst).dtype or val(a).shape != val(dst).shape:
            continue
        replace(gm.graph, c, aten.add_.Tensor, (dst, a.args[1]))
        gm.graph.erase_node(c)
        gm.graph.erase_node(a)
        count += 1
    return count


def fuse_kv_append(gm: GraphModule) -> int:
    """Both cache writes of a layer (and the RoPE of its keys, and its positions) in one launch."""
    count = 0
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    writes = [n for n in nodes if is_op(n, aten.index_copy_.default) and n.args[1] == 2]
    for kw in writes:
        vw = next((w for w in writes if w is not kw and w.args[2] is kw.args[2] and order[w] > order[kw]), None)
        if vw is None or kw.target is None:
            continue
        kc, _, idx, k = kw.args
        vc, v = vw.args[0], vw.args[3]
        cos = sin = None
        if is_op(k, webgpu.rope.default) and single_use(k):
            k, cos, sin = k.args
        kv, vv = val(k), val(v)
        if kv is None or vv is None or kv.dim() != 4 or kv.shape != vv.shape:
            continue
        start = False
        if is_op(idx, aten.add.Tensor) and is_op(idx.args[0], aten.arange.default) and len(idx.args[0].args) == 1:
            cum = idx.args[1]
            if isinstance(cum, Node) and val(cum) is not None and val(cum).dim() == 0:
                idx, start = cum, True
        if any(isinstance(a, Node) and order.get(a, -1) >= order[kw] for a in (k, v, idx, cos, sin)):
            continue
        with gm.graph.inserting_before(kw):
            gm.graph.call_function(webgpu.kv_append.default, (kc, vc, k, v, idx, start, cos, sin))
        kw.replace_all_uses_with(kc)
        vw.replace_all_uses_with(vc)
        gm.graph.erase_node(kw)
        gm.graph.erase_node(vw)
        writes = [w for w in writes if w not in (kw, vw)]
        count += 1
    return count


def _unrepeat_kv(n: Any) -> Any:
    """The cache behind transformers' repeat_kv (unsqueeze -> expand -> [clone] -> view), or n."""
    m = n
    if is_op(m, aten.view.default, aten._unsafe_view.default, aten.reshape.default):
        m = m.args[0]
        if is_op(m, aten.clone.default):
            m = m.args[0]
        if is_op(m, aten.expand.default) and is_op(m.args[0], aten.unsqueeze.default) and m.args[0].args[1] == 2:
            kv = m.args[0].args[0]
            if val(kv) is not None and val(kv).dim() == 4:
                return kv
    return n


def fuse_attention(gm: GraphModule) -> int:
    count = 0
    for n in list(gm.graph.nodes):
        if not is_op(n, aten.scaled_dot_product_attention.default):
            continue
        names = ["query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"]
        a = dict(zip(names, [None, None, None, None, 0.0, False, None, False]))
        a.update(zip(names, n.args))
        a.update(n.kwargs)
        q, k, v = a["query"], _unrepeat_kv(a["key"]), _unrepeat_kv(a["value"])
        qv, kv = val(q), val(k)
        if a["dropout_p"] or qv is None or kv is None or qv.dim() != 4 or qv.shape[1] % kv.shape[1]:
            continue
        scale = a["scale"] if a["scale"] is not None else qv.shape[-1] ** -0.5
        cos = sin = None
        if is_op(q, webgpu.rope.default) and single_use(q) and val(q.args[0]).dtype == qv.dtype:
            q, cos, sin = q.args
        replace(gm.graph, n, webgpu.attention.default, (q, k, v, a["attn_mask"], float(scale), bool(a["is_causal"]),
                                                        cos, sin))
        count += 1
    return count


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
    fuse_kv_append,
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
