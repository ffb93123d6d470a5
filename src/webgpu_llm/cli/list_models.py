"""`webgpu-llm list`: the models already on this machine that `--model NAME` finds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .. import environment
from .common import print_json


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "list", help="list the models on this machine that --model finds by name",
        description="List the models already on this machine: the bundled SmolLM2, the Hugging Face "
                    "hub cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub) and "
                    "Ollama's models ($OLLAMA_MODELS, else ~/.ollama/models). The NAME column is what "
                    "--model takes. Nothing is downloaded.")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    p.set_defaults(run=run)


def rows(search: Any) -> list[dict[str, Any]]:
    from ..errors import UserError
    from ..models.discovery import describe, list_models
    from ..models.source import default_model_path

    out = []
    try:
        bundled = default_model_path()
    except UserError:
        bundled = None
    if bundled is not None:
        out.append({"name": None, "source": "bundled", "path": str(bundled), **describe(bundled)})
    for m in list_models(search):
        out.append({"name": m.name, "source": m.source, "path": str(m.path), **describe(m.path)})
    return out


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    x = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        x /= 1024
        if x < 1024 or unit == "TiB":
            break
    return f"{x:.1f} {unit}"


def run(args: argparse.Namespace) -> int:
    search = environment.model_search()
    found = rows(search)
    if args.json:
        print_json({"models": found, "searched": {"huggingface": str(search.hf_hub),
                                                  "ollama": [str(p) for p in search.ollama]}})
        return 0
    table = [("NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "PATH")]
    for r in found:
        name = r["name"] or "(default)"
        path = r["path"] + (f"  [{r['error']}]" if r.get("error") else "")
        table.append((name, r["source"], r["architecture"], r["quant"], _size(r["size"]), path))
    widths = [max(len(row[i]) for row in table) for i in range(5)]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[5])
    print(f"searched {search.places('and')}; pass NAME to --model", file=sys.stderr)
    return 0
