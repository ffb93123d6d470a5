"""Data-dependent addressing as map kernels (kernels/mapping.py): the element bodies of
index_select / embedding, index_copy, tril/triu, isin, cat and advanced indexing. Each takes
the map's rank; its own parameter words follow the map's (from `extra_base(rank)`)."""

from __future__ import annotations

from .mapping import extra_base
from .strided import strided_offset


def index_body(rank: int, d: int, scatter: bool) -> str:
    """A gather (read at index[c_d]) or a scatter (write at index[c_d]) along dimension d.

    Parameters: source offset, source strides[rank] (0 at d for a gather), the stride that the
    index multiplies (source's for a gather, output's for a scatter), index offset, index
    stride, size of the indexed dimension (for negative indices).
    """
    b = extra_base(rank)
    src = strided_offset(b, rank)
    step, io, ist, size = b + 1 + rank, b + 2 + rank, b + 3 + rank, b + 4 + rank
    lines = [f"  let j = ld1(P[{io}u] + c{d} * P[{ist}u]);",
             f"  let jj = u32(select(j, j + i32(P[{size}u]), j < 0i));"]
    if scatter:
        lines.append(f"  return Out(oy + jj * P[{step}u], ld0({src}));")
    else:
        lines.append(f"  return Out(oy, ld0({src} + jj * P[{step}u]));")
    return "\n".join(lines)


def triangle_body(rank: int, upper: bool, kind: str) -> str:
    """x.triu(k) / x.tril(k) over the last two dimensions; parameters: x's offset and
    strides[rank], then k."""
    zero = "0.0" if kind == "f32" else "0i"
    cmp = ">=" if upper else "<="
    b = extra_base(rank)
    off = strided_offset(b, rank)
    keep = f"i32(c{rank - 1}) - i32(c{rank - 2}) {cmp} bitcast<i32>(P[{b + 1 + rank}u])"
    return f"  return Out(oy, select({zero}, ld0({off}), {keep}));"


def isin_body(rank: int, invert: bool) -> str:
    """torch.isin(x, test) for a 1-d test that each element scans; parameters: x's offset and
    strides[rank], then test's offset, stride and length."""
    found, other = ("0i", "1i") if invert else ("1i", "0i")
    b = extra_base(rank)
    t = b + 1 + rank
    return (f"  let v = ld0({strided_offset(b, rank)});\n"
            f"  for (var j = 0u; j < P[{t + 2}u]; j++) {{\n"
            f"    if (ld1(P[{t}u] + j * P[{t + 1}u]) == v) {{ return Out(oy, {found}); }}\n"
            f"  }}\n  return Out(oy, {other});")


def cat_body(rank: int, n: int, d: int) -> str:
    """torch.cat of n inputs along d: the input whose range along d holds c_d. Parameters: each
    input's offset and strides[rank], then the running ends of their ranges."""
    b = extra_base(rank)
    ends = b + n * (rank + 1)
    lines = []
    for k in range(n):
        base = b + k * (rank + 1)
        lo = f"P[{ends + k - 1}u]" if k else "0u"
        coord = [f"(c{q} - {lo})" if q == d else f"c{q}" for q in range(rank)]
        idx = " + ".join([f"P[{base}u]"] + [f"{c} * P[{base + 1 + q}u]" for q, c in enumerate(coord)])
        if k < n - 1:
            lines.append(f"  if (c{d} < P[{ends + k}u]) {{ return Out(oy, ld{k}({idx})); }}")
        else:
            lines.append(f"  return Out(oy, ld{k}({idx}));")
    return "\n".join(lines)


def advanced_index_body(rank: int, first: int, n: int, nb: int) -> str:
    """src[..., i0, i1, ...] with n integer index tensors (broadcast to nb dimensions) on the
    dimensions first, first + 1, ... Parameters: the source's offset and strides over the
    output's dimensions, each index's offset and strides[nb], the source strides the indices
    multiply, and the sizes of the indexed dimensions."""
    b = extra_base(rank)
    lines = [f"  var e = {strided_offset(b, rank)};"]
    tail = b + (rank + 1) + n * (nb + 1)  # index strides into the source, then sizes
    for k in range(n):
        ib = b + (rank + 1) + k * (nb + 1)
        at = " + ".join([f"P[{ib}u]"] + [f"c{first + j} * P[{ib + 1 + j}u]" for j in range(nb)])
        step, size = tail + k, tail + n + k
        lines.append(f"  let j{k} = ld{k + 1}({at});")
        lines.append(f"  e += u32(select(j{k}, j{k} + i32(P[{size}u]), j{k} < 0i)) * P[{step}u];")
    lines.append("  return Out(oy, ld0(e));")
    return "\n".join(lines)
