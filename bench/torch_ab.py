"""Same-host A/B of the torch device: two copies of the package, alternated, one summary.

The host's CPU moves transformers-generate figures by ±20 % from run to run (docs/performance.md), so a change is judged by alternating before and after in one call of the GPU
machine and by the decode step's GPU time, which the host does not move.

    python bench/torch_ab.py --before bench/_before --repeat 2 --out-dir $OUT -- \\
        --backend dawn --dtypes f16,f32 --modes compiled --runs 5

`--before` is a directory holding a `webgpu_llm` package (e.g. `git archive REV src/webgpu_llm`
unpacked there); "after" is the package this script imports. Everything after `--` goes to
bench/torch_generate.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(label: str, pythonpath: str | None, out: Path, args: list[str], timeout: int) -> None:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, str(HERE / "torch_generate.py"), *args, "--out", str(out)]
    print(f"== {label}: {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, env=env, check=True, timeout=timeout, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True, help="directory holding the 'before' webgpu_llm package")
    ap.add_argument("--repeat", type=int, default=2, help="before/after pairs (default 2)")
    ap.add_argument("--out-dir", required=True, help="where the JSON of each run goes")
    ap.add_argument("--timeout", type=int, default=240, help="seconds per run")
    ap.add_argument("generate_args", nargs=argparse.REMAINDER, help="-- then bench/torch_generate.py's arguments")
    a = ap.parse_args()
    gen = [x for x in a.generate_args if x != "--"]
    if not (Path(a.before) / "webgpu_llm" / "__init__.py").is_file():
        sys.exit(f"error: {a.before} holds no webgpu_llm package: unpack the 'before' revision there first")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for i in range(1, a.repeat + 1):
        for label, path in (("before", a.before), ("after", None)):
            f = out / f"{label}_{i}.json"
            run(f"{label} {i}", path, f, gen, a.timeout)
            runs.append((f"{label}_{i}", f))
    print("\n| run | dtype | mode | decode tok/s | best run | host CPU ms/token | step GPU µs | dispatches |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, f in runs:
        for r in json.loads(f.read_text())["results"]:
            g = r.get("decode_step_gpu") or {}
            step = f"{g['gpu_us']:.0f}" if g else "—"
            print(f"| {name} | {r['dtype']} | {r['mode']} | {r['decode_tok_s']:.1f} | "
                  f"{r.get('decode_tok_s_best', float('nan')):.1f} | {r.get('host_cpu_ms_per_token', float('nan')):.1f} | "
                  f"{step} | {g.get('dispatches', '—')} |")


if __name__ == "__main__":
    main()
