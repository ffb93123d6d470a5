"""What every torch-device kernel shares: binding tensors, packing parameters, grid sizes."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import torch

from ..context import ctx
from ..dtypes import DType
from ..memory import Block
from ..tensors import block

WG = 256  # threads per workgroup of the simple kernels
MAX_GROUPS = 65535  # per grid dimension


def binding(t: torch.Tensor) -> Block:
    """The block of `t`, bound whole (kernels add the tensor's offset themselves)."""
    b = block(t)
    if b.size > ctx().gpu.max_binding:
        raise NotImplementedError(
            f"a tensor of {b.size / 2**20:.0f} MiB is over this adapter's binding limit of "
            f"{ctx().gpu.max_binding / 2**20:.0f} MiB"
        )
    return b


def grid_1d(threads: int, wg: int = WG) -> tuple[int, int, int]:
    """Workgroups for `threads` threads; rows of MAX_GROUPS when one dimension is not enough."""
    groups = max(1, -(-threads // wg))
    if groups <= MAX_GROUPS:
        return (groups, 1, 1)
    return (MAX_GROUPS, -(-groups // MAX_GROUPS), 1)


def grid_rows(rows: int) -> tuple[int, int, int]:
    """One workgroup per row (rows may exceed MAX_GROUPS)."""
    return grid_1d(rows, 1)


# WGSL: the flat id of a thread / workgroup in a grid made by grid_1d / grid_rows.
THREAD_ID = "(gid.x + gid.y * nwg.x * {wg}u)"
GROUP_ID = "(wid.x + wid.y * nwg.x)"
MAIN_ARGS = ("@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>, "
             "@builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3<u32>")


def pack(words: Sequence[int], floats: Sequence[float] = (), kind: str = "f32") -> bytes:
    """u32 words, then scalars as f32 or i32 bit patterns."""
    head = struct.pack(f"<{len(words)}I", *[w & 0xFFFFFFFF for w in words])
    if not floats:
        return head
    if kind == "f32":
        return head + struct.pack(f"<{len(floats)}f", *floats)
    return head + struct.pack(f"<{len(floats)}i", *[_i32(v) for v in floats])


def _i32(v: float) -> int:
    i = int(v)
    return max(-(2**31), min(2**31 - 1, i))


def storage_decl(i: int, name: str, write: bool = False, atomic: bool = False) -> str:
    access = "read_write" if write else "read"
    elem = "atomic<u32>" if atomic else "u32"
    return f"@group(0) @binding({i}) var<storage, {access}> {name}: array<{elem}>;"


def word_reader(name: str, atomic: bool = False) -> Callable[[str], str]:
    if atomic:
        return lambda i: f"atomicLoad(&{name}[{i}])"
    return lambda i: f"{name}[{i}]"


def element_store(dt: DType, buf: str = "Y") -> tuple[bool, str]:
    """(needs an atomic binding, WGSL `fn st_{buf}(e: u32, v: kind)`) storing element e.

    For kernels where several threads may write elements of one word; 8/16-bit elements
    are merged into their word with atomic and/or.
    """
    head = f"fn st_{buf}(e: u32, v: {dt.kind}) {{\n"
    if dt.size == 4:
        return False, head + f"  {buf}[e] = {dt.bits('v')};\n}}\n"
    if dt.size == 8:
        return False, head + (f"  {buf}[2u * e] = bitcast<u32>(v);\n"
                              f"  {buf}[2u * e + 1u] = select(0u, 0xffffffffu, v < 0i);\n}}\n")
    vec, width = dt.per_word, 8 * dt.size
    mask = (1 << width) - 1
    return True, head + (f"  let sh = {width}u * (e % {vec}u);\n"
                         f"  atomicAnd(&{buf}[e / {vec}u], ~({mask}u << sh));\n"
                         f"  atomicOr(&{buf}[e / {vec}u], {dt.bits('v')} << sh);\n}}\n")


def loader(dt: DType, buf: str, kind: str | None = None, fn: str | None = None) -> str:
    """WGSL `fn ld_{buf}(e: u32) -> kind` reading element e of binding `buf`."""
    kind = kind or dt.kind
    v = dt.load(word_reader(buf), "e")
    if dt.kind != kind:
        v = f"{kind}({v})"
    return f"fn {fn or 'ld_' + buf}(e: u32) -> {kind} {{ return {v}; }}\n"


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


def vec4_elems(dt: DType) -> int:
    """Elements of a float type in one 16-byte load."""
    return 16 // dt.size


def vec4_decoder(dt: DType, fn: str = "wdec") -> str:
    """WGSL `fn fn(v: vec4<u32>) -> array<f32, n>`: 16 bytes of a float type as f32."""
    n = vec4_elems(dt)
    if dt.name == "f32":
        vals = ", ".join(f"bitcast<f32>(v.{c})" for c in "xyzw")
    elif dt.name == "f16":
        vals = ", ".join(f"unpack2x16float(v.{c}).{h}" for c in "xyzw" for h in "xy")
    elif dt.name == "bf16":
        vals = ", ".join(f"bitcast<f32>(v.{c} << 16u), bitcast<f32>(v.{c} & 0xffff0000u)" for c in "xyzw")
    else:
        raise TypeError(f"no 16-byte reader for {dt.name}")
    return f"fn {fn}(v: vec4<u32>) -> array<f32, {n}> {{\n  return array<f32, {n}>({vals});\n}}\n"


def vec4_reader(dt: DType, fn: str = "wunit", buf: str = "W4") -> str:
    """WGSL `fn fn(i) -> array<f32, n>`: the 16 bytes at vec4 index i of binding `buf` as f32."""
    return (vec4_decoder(dt, f"{fn}_dec")
            + f"fn {fn}(i: u32) -> array<f32, {vec4_elems(dt)}> {{ return {fn}_dec({buf}[i]); }}\n")
