"""Persistent kernels: a chain of kernels run as one dispatch, stages parted by a grid barrier.

A dispatch boundary costs ~1.4 µs of GPU time per stage on the H200 (a probe's decode step as
one dispatch was 20-23 % shorter than one dispatch per stage; the engine's layers as one
dispatch each, 5-24 % more tokens/s on Dawn). Here
`G` workgroups stay resident and walk the stages in order: in stage s each takes the virtual
workgroups g, g+G, g+2G, ... of that kernel's grid and calls the kernel's `main` as a function,
then all G meet at a barrier made of a storage atomic before stage s+1 reads what s wrote.

The stages are the ordinary kernels, rewritten as text: module-scope names get a stage prefix,
the entry point becomes `sN_main(builtins...)`, and every GPU buffer gets one binding (WebGPU
forbids binding a buffer twice when one binding is writable). Where stages view a buffer as
`array<f32>` and `array<vec4<f32>>`, it is declared as vec4s and the f32 accesses become
`b[i >> 2u][i & 3u]`. Workgroup variables declared alike by several stages (the row-group
reductions) share their memory: the stages run one after another, with a barrier between.

The memory model of WGSL does not promise that a workgroup sees another's plain stores after
an atomic hand-off. What holds in practice (bench/probe_persistent_decode.py): a load is fresh when
no workgroup of the dispatch has read that memory earlier, so a caller gives every hand-off a
region that nothing reads before it is written, within the dispatch. A barrier that cannot
complete (not all G workgroups resident) gives up after SPIN_CAP polls and raises the sticky
flag `sync[0]`; the host checks it, and the result against one dispatch per kernel, before it
uses a persistent kernel (engine/session.py, `_persistent_mismatch`). That is not enough for
a guarantee: `storageBarrier` orders memory within a workgroup only and the atomics are
relaxed, so a workgroup may see another's arrival before that one's stores. A stress test saw
it in about 1 of 100 checks, which is why the engine leaves these kernels off
unless asked (WEBGPU_LLM_PERSIST).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..runtime.program import Kernel
from .common import state_struct

SPIN_CAP = 1 << 20  # polls of a barrier's counter before it gives up (~0.1-1 s)
# words of `sync`: the give-up flag (sticky), the departures and the barriers' arrivals (one
# counter: spreading the arrivals over 2-8 counters was slower)
GIVE_UP, DEPARTED, ARRIVED = 0, 1, 2
SYNC_WORDS = 4

_BINDING = re.compile(r"@group\(0\) @binding\(\d+\) var<storage, (read|read_write)> (\w+): ([^;]+);\n?")
_MODULE_NAME = re.compile(r"^(?:fn|const|override|var(?:<[^>]*>)?|alias|struct)\s+(\w+)", re.M)
_IDENT = re.compile(r"(?<![\w.])([A-Za-z_]\w*)")
_ENTRY = re.compile(r"@compute\s*@workgroup_size\((\w+)\)\s*fn\s+(\w+)\s*\(((?:[^()]|\([^()]*\))*)\)")
_PARAM = re.compile(r"@builtin\((\w+)\)\s*(\w+)\s*:\s*([\w<>]+)")
_CONST = re.compile(r"^const\s+(\w+)\s*:\s*u32\s*=\s*(\d+)u;", re.M)
_WG_VAR = re.compile(r"^var<workgroup>\s+(\w+)\s*:\s*([^;]+);\n?", re.M)
_ENABLE = re.compile(r"^enable [\w, ]+;\n?", re.M)

F32, VEC4 = "array<f32>", "array<vec4<f32>>"


@dataclass(frozen=True)
class Stage:
    """One kernel of the chain: its buffers by binding name and its grid.

    `count` is a WGSL expression (u32) of the stage's workgroups, which may read the state
    (`st.pos`); `width` is the grid's x size when the kernel reads a 2-D workgroup id (0: 1-D);
    `grid` is the kernel's grid when it is dispatched on its own.
    """

    kernel: Kernel
    buffers: dict[str, Any]
    count: str
    width: int = 0
    grid: tuple[int, int, int] = (1, 1, 1)


@dataclass
class _Binding:
    buffer: Any
    name: str
    types: set[str]
    write: bool

    @property
    def wgsl_type(self) -> str:
        if len(self.types) == 1:
            return next(iter(self.types))
        if self.types == {F32, VEC4}:
            return VEC4
        raise ValueError(f"binding {self.name} is viewed as {sorted(self.types)}: no common type")


def _matching(text: str, open_at: int) -> int:
    """Index of the `]` that closes the `[` at `open_at`."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "[":
            depth += 1
        elif text[i] == "]":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced brackets in a kernel")


def _as_vec4_components(text: str, name: str) -> str:
    """`name[e]` (an f32 array) -> `name[(e) >> 2u][(e) & 3u]` (the same float of vec4s)."""
    out, i = [], 0
    pat = re.compile(rf"(?<![\w.]){name}\[")
    while (m := pat.search(text, i)) is not None:
        close = _matching(text, m.end() - 1)
        e = _as_vec4_components(text[m.end():close], name)
        out.append(text[i:m.start()] + f"{name}[({e}) >> 2u][({e}) & 3u]")
        i = close + 1
    return "".join(out) + text[i:]


def _const_value(body: str, expr: str) -> int:
    if expr.isdigit():
        return int(expr)
    consts = dict(_CONST.findall(body))
    if expr not in consts:
        raise ValueError(f"workgroup size {expr!r} is not a u32 constant")
    return int(consts[expr])


def persistent_kernel(name: str, stages: list[Stage], groups: int, wg: int,
                      subgroups: str | None = None) -> tuple[Kernel, list[Any]]:
    """One kernel running `stages` in order on `groups` resident workgroups of `wg` threads.

    Returns the kernel and its buffers in binding order; its last binding, `sync`
    (array<atomic<u32>>, SYNC_WORDS words, zero at first), is left to the caller. The
    kernel leaves `sync`'s counters at zero (the last workgroup out resets them), so chains
    dispatched one after another can share it. `subgroups` is the backend's enable line,
    used when any stage reads the subgroup size.
    """
    # every buffer once, with the union of the stages' views of it
    bindings: dict[int, _Binding] = {}
    for stg in stages:
        for access, bname, btype in _BINDING.findall(stg.kernel.wgsl):
            buf = stg.buffers[bname]
            b = bindings.setdefault(id(buf), _Binding(buf, "st" if bname == "st" else f"pbuf{len(bindings)}",
                                                      set(), False))
            b.types.add(btype.strip())
            b.write |= access == "read_write"
    codes, calls = [], []
    shared: dict[tuple[str, str], str] = {}  # (name, type) -> the workgroup variable that holds it
    uses_sg = False
    for si, stg in enumerate(stages):
        code, call, sg = _stage(si, stg, bindings, shared, groups, wg)
        codes.append(code)
        calls.append(call)
        uses_sg |= sg
    ordered = sorted(bindings.values(), key=lambda b: -1 if b.name == "st" else int(b.name[4:]))
    decls = [f"@group(0) @binding({i}) var<storage, {'read_write' if b.write else 'read'}> "
             f"{b.name}: {'State' if b.name == 'st' else b.wgsl_type};" for i, b in enumerate(ordered)]
    decls.append(f"@group(0) @binding({len(ordered)}) var<storage, read_write> sync: array<atomic<u32>>;")
    body = calls
    sg_param = ", @builtin(subgroup_size) psgs: u32" if uses_sg else ""
    head = (subgroups + "\n" if uses_sg and subgroups else "") + (state_struct() if "st" in {b.name for b in ordered} else "")
    if any(re.search(r"^enable f16;", stg.kernel.wgsl, re.M) for stg in stages):  # (stages' own enables are cut)
        head = "enable f16;\n" + head
    nl = "\n"
    wgsl = f"""{head}{nl.join(decls)}
{_BARRIER}
{nl.join(codes)}
@compute @workgroup_size({wg})
fn main(@builtin(workgroup_id) pw: vec3<u32>, @builtin(local_invocation_index) plid: u32{sg_param}) {{
{nl.join(body)}
  // the last workgroup out zeroes the counters for the next chain (all have passed every wait)
  if (plid == 0u && atomicAdd(&sync[{DEPARTED}u], 1u) == {groups - 1}u) {{
    atomicStore(&sync[{ARRIVED}u], 0u);
    atomicStore(&sync[{DEPARTED}u], 0u);
  }}
}}
"""
    return Kernel(name, wgsl, (*(b.name for b in ordered), "sync")), [b.buffer for b in ordered]


def _stage(si: int, stg: Stage, bindings: dict[int, _Binding], shared: dict[tuple[str, str], str],
           groups: int, wg: int) -> tuple[str, str, bool]:
    """Stage `si` as module code (names prefixed `s{si}_`, bindings renamed, `main` a
    function), the loop that calls it on this workgroup's turns, and whether it reads the
    subgroup size."""
    text = _ENABLE.sub("", stg.kernel.wgsl).replace(state_struct(), "")
    local: dict[str, str] = {}
    floats = []  # this stage's f32 views of buffers declared as vec4s
    for _, bname, btype in _BINDING.findall(text):
        b = bindings[id(stg.buffers[bname])]
        local[bname] = b.name
        if btype.strip() == F32 and b.wgsl_type == VEC4:
            floats.append(b.name)
    text = _BINDING.sub("", text)
    shadowed = [n for n in local if re.search(rf"(?:\b(?:let|var)\s+|[(,]\s*){n}\s*[:=]", text)]
    if shadowed:  # the renaming cannot tell such a local from the binding
        raise ValueError(f"{stg.kernel.name}: a local or parameter shadows binding {shadowed[0]!r}")
    prefix = f"s{si}_"
    consts = dict(_CONST.findall(text))
    renames = {n: prefix + n for n in _MODULE_NAME.findall(text) if n != "State"}
    for wname, wtype in _WG_VAR.findall(text):  # alike workgroup variables share memory
        resolved = _IDENT.sub(lambda m: consts[m.group(1)] + "u" if m.group(1) in consts else m.group(1),
                              wtype.strip())
        renames[wname] = shared.setdefault((wname, resolved), renames[wname])
    text = _WG_VAR.sub(lambda m: m.group(0) if renames[m.group(1)] == prefix + m.group(1) else "", text)
    text = _IDENT.sub(lambda m: local.get(m.group(1)) or renames.get(m.group(1), m.group(1)), text)
    for f in floats:
        text = _as_vec4_components(text, f)
    # a kernel with the hook `early_requested` (linear.py) waits for the stage before it there,
    # on its first turn, so that its early weight requests overlap the wait
    hook = f"fn {prefix}early_requested() {{}}"
    waits = si > 0 and hook in text
    text = text.replace(hook, "")
    text = text.replace(f"{prefix}early_requested();", f"if (first) {{ p_wait(lid_p, {si}u * {groups}u); }}" if waits else "")
    entry = _ENTRY.search(text)
    if entry is None or entry.group(2) != prefix + "main":
        raise ValueError(f"{stg.kernel.name}: no compute entry point `main`")
    if (size := _const_value(stg.kernel.wgsl, entry.group(1).removeprefix(prefix))) != wg:
        raise ValueError(f"{stg.kernel.name}: workgroup size {size}, the persistent kernel's is {wg}")
    params = _PARAM.findall(entry.group(3))
    w = stg.width
    value = {"workgroup_id": f"vec3<u32>(v % {w}u, v / {w}u, 0u)" if w else "vec3<u32>(v, 0u, 0u)",
             "num_workgroups": f"vec3<u32>({w}u, (n + {w - 1}u) / {w}u, 1u)" if w else "vec3<u32>(n, 1u, 1u)",
             "local_invocation_index": "plid", "subgroup_size": "psgs",
             "local_invocation_id": "vec3<u32>(plid, 0u, 0u)",
             "global_invocation_id": f"vec3<u32>(v * {wg}u + plid, 0u, 0u)"}
    unknown = [b for b, _, _ in params if b not in value]
    if unknown:
        raise ValueError(f"{stg.kernel.name}: builtin {unknown[0]} has no persistent equivalent")
    args = [value[b] for b, _, _ in params]
    signature = [f"{p}: {t}" for _, p, t in params]
    if waits:
        signature += ["first: bool", "lid_p: u32"]
        args += ["v == pw.x", "plid"]
    text = text[:entry.start()] + f"fn {prefix}main({', '.join(signature)})" + text[entry.end():]
    loop = f"""for (var v = pw.x; v < n; v += {groups}u) {{
      {prefix}main({", ".join(args)});
      workgroupBarrier();  // the next turn rewrites workgroup memory
    }}"""
    if waits:  # a workgroup without a turn in this stage waits all the same
        loop = f"if (pw.x < n) {{\n    {loop}\n    }} else {{ p_wait(plid, {si}u * {groups}u); }}"
    elif si > 0:
        loop = f"p_wait(plid, {si}u * {groups}u);\n    {loop}"
    arrive = "  p_arrive(plid);\n" if si > 0 else ""
    call = f"""{arrive}  {{
    let n = {stg.count};
    {loop}
  }}"""
    return f"// ---- stage {si}: {stg.kernel.name}\n{text}", call, any(b == "subgroup_size" for b, _, _ in params)

# The grid barrier in two halves: stage s arrives when its turns are done; stage s+1 waits
# before it reads what s wrote (right away, or after its early weight requests)
_BARRIER = f"""
fn p_arrive(plid: u32) {{
  storageBarrier();
  workgroupBarrier();
  if (plid == 0u) {{ atomicAdd(&sync[{ARRIVED}u], 1u); }}
}}
fn p_wait(plid: u32, arrivals: u32) {{
  if (plid == 0u) {{
    var spins = 0u;
    loop {{
      if (atomicLoad(&sync[{ARRIVED}u]) >= arrivals || atomicLoad(&sync[{GIVE_UP}u]) != 0u) {{ break; }}
      spins++;
      if (spins > {SPIN_CAP}u) {{ atomicStore(&sync[{GIVE_UP}u], 1u); break; }}
    }}
  }}
  workgroupBarrier();
  storageBarrier();
}}
"""
