"""report.md and the terminal summary, rendered from the JSON document alone.

Everything here reads `doc` (the characterize.json content), so a report can be re-rendered
from a saved JSON: `python -m webgpu_llm.characterize.report DIR/characterize.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .ablations import variant_label
from .breakdown import CALLS
from .derive import med
from .methods import DESCRIPTIONS, METHODS
from .sweep import _fmt_bytes

HOW_TO_READ = """\
- Every number is the **median** over repeated samples (warm-ups excluded) with its **95 %
  confidence interval** in brackets: an order-statistic interval on the median, which assumes
  nothing about the shape of the timing distribution.
- **naive**: one dispatch, submit, wait, repeated — what a single-op benchmark measures.
  **sequential**: N dispatches, each with its own encoder, compute pass and submit, one wait at
  the end — the pattern of an eager framework that submits every op. **batched**: N dispatches
  in one encoder and one compute pass, one submit — how our engine replays a decode step.
  The `_native` rows issue the same dispatches through the native C calls our `Program` uses
  instead of the `wgpu` Python wrapper; the gap is the wrapper's cost.
- naive / sequential says how much a single-op benchmark overstates the cost of a dispatch in a
  stream; sequential / batched is what one submit per dispatch costs against one per step.
- The per-call table times each call in place: the eight calls of a sequential dispatch inside
  a real sequential run, the `_native` pass calls inside a batched pass, the rest alone. Their
  sum per dispatch should come close to the method's measured cost; what remains is work that
  runs beside the calls (the GPU, driver threads) or between them (the loop itself).
- The size sweep runs a streaming reduction of growing size. GPU time comes from timestamp
  queries; where it overtakes a method's per-dispatch cost (the crossover), kernels of that
  size are no longer dominated by dispatch overhead in that method.
- On a CPU adapter (llvmpipe) the "GPU" shares the CPU's cores with Python: the absolute
  numbers say little about a real GPU, and the methods overlap less than they would there.
