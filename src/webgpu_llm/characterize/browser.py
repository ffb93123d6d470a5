"""The browser leg: the naive / sequential / batched methods and the size sweep inside a page.

`webgpu-llm characterize --browser chromium` serves the browser runtime (webgpu_llm.web) on
localhost, opens it in headless Chromium through Playwright and runs web/characterize.js,
which issues the same dispatches with the same WGSL (kernels.py's trivial and reduce kernels,
handed over with the config) through the page's `navigator.gpu`, the seed study's browser
method. The page returns raw samples; the statistics, the derived numbers and the record's
shape are the native legs' own (stats.summarize, derive.derive_backend), so the browser sits
beside wgpu-native and Dawn in characterize.json (`browsers.chromium`) and the report.

In a browser there is no native fast path, no per-call breakdown (one JS call cannot be timed
in isolation with 5 µs timers) and no read-back round trip table: those items are native only.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ..errors import UserError
from .config import Config
from .derive import derive_backend
from .harness import Progress
from .kernels import REDUCE, REDUCE_MAX_WORKGROUPS, REDUCE_WG, trivial
from .methods import DESCRIPTIONS
from .stats import summarize

BROWSERS = ("chromium",)
BROWSER_METHODS = ("naive", "sequential", "batched")
# WebGPU on SwiftShader (Chromium's CPU adapter, as in CI) or, without the adapter flag, on the
# machine's GPU; the rest keeps a headless run quiet and self-contained
CHROMIUM_WEBGPU_ARGS = ["--enable-unsafe-webgpu", "--use-webgpu-adapter=swiftshader", "--no-sandbox",
                        "--disable-background-networking", "--disable-component-update", "--no-first-run",
                        "--disable-dev-shm-usage"]
# unquantized timestamp queries (Chromium rounds them to 100 µs otherwise)
CHARACTERIZE_ARGS = ["--enable-webgpu-developer-features"]
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def browser_args(adapter: str | None) -> list[str]:
    """Chromium's flags: SwiftShader unless `adapter` says "gpu" (the machine's own GPU)."""
    args = [*CHROMIUM_WEBGPU_ARGS, *CHARACTERIZE_ARGS]
    if adapter == "gpu":
        args = [a for a in args if not a.startswith("--use-webgpu-adapter")]
    return args


def page_config(cfg: Config) -> dict[str, Any]:
    """What web/characterize.js is told: the protocol's sizes and the kernels' WGSL."""
    return {"dispatches": cfg.dispatches, "naive_block": cfg.naive_block, "warmup": cfg.warmup,
            "method_reps": cfg.method_reps, "reps": cfg.reps, "sweep_bytes": cfg.sweep_bytes,
            "sweep_batch": cfg.sweep_batch, "sweep_cpu_max_bytes": cfg.sweep_cpu_max_bytes,
            "trivial": [trivial("A").wgsl, trivial("B").wgsl], "reduce": REDUCE.wgsl,
            "reduce_wg": REDUCE_WG, "reduce_max_workgroups": REDUCE_MAX_WORKGROUPS}


def record_from_page(raw: dict[str, Any]) -> dict[str, Any]:
    """The page's raw samples as a record shaped like a native backend's."""
    methods = {}
    for m in BROWSER_METHODS:
        r = raw["methods"][m]
        methods[m] = {"per_dispatch_us": summarize(r["samples_s"], 1e6),
                      "dispatches_per_sample": r["dispatches_per_sample"], "api": "browser",
                      "description": DESCRIPTIONS[m].replace("wgpu Python API", "JavaScript WebGPU API"),
                      "verified": bool(r["verified"])}
    points = []
    for p in raw["sweep"]["points"]:
        point: dict[str, Any] = {"bytes": p["bytes"], "workgroups": p["workgroups"], "verified": p["verified"]}
        for pat in ("single", "batched"):
            gpu = p["gpu_ns"].get(pat)
            point[pat] = {"dispatches_per_sample": p["dispatches"][pat],
                          "wall_us": summarize(p["wall_s"][pat], 1e6),
                          "gpu_us": summarize([v * 1e-9 for v in gpu], 1e6) if gpu else None}
        gpu_med = point["batched"]["gpu_us"]["median"] if point["batched"]["gpu_us"] else None
        point["gbps"] = round(p["bytes"] / (gpu_med * 1e-6) / 1e9, 3) if gpu_med else None
        points.append(point)
    sweep = {**raw["sweep"], "points": points}
    rec: dict[str, Any] = {"available": True, "kind": "browser", "adapter": raw["adapter"],
                           "notes": raw.get("notes", []), "methods": methods, "sweep": sweep,
                           "counted": raw.get("counted")}
    rec["derived"] = derive_backend(rec)
    return rec


def measure_browser(name: str, cfg: Config, progress: Progress, adapter: str | None = None) -> dict[str, Any]:
    """Run the browser leg in `name` (chromium); its record, or {"available": False, "error"}."""
    if name not in BROWSERS:
        raise UserError(f"--browser {name!r}: only {', '.join(BROWSERS)} is supported")
    exe = find_chromium()
    if exe is None:
        return {"available": False, "error": "chromium is not installed (scripts/install-vulkan.sh --chromium)"}
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return {"available": False, "error": "the browser leg needs the playwright package (pip install playwright)"}
    from ..web import WebServer

    server = WebServer().start()
    args = browser_args(adapter)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=exe, args=args, headless=True)
            try:
                page = browser.new_context(bypass_csp=True).new_page()
                page.on("console", lambda m: progress(f"{name}: {m.text}") if m.type == "log" else None)
                page.set_default_timeout(0)
                page.goto(server.url)
                ua = page.evaluate("navigator.userAgent")
                version = browser.version
                progress(f"{name}: {version}, WebGPU {'on SwiftShader' if adapter != 'gpu' else 'on the GPU'}")
                raw = page.evaluate("""async (cfg) => {
                    const m = await import('./characterize.js');
                    return await m.characterize(cfg, (s) => console.log(s));
                }""", page_config(cfg))
            finally:
                browser.close()
    except Exception as e:  # the page's error, or the browser's
        msg = str(e).strip().splitlines()
        return {"available": False, "error": f"{type(e).__name__}: {msg[0] if msg else ''}"}
    finally:
        server.stop()
    rec = record_from_page(raw)
    rec["browser"] = {"name": name, "version": version, "user_agent": ua, "executable": exe,
                      "flags": args}
    rec["notes"].append("per-call breakdown and native fast path: native legs only")
    return rec
