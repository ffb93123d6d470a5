"""PNG plots drawn from the JSON document with matplotlib (optional: skipped with a note)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from .ablations import variant_label
from .breakdown import CALLS
from .derive import med
from .methods import METHODS
from .sweep import _fmt_bytes


def draw_all(doc: dict[str, Any], out: Path) -> tuple[list[Path], str | None]:
    if importlib.util.find_spec("matplotlib") is None:
        return [], "matplotlib is not installed (pip install matplotlib), no PNGs drawn"
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    bs = {b: r for b, r in doc["backends"].items() if r.get("available")}
    pngs = [per_dispatch_plot(doc, bs, out / "per_dispatch.png"),
            breakdown_plot(bs, out / "breakdown.png"),
            sweep_plot(bs, out / "sweep.png")]
    res = doc.get("ablations", {}).get("results", [])
    if doc.get("ablations", {}).get("status") == "ok" and res:
        pngs.append(ablations_plot(res, out / "ablations.png"))
    return pngs, None


def _err(stats: list[dict[str, Any]]) -> list[list[float]]:
    """Asymmetric error bars from the CI: [[below...], [above...]]."""
    return [[max(0.0, s["median"] - s["ci95"][0]) for s in stats],
            [max(0.0, s["ci95"][1] - s["median"]) for s in stats]]


def per_dispatch_plot(doc: dict[str, Any], bs: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    cuda = doc.get("cuda", {})
    groups = list(METHODS)
    fig, ax = plt.subplots(figsize=(10, 4.8))
    series = [(b, [r["methods"][m]["per_dispatch_us"] for m in groups]) for b, r in bs.items()]
    if cuda.get("available"):
        # CUDA's graph replay is its batched pattern.
        cm = {"naive": "naive", "sequential": "sequential", "batched": "graph"}
        stats = [cuda["methods"].get(cm.get(m, ""), {}).get("per_dispatch_us") for m in groups]
        series.append(("cuda (torch)", stats))
    width = 0.8 / max(1, len(series))
    for i, (name, stats) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j, s in enumerate(stats) if s]
        st = [s for s in stats if s]
        bars = ax.bar(xs, [s["median"] for s in st], width, yerr=_err(st), capsize=3, label=name)
        ax.bar_label(bars, labels=[f"{s['median']:.3g}" for s in st], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_yscale("log")
    ax.set_ylabel("µs per dispatch (median, 95 % CI)")
    ax.set_title("Per-dispatch cost by method and backend")
    ax.legend()
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def breakdown_plot(bs: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt

    names = [n for n, _ in CALLS]
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1.5))
    height = 0.8 / max(1, len(bs))
    for i, (b, r) in enumerate(bs.items()):
        st = [r["breakdown"]["calls"][n]["us"] for n in names]
        ys = [j + (i - (len(bs) - 1) / 2) * height for j in range(len(names))]
        ax.barh(ys, [max(s["median"], 1e-3) for s in st], height, xerr=_err(st), capsize=2, label=b)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("µs per call (median, 95 % CI)")
    ax.set_title("Per-call CPU cost")
    ax.legend()
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def sweep_plot(bs: dict[str, Any], path: Path) -> Path:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(9, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (b, r) in enumerate(bs.items()):
        pts = r["sweep"]["points"]
        if not pts:
            continue
        c = colors[i % len(colors)]
        x = [p["bytes"] for p in pts]
        lines = (("single", "wall_us", "-", "o", "wall, dispatch+submit+wait"),
                 ("batched", "wall_us", "--", "s", "wall per dispatch, batched"),
                 ("batched", "gpu_us", ":", "^", "GPU (timestamps) per dispatch"))
        for pat, key, ls, mk, what in lines:
            st = [p[pat][key] for p in pts]
            if any(s is None for s in st):
                continue
            ax.errorbar(x, [s["median"] for s in st], yerr=_err(st), color=c, ls=ls, marker=mk,
                        ms=4, capsize=2, label=f"{b}: {what}")
        seq = med(r["methods"]["sequential"]["per_dispatch_us"])
        if seq:
            ax.axhline(seq, color=c, lw=0.8, alpha=0.5)
            ax.annotate(f"{b} sequential {seq:.3g} µs", (x[0], seq), color=c, fontsize=7,
                        va="bottom")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _fmt_bytes(int(v))))
    ax.set_yscale("log")
    ax.set_xlabel("bytes read per dispatch (streaming reduction)")
    ax.set_ylabel("µs (median, 95 % CI)")
    ax.set_title("Time vs kernel size: where dispatch overhead stops dominating")
    ax.grid(which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def ablations_plot(results: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    labels = [f"{r['backend']} {r['dtype']}\n{variant_label(r)}" for r in results]
    st = [r["tok_s"] for r in results]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(results) + 2), 5))
    bars = ax.bar(range(len(results)), [s["median"] for s in st], yerr=_err(st), capsize=3)
    ax.bar_label(bars, labels=[f"{s['median']:.0f}" for s in st], fontsize=7, padding=2)
    ax.set_xticks(range(len(results)), labels, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("decode tok/s (median, 95 % CI)")
    ax.set_title("End-to-end ablations")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
