"""Fusion passes around attention: RoPE, the KV cache writes, grouped-query attention."""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from .. import fused_ops  # noqa: F401  (defines torch.ops.webgpu)
from .graph_utils import END, is_op, other, replace, single_use, val

aten = torch.ops.aten
webgpu = torch.ops.webgpu


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


def batch_inplace_adds(gm: GraphModule) -> int:
    """Scalar add_s into tensors no later node reads (a static cache's per-layer length counters,
    at the end of a decode graph) -> one _foreach_add_, which launches once for all of them."""
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    groups: dict[Any, list[Node]] = {}
    for n in nodes:
        if not (is_op(n, aten.add_.Scalar, aten.add_.Tensor) and len(n.args) == 2 and not n.kwargs and not n.users):
            continue
        x, k = n.args
        if not isinstance(x, Node) or isinstance(k, (Node, bool)) or not isinstance(k, (int, float)):
            continue
        if any(order[u] > order[n] for u in x.users if u is not n):
            continue
        groups.setdefault((type(k), k), []).append(n)
    count = 0
    for (_, k), adds in groups.items():
        targets = [n.args[0] for n in adds]
        if len(adds) < 2 or len(set(targets)) != len(targets):
            continue
        with gm.graph.inserting_after(adds[-1]):
            gm.graph.call_function(aten._foreach_add_.Scalar, (targets, k))
        for n in adds:
            gm.graph.erase_node(n)
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


def fuse_append_into_attention(gm: GraphModule) -> int:
    """kv_append(kc, vc, k, v, p, ..., cos, sin) followed by attention(q, kc, vc, ..., cos, sin) of
    one query row and one new token -> attention_append: the attention takes the token's key and
    value from it and its merge launch writes them into the cache (kernels/sdpa.py)."""
    count = 0
    for kv in [n for n in gm.graph.nodes if is_op(n, webgpu.kv_append.default)]:
        kc, vc, k, v, idx, start, kcos, ksin = kv.args
        at = next((u for u in kc.users if is_op(u, webgpu.attention.default) and u.args[1] is kc and u.args[2] is vc), None)
        if at is None or any(u is not kv and u is not at for u in (*kc.users, *vc.users)):
            continue  # something else reads or writes the cache
        q, _, _, mask, scale, causal, cos, sin = at.args
        if (kcos, ksin) != (cos, sin) or val(q) is None or val(k) is None or val(q).shape[2] != 1 or val(k).shape[2] != 1:
            continue
        replace(gm.graph, at, webgpu.attention_append.default, (q, kc, vc, mask, scale, causal, cos, sin, k, v, idx, start))
        gm.graph.erase_node(at)
        gm.graph.erase_node(kv)
        count += 1
    return count


_RESHAPES = (aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.clone.default,
             aten.transpose.int, aten.permute.default)


def _keeps_order(n: Node) -> bool:
    """Does this reshaping node keep its input's elements in the same (row-major) order? Views,
    reshapes and clones do; a transpose or permute does when the dimensions it moves past each
    other are all but one of size 1."""
    if is_op(n, aten.transpose.int, aten.permute.default):
        shape = val(n.args[0]).shape
        perm = list(range(len(shape)))
        if is_op(n, aten.transpose.int):
            a, b = n.args[1] % len(shape), n.args[2] % len(shape)
            perm[a], perm[b] = perm[b], perm[a]
        else:
            perm = [d % len(shape) for d in n.args[1]]
        big = [d for d in perm if shape[d] != 1]
        return big == sorted(big)
    return True


def fuse_attention_into_linear(gm: GraphModule) -> int:
    """attention_append of one query row, its heads put side by side (transpose, view), then the
    output projection: linear(view(attention_append(...)), w, b, r) -> attention_linear(..., w, b, r),
    whose projection merges the attention's key splits itself (one launch fewer a layer)."""
    count = 0
    for lin in [n for n in gm.graph.nodes if is_op(n, webgpu.linear.default)]:
        if len(lin.args) > 4 and lin.args[4] is not None:
            continue  # the input is normalised first
        chain, x = [], lin.args[0]
        while is_op(x, *_RESHAPES) and single_use(x) and val(x.args[0]) is not None and _keeps_order(x):
            chain.append(x)
            x = x.args[0]
        if not (is_op(x, webgpu.attention_append.default) and single_use(x)):
            continue
        av, lv = val(x), val(lin)
        if av is None or lv is None or av.shape[0] != 1 or av.shape[2] != 1 or av.dtype != lv.dtype:
            continue
        if list(lv.shape) != [1, 1, lv.shape[-1]] or val(lin.args[0]).shape[-1] != av.shape[1] * av.shape[3]:
            continue
        w, bias, res = (*lin.args[1:4], None, None)[:3]
        replace(gm.graph, lin, webgpu.attention_linear.default, (*x.args, w, bias, res))
        gm.graph.erase_node(lin)
        for n in chain:
            gm.graph.erase_node(n)
        gm.graph.erase_node(x)
        count += 1
    return count
