"""Pieces every kernel shares: the binding signature, the per-step state struct, grids and
workgroup-wide reductions.

The state buffer holds the few scalars that change between steps (position, token count,
sampling settings). Kernels read it; only the sampler writes it (it advances `pos`), so a
decode step needs no CPU write at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.program import Kernel, Program

# (name, WGSL type) in buffer order; all 4-byte fields.
STATE_FIELDS: tuple[tuple[str, str], ...] = (
    ("pos", "u32"),  # position of the first token of the current batch
    ("n", "u32"),  # tokens in the current batch
    ("seed", "u32"),
    ("temperature", "f32"),  # 0 = greedy
    ("top_k", "u32"),  # 0 = off
    ("top_p", "f32"),  # 1 = off
    ("min_p", "f32"),  # 0 = off
    ("repeat_penalty", "f32"),  # 1 = off
    ("repeat_last_n", "u32"),
    ("n_gen", "u32"),  # tokens sampled so far (counter for the random stream)
    ("limit", "u32"),  # scoring: tokens[0..limit) are known, so positions < limit-1 have a target
    ("frequency_penalty", "f32"),  # subtracted once per occurrence in the last repeat_last_n (0 = off)
    ("presence_penalty", "f32"),  # subtracted once from every token seen there (0 = off)
)
STATE_WORDS = 16
STATE_INDEX = {name: i for i, (name, _) in enumerate(STATE_FIELDS)}  # a field's word in the buffer


def state_struct(padded: bool = False) -> str:
    """The State struct; `padded` to STATE_WORDS words, as an array of them (a batch's
    per-slot settings) lies in its buffer."""
    body = "\n".join(f"  {n}: {t}," for n, t in STATE_FIELDS)
    if padded:
        body += f"\n  _pad: array<u32, {STATE_WORDS - len(STATE_FIELDS)}>,"
    return f"struct State {{\n{body}\n}}\n"


def pack_state(**values: float) -> np.ndarray:
    words = np.zeros(STATE_WORDS, np.uint32)
    for i, (name, typ) in enumerate(STATE_FIELDS):
        if name in values:
            v = values[name]
            words[i] = np.float32(v).view(np.uint32) if typ == "f32" else np.uint32(int(v))
    return words


def agrees(gpu: Any, kernel: Kernel, inputs: dict[str, np.ndarray], out: str, want: np.ndarray,
           grid: Any, n: int = 1, tol: float = 1e-3) -> bool:
    """A kernel's self-check: run once on `inputs`, is binding `out` finite and within `tol`
    (relative to its largest value) of `want`? False where the device rejects the kernel."""
    try:
        y = gpu.buffer(want.size * 4, f"{kernel.name}_check")
        prog = Program(gpu, f"{kernel.name}_check")
        prog.add(kernel, {"st": gpu.upload(pack_state(n=n)), out: y, **{k: gpu.upload(v) for k, v in inputs.items()}},
                 grid)
        prog.run(n)
        got = gpu.read_array(y, np.float32, want.size).reshape(want.shape)
    except Exception:
        return False
    return bool(np.isfinite(got).all() and np.abs(got - want).max() <= tol * np.abs(want).max())


@dataclass
class Signature:
    """Builds the `@group(0) @binding(i)` declarations of a kernel, in a known order."""

    names: list[str] = field(default_factory=list)
    decls: list[str] = field(default_factory=list)

    def storage(self, name: str, wgsl_type: str, write: bool = False) -> Signature:
        access = "read_write" if write else "read"
        self.decls.append(
            f"@group(0) @binding({len(self.names)}) var<storage, {access}> {name}: {wgsl_type};"
        )
        self.names.append(name)
        return self

    def state(self, write: bool = False) -> Signature:
        return self.storage("st", "State", write)

    def kernel(self, name: str, body: str) -> Kernel:
        """The kernel; the state binding is dropped when the body never reads `st.`
        (auto layouts omit unused bindings, and a bind group must match them exactly)."""
        names, decls = self.names, self.decls
        if "st" in names and "st." not in body:
            i = names.index("st")
            names, decls = names[:i] + names[i + 1:], decls[:i] + decls[i + 1:]
            decls = [d.replace(f"@binding({j + 1})", f"@binding({j})") if j >= i else d
                     for j, d in enumerate(decls)]
        array = any("array<State>" in d for d in decls)
        head = state_struct(padded=array) if "st" in names or array else ""
        return Kernel(name, head + "\n".join(decls) + "\n" + body, tuple(names))


MAX_GROUPS = 65535  # workgroups per grid dimension


PAGE = 16  # KV-cache positions a page holds (the prompt attention's query block)


@dataclass(frozen=True)
class Slots:
    """Several sequences in one step (continuous batching): each has a slot of up to `ctx`
    positions and `ctx + 8` words of token history. A step's rows come with a table `rows` of
    (position, slot) per row; the sampler reads per-slot settings from `slots`, an array of
    State.

    The KV caches are paged: a layer's KV buffer is a pool of `pages` pages of PAGE positions
    (each page its K rows, kv_heads x PAGE x head_dim, then its V rows), and the table `pages`
    lists each slot's pages in position order (`max_pages` entries a slot), so that a
    sequence holds only the pages its length needs (engine/batch.py hands them out)."""

    count: int
    ctx: int
    pages: int = 0  # pages in the pool (0: enough for every slot's whole context)

    @property
    def token_stride(self) -> int:
        return self.ctx + 8

    @property
    def max_pages(self) -> int:
        return -(-self.ctx // PAGE)

    @property
    def pool(self) -> int:
        return self.pages or self.count * self.max_pages

    def wgsl(self) -> str:
        return f"const SLOT_CTX: u32 = {self.ctx}u;\nconst TOKEN_STRIDE: u32 = {self.token_stride}u;\n"


def kv_rows_wgsl(sig: Signature, kv_heads: int, ctx: int, slots: Slots | None) -> str:
    """`fn kv_row(slot, kvh, pos) -> u32`: the K cache row (head_dim values) of a position of
    KV head kvh, in the layer's KV buffer; its V row is V_ROWS rows further. One sequence's
    cache (slot 0): K then V, each (kv_heads, ctx, head_dim); with `slots`, paged (Slots),
    binding the page table `pages`."""
    if slots is None:
        return (f"const V_ROWS: u32 = {kv_heads * ctx}u;\n"
                f"fn kv_row(slot: u32, kvh: u32, pos: u32) -> u32 {{ return kvh * {ctx}u + pos; }}\n")
    if "pages" not in sig.names:
        sig.storage("pages", "array<u32>")
    return (f"const V_ROWS: u32 = {kv_heads * PAGE}u;\n"
            "fn kv_row(slot: u32, kvh: u32, pos: u32) -> u32 {\n"
            f"  let pg = pages[slot * {slots.max_pages}u + pos / {PAGE}u];\n"
            f"  return (pg * {2 * kv_heads}u + kvh) * {PAGE}u + pos % {PAGE}u;\n}}\n")


F16_MAX = 65504.0  # the largest finite f16


def f16_clamped(v: str, vec: str = "") -> str:
    """WGSL: the f32 expression `v` (of type `vec`, e.g. "vec4<f32>"; "": a scalar) clamped to
    f16's finite range, as an f16 store or pack2x16float must get it (past it the conversion
    is undefined)."""
    lo, hi = (f"{vec}(-{F16_MAX!r})", f"{vec}({F16_MAX!r})") if vec else (f"-{F16_MAX!r}", f"{F16_MAX!r}")
    return f"clamp({v}, {lo}, {hi})"


def f16x4_store(dst: str, value: str) -> str:
    """WGSL: the vec4<f32> expression `value` stored at `dst` (an element of an
    array<vec2<u32>>) as four f16s, two to a word, clamped to f16's range first."""
    return (f"let v16 = {f16_clamped(value, 'vec4<f32>')}; "
            f"{dst} = vec2<u32>(pack2x16float(v16.xy), pack2x16float(v16.zw));")