"""


# -- small formatting helpers -----------------------------------------------------------------
def fmt_stat(s: dict[str, Any] | None, digits: int = 2) -> str:
    if not s:
        return "—"
    lo, hi = s["ci95"]
    return f"{s['median']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def _num(x: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if x is None else f"{x:.{digits}f}{suffix}"


def table(headers: list[str], rows: list[list[str]], markdown: bool = True) -> str:
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _backends(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b: r for b, r in doc.get("backends", {}).items() if r.get("available")}


def _label(b: str, r: dict[str, Any]) -> str:
    return f"{b} ({r['adapter'].get('device', '?')}, {r['adapter'].get('backend_type', '?')})"


# -- sections ---------------------------------------------------------------------------------------
def methods_table(doc: dict[str, Any], markdown: bool = True) -> str:
    bs = _backends(doc)
    headers = ["method", *(f"{b} µs/dispatch" for b in bs)]
    rows = [[m, *(fmt_stat(r["methods"][m]["per_dispatch_us"]) for r in bs.values())] for m in METHODS]
    ratios = (("naive / sequential", "naive_over_sequential"),
              ("sequential / batched", "sequential_over_batched"),
              ("batched: wrapper / native", "batched_wrapper_over_native"))
    for label, key in ratios:
        rows.append([label, *(_num(r["derived"][key], 2, "×") for r in bs.values())])
    return table(headers, rows, markdown)


def breakdown_table(doc: dict[str, Any], markdown: bool = True) -> str:
    bs = _backends(doc)
    headers = ["call", *(f"{b} µs" for b in bs), "what"]
    rows = [[name, *(fmt_stat(r["breakdown"]["calls"][name]["us"]) for r in bs.values()), what]
            for name, what in CALLS]
    for label, key in (("sum: one sequential dispatch", "sequential"),
                       ("sum: one batched dispatch", "batched"),
                       ("sum: one batched_native dispatch", "batched_native")):
        rows.append([label, *(_num(r["derived"]["sum_of_calls_us"][key]) for r in bs.values()), ""])
    return table(headers, rows, markdown)


def sweep_table(b: str, r: dict[str, Any]) -> str:
    headers = ["size", "workgroups", "GPU µs/dispatch (batched)", "wall µs/dispatch (batched)",
               "GPU µs (single)", "wall µs (single: dispatch+submit+wait)", "overhead share (single)", "GB/s"]
    rows = []
    for p in r["sweep"]["points"]:
        gs, ws = med(p["single"]["gpu_us"]), med(p["single"]["wall_us"])
        share = None if gs is None or not ws else max(0.0, 1.0 - gs / ws)
        rows.append([_fmt_bytes(p["bytes"]), str(p["workgroups"]), fmt_stat(p["batched"]["gpu_us"]),
                     fmt_stat(p["batched"]["wall_us"]), fmt_stat(p["single"]["gpu_us"]),
                     fmt_stat(p["single"]["wall_us"]), _num(None if share is None else 100 * share, 0, " %"),
                     _num(p.get("gbps"), 1)])
    return table(headers, rows)


def crossover_lines(b: str, r: dict[str, Any]) -> list[str]:
    pts = r["sweep"]["points"]
    top = _fmt_bytes(pts[-1]["bytes"]) if pts else "?"
    out = []
    for m, x in r["derived"]["crossover_bytes"].items():
        where = f"≈ {_fmt_bytes(int(x))}" if x is not None else f"beyond the largest size ({top})"
        out.append(f"- {b}, {m} ({_num(med(r['methods'][m]['per_dispatch_us']))} µs/dispatch): "
                   f"kernel time overtakes the overhead at {where}")
    return out


def _browsers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b: r for b, r in doc.get("browsers", {}).items() if r.get("available")}


def browser_methods_table(doc: dict[str, Any], markdown: bool = True) -> str:
    """The browsers' naive / sequential / batched beside the native backends' (wrapper API)."""
    legs = {**{_browser_label(b, r): r for b, r in _browsers(doc).items()},
            **{b: r for b, r in _backends(doc).items()}}
    headers = ["method", *(f"{name} µs/dispatch" for name in legs)]
    rows = [[m, *(fmt_stat(r["methods"][m]["per_dispatch_us"]) for r in legs.values())]
            for m in ("naive", "sequential", "batched")]
    for label, key in (("naive / sequential", "naive_over_sequential"),
                       ("sequential / batched", "sequential_over_batched")):
        rows.append([label, *(_num(r["derived"].get(key), 2, "×") for r in legs.values())])
    return table(headers, rows, markdown)


def _browser_label(b: str, r: dict[str, Any]) -> str:
    br, a = r.get("browser", {}), r["adapter"]
    version = str(br.get("version", "")).split(".")[0]
    return f"{b} {version} ({a.get('architecture') or a.get('device') or '?'})"


def browser_section(doc: dict[str, Any]) -> list[str]:
    """The browser leg: methods beside the native legs, the sweep, the browser and adapter."""
    out: list[str] = []
    for b, r in doc.get("browsers", {}).items():
        if not r.get("available"):
            out += [f"- {b}: not run ({r.get('error')})", ""]
    bs = _browsers(doc)
    if not bs:
        return out
    out += ["The same trivial dispatches and reduction, issued by JavaScript in a page through "
            "`navigator.gpu` (web/characterize.js), timed with `performance.now()` and waited for with "
            "`queue.onSubmittedWorkDone()`; the native legs' wrapper-API rows beside them.", "",
            browser_methods_table(doc), ""]
    for b, r in bs.items():
        br, a = r.get("browser", {}), r["adapter"]
        out += [f"### {_browser_label(b, r)}", "",
                f"- browser: {br.get('version')} (`{br.get('user_agent')}`), flags `{' '.join(br.get('flags', []))}`",
                f"- adapter: vendor {a.get('vendor') or '?'}, architecture {a.get('architecture') or '?'}, "
                f"timestamps {'yes' if a.get('timestamps') else 'no'}", "",
                sweep_table(b, r), "", *crossover_lines(b, r), ""]
        out += [f"- note: {n}" for n in [*r.get("notes", []), *r["sweep"].get("notes", [])]]
        out.append("")
    return out


def cuda_section(doc: dict[str, Any]) -> str:
    c = doc.get("cuda", {})
    if not c.get("available"):
        return f"Skipped: {c.get('note', 'no CUDA device')}."
    rows = [[k, fmt_stat(v["per_dispatch_us"], 3), str(v["dispatches_per_sample"])]
            for k, v in c["methods"].items()]
    head = (f"{c['device']}, torch {c['torch']}, CUDA {c.get('cuda')}; kernel: {c['kernel']}. "
            "`naive` synchronizes after every launch, `sequential` once after N launches, `graph` "
            "replays the N launches captured in a CUDA graph.\n\n")
    return head + table(["method", "µs per launch", "launches per sample"], rows) + (
        f"\n\n{c['note']}" if c.get("note") else "")


def ablations_section(doc: dict[str, Any]) -> str:
    a = doc.get("ablations", {})
    if a.get("status") != "ok" or not a.get("results"):
        return f"Not run ({a.get('status', 'skipped')}): {a.get('note', '')}"
    rows = []
    for r in a["results"]:
        share = r.get("overhead_share")
        rows.append([r["backend"], str(r["model"]), r["dtype"], variant_label(r),
                     str(r["dispatches_per_token"]), fmt_stat(r["tok_s"], 1),
                     fmt_stat(r.get("ms_per_token"), 3),
                     _num(None if share is None else 100 * share, 0, " %")])
    out = table(["backend", "model", "dtype", "variant", "dispatches/token", "tok/s",
                 "ms/token", "overhead share"], rows)
    if a.get("problems"):
        out += "\n\nProblems: " + "; ".join(a["problems"])
    return out


def comparison_section(doc: dict[str, Any]) -> str:
    rows = []
    for c in doc.get("comparison", []):
        verdict = ", ".join(f"{k}: {v}" for k, v in c.get("verdict", {}).items()) or "—"
        rows.append([c["what"], c["study"], c["text"], verdict])
    return table(["figure", "study", "ours", "verdict"], rows)


def environment_section(doc: dict[str, Any]) -> str:
    e = doc["environment"]
    pk = ", ".join(f"{k} {v}" for k, v in e["packages"].items() if v)
    lines = [f"- Host: {e['cpu']} ({e['cpu_count']} logical CPUs), {e['os']}, Python {e['python']}",
             f"- Packages: {pk}",
             f"- Source: git {e.get('git_commit') or 'n/a'}; run {e['date_utc']}"]
    for b, r in doc["backends"].items():
        if not r.get("available"):
            lines.append(f"- {b}: unavailable — {r.get('error')}")
            continue
        a = r["adapter"]
        lines.append(f"- {b}: {a['device']} ({a['adapter_type']}, {a['backend_type']}), "
                     f"driver: {a['description'] or 'n/a'}; vendor {a['vendor'] or 'n/a'}; "
                     f"timestamps: {'yes' if a['timestamps'] else 'no'}; wait: `{a['wait']}`; "
                     f"features: {', '.join(a['features'])}")
    return "\n".join(lines)


def render_report(doc: dict[str, Any], plots: list[str] | None = None) -> str:
    cfg = doc["config"]
    plots = plots or []
    bs = _backends(doc)
    parts = [
        "# WebGPU dispatch overhead",
        "",
        f"Command: `{doc.get('command')}`  ",
        f"Total time {doc['timing']['total_s']:.0f} s; {cfg['reps']} timed repetitions per point after "
        f"{cfg['warmup']} warm-up(s); N = {cfg['dispatches']} dispatches per sequential/batched sample"
        + (" — **quick run**: fewer repetitions, dispatches and sizes than the protocol" if cfg["quick"] else "")
        + ".",
        "",
        "## How to read this",
        "",
        HOW_TO_READ,
        "## Environment",
        "",
        environment_section(doc),
        "",
        "## Per-dispatch cost by method",
        "",
        methods_table(doc),
        "",
        *(f"- `{m}`: {DESCRIPTIONS[m]}" for m in METHODS),
        "",
    ]
    if "per_dispatch.png" in plots:
        parts += ["![per-dispatch cost](per_dispatch.png)", ""]
    parts += ["## Per-call cost breakdown", "", breakdown_table(doc), ""]
    if "breakdown.png" in plots:
        parts += ["![per-call cost](breakdown.png)", ""]
    parts += ["## Kernel size: from trivial to bandwidth-bound", ""]
    for b, r in bs.items():
        parts += [f"### {_label(b, r)}", "", sweep_table(b, r), "", *crossover_lines(b, r), ""]
        parts += [f"- note: {n}" for n in [*r.get("notes", []), *r["sweep"].get("notes", [])]]
        parts.append("")
    if "sweep.png" in plots:
        parts += ["![time vs kernel size](sweep.png)", ""]
    if doc.get("browsers"):
        parts += ["## Browser leg", "", *browser_section(doc)]
    parts += ["## CUDA launch overhead (native reference)", "", cuda_section(doc), "",
              "## End-to-end ablations", "", ablations_section(doc), ""]
    if "ablations.png" in plots:
        parts += ["![ablations](ablations.png)", ""]
    parts += ["## Comparison with the study", "",
              "The study's figures (Qwen2.5-0.5B/1.5B; Dawn and wgpu-native; Vulkan and Metal) beside ours. "
              "A verdict is `agrees` when ours falls within the study's range (for single figures: within "
              "a factor of 2), otherwise `lower` or `higher`.", "",
              comparison_section(doc), ""]
    notes = [n for n in [cfg.get("note")] if n]
    for b, r in doc["backends"].items():
        if r.get("available") and not r["methods"]["naive"].get("verified"):
            notes.append(f"{b}: the dispatch counters did not match the dispatches issued")
    if notes:
        parts += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(parts)


def summary_table(doc: dict[str, Any]) -> str:
    """The terminal view: methods and the per-call breakdown, aligned text."""
    bs = _backends(doc)
    head = [f"{_label(b, r)}" for b, r in bs.items()]
    out = ["WebGPU dispatch overhead — median [95 % CI]" + (" (quick)" if doc["config"]["quick"] else ""),
           *(f"  {h}" for h in head), "", methods_table(doc, markdown=False), "",
           breakdown_table(doc, markdown=False)]
    if _browsers(doc):
        out += ["", "In the browser (JavaScript WebGPU API) beside the native legs:",
                browser_methods_table(doc, markdown=False)]
    c = doc.get("cuda", {})
    if c.get("available"):
        out += ["", "CUDA through torch, µs per launch: "
                + ", ".join(f"{k} {fmt_stat(v['per_dispatch_us'], 3)}" for k, v in c["methods"].items())]
    return "\n".join(out)


def write_outputs(doc: dict[str, Any], out: Path) -> list[Path]:
    """DIR/characterize.json, DIR/report.md and the PNGs (skipped with a note without matplotlib)."""
    from .plots import draw_all
    from .runner import write_json

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "characterize.json"]
    write_json(doc, written[0])
    pngs, note = draw_all(doc, out)
    report = render_report(doc, [p.name for p in pngs])
    if note:
        report += f"\n_Plots: {note}_\n"
    (out / "report.md").write_text(report)
    return [*written, out / "report.md", *pngs]


def main(argv: list[str] | None = None) -> int:
    """Re-render report.md and the plots from a saved characterize.json."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m webgpu_llm.characterize.report DIR/characterize.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    doc = json.loads(path.read_text())
    for p in write_outputs(doc, path.parent):
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
