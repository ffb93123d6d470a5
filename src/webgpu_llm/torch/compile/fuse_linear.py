"""Fusion passes around linear layers: RMSNorm, residual connections, SwiGLU, QKV groups."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch.fx import GraphModule, Node

from .. import fused_ops  # noqa: F401  (defines torch.ops.webgpu)
from .graph_utils import is_op, other, replace, single_use, strip_cast, val

aten = torch.ops.aten
webgpu = torch.ops.webgpu


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