def grid_2d(n: int, limit: int = MAX_GROUPS) -> tuple[int, int, int]:
    """n workgroups as (x, y, 1) within the per-dimension limit; kernels flatten with
    `wid.y * num_workgroups.x + wid.x` and skip the few past n."""
    if n <= limit:
        return (n, 1, 1)
    y = -(-n // limit)
    return (-(-n // y), y, 1)


def wgsl_reduce(name: str, op: str, wg: int, typ: str = "f32", subgroups: bool = False) -> str:
    """`fn name(v, lid, sgs) -> typ`: workgroup-wide reduction (every thread must call it).

    With subgroups: one subgroup operation, one barrier, and a short loop over the
    per-subgroup results; without: a tree through workgroup memory (log2(wg) barriers).
    """
    expr = {"sum": "a + b", "max": "max(a, b)"}[op]
    if subgroups:
        sg_op = {"sum": "subgroupAdd", "max": "subgroupMax"}[op]
        return f"""
var<workgroup> {name}_buf: array<{typ}, {wg}>;
fn {name}(v: {typ}, lid: u32, sgs: u32) -> {typ} {{
  let t = {sg_op}(v);
  if (lid % sgs == 0u) {{ {name}_buf[lid / sgs] = t; }}
  workgroupBarrier();
  var a = {name}_buf[0];
  for (var j = 1u; j < {wg}u / sgs; j++) {{ let b = {name}_buf[j]; a = {expr}; }}
  workgroupBarrier();
  return a;
}}
"""
    return f"""
var<workgroup> {name}_buf: array<{typ}, {wg}>;
fn {name}(v: {typ}, lid: u32, sgs: u32) -> {typ} {{
  {name}_buf[lid] = v;
  workgroupBarrier();
  for (var s = {wg // 2}u; s > 0u; s = s >> 1u) {{
    if (lid < s) {{ let a = {name}_buf[lid]; let b = {name}_buf[lid + s]; {name}_buf[lid] = {expr}; }}
    workgroupBarrier();
  }}
  let r = {name}_buf[0];
  workgroupBarrier();
  return r;
}}
"""
