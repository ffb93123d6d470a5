"""Conventions of the kernels over strided operands (the torch device's): every buffer is
declared `array<u32>` (kernels/dtypes.py reads and writes its elements), shapes, strides,
offsets and scalars travel in a parameter block `P` bound last, and grids are 1-d counts of
threads or workgroups laid out within the per-dimension limit."""

from __future__ import annotations

from .common import Signature, grid_2d

WG = 256  # threads per workgroup of the simple kernels


def grid_1d(threads: int, wg: int = WG) -> tuple[int, int, int]:
    """Workgroups for `threads` threads (at least one), laid out by `grid_2d`."""
    return grid_2d(max(1, -(-threads // wg)))


def grid_rows(rows: int) -> tuple[int, int, int]:
    """One workgroup per row (rows may exceed the per-dimension limit)."""
    return grid_1d(rows, 1)


# WGSL: the flat id of a thread / workgroup in a grid made by grid_1d / grid_rows.
THREAD_ID = "(gid.x + gid.y * nwg.x * {wg}u)"
GROUP_ID = "(wid.x + wid.y * nwg.x)"
MAIN_ARGS = ("@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, "
             "@builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>")


def words(sig: Signature, name: str, write: bool = False, atomic: bool = False) -> Signature:
    """Declare binding `name` as 32-bit words (atomic where threads share a word's elements)."""
    return sig.storage(name, "array<atomic<u32>>" if atomic else "array<u32>", write)


def strided_offset(base: int, rank: int, coord: str = "c") -> str:
    """WGSL: P[base] + sum_d coord_d * P[base + 1 + d]  (an offset plus strides block)."""
    return " + ".join([f"P[{base}u]"] + [f"{coord}{d} * P[{base + 1 + d}u]" for d in range(rank)])


def coords(var: str, index: str, shape_base: int, rank: int, prefix: str = "c") -> str:
    """WGSL declaring prefix0..prefix{rank-1}: the coordinates of `index` in the shape at P[shape_base]."""
    lines = [f"  var {var} = {index};"]
    for d in range(rank - 1, 0, -1):
        lines.append(f"  let {prefix}{d} = {var} % P[{shape_base + d}u]; {var} = {var} / P[{shape_base + d}u];")
    lines.append(f"  let {prefix}0 = {var};")
    return "\n".join(lines)
