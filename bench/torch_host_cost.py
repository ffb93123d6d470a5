"""The torch device's host cost per eager decode token, with the GPU taken out.

On the 2-core correctness machine llvmpipe runs the kernels on the same cores as Python, and
the per-token stop check spins while it does, so `torch_generate.py`'s host figure mixes
both. Here the stream's submits are dropped and the per-token stop read is answered on the
host with what a real run read, so what is timed is only what the host does for a
token: transformers' Python, the dispatcher, and our op path. The model is a 24-layer Qwen2
of Qwen2.5-0.5B's structure but width 64: the same ops a token, tiny tensors.

    python bench/torch_host_cost.py                      # f16 and f32, plain eager
    python bench/torch_host_cost.py --dtypes f16 --repeat 5 --json out.json

Only relative figures mean anything (this measures the host, not the GPU): compare runs made
in one process, or alternate builds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import webgpu_llm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch
import torch_generate as tg

import webgpu_llm.torch as wt

WIDTH64 = dict(tg.QWEN25_05B, hidden_size=64, intermediate_size=128, num_attention_heads=4,
               num_key_value_heads=2, vocab_size=1000)


def drop_submits(stream: Any) -> None:
    """From now on the stream's flushes forget its queued launches instead of submitting them
    (`del stream.flush` goes back to the class's method)."""

    def flush(after: Any = None) -> None:
        stream.items, stream.keep = [], []
        stream.batch += 1

    stream.flush = flush


class HostOnly:
    """Drops the stream's submits and answers its reads with what a real run read, in order.

    `record(fn)` runs `fn` for real and keeps the bytes of each read (transformers reads a few
    flags a token: "all finished?", "is the mask all ones?"); inside `with`, the same reads are
    answered from that log, so the host takes the same path without the GPU.
    """

    def __init__(self, stream: Any, submit: bool = False) -> None:
        self.stream = stream
        self.submit = submit  # keep the encoding and submits (only the reads are answered)
        self.log: list[bytes] = []
        self.at = 0

    def record(self, fn: Any) -> None:
        s, log = self.stream, []
        real = s.read

        def read(block: Any, offset: int, nbytes: int) -> bytes:
            log.append(real(block, offset, nbytes))
            return log[-1]

        s.read = read
        try:
            fn()
        finally:
            del s.read
        self.log, self.at = log, 0

    def __enter__(self) -> HostOnly:
        s = self.stream
        s.wait()

        def read(block: Any, offset: int, nbytes: int) -> bytes:
            s.flush()  # (the real one with `submit`: the work goes to the GPU, nobody waits for it)
            data = self.log[self.at]
            if len(data) != nbytes:
                raise RuntimeError("the host-only run left the recorded run's path")
            self.at += 1
            return data

        if not self.submit:
            drop_submits(s)
        s.read = read
        return self

    def __exit__(self, *exc: Any) -> None:
        s = self.stream
        s.__dict__.pop("flush", None)  # back to the class's methods
        del s.read
        s.wait()


def token_ms(model: torch.nn.Module, prompt: torch.Tensor, stream: Any, n: int, repeat: int,
             submit: bool = False, **kwargs: Any) -> list[float]:
    """Host ms per decoded token, (t(n) - t(1)) / (n - 1), `repeat` times, the GPU taken out
    (`submit`: its work still encoded and submitted, but never waited for)."""
    runs: dict[int, HostOnly] = {}
    for k in (n, 1):
        runs[k] = HostOnly(stream, submit)
        runs[k].record(lambda k=k: tg.timed_generate(model, prompt, k, **kwargs))
    out = []
    for _ in range(repeat):
        t = {}
        for k, host in runs.items():
            host.at = 0
            with host:
                t[k] = tg.timed_generate(model, prompt, k, **kwargs)
        out.append((t[n] - t[1]) / (n - 1) * 1e3)
    return out


def profile(model: torch.nn.Module, prompt: torch.Tensor, stream: Any, n: int, submit: bool, path: str,
            **kwargs: Any) -> None:
    """One host-only generate of n tokens under cProfile: functions by own and cumulative time."""
    import cProfile
    import io
    import pstats

    host = HostOnly(stream, submit)
    host.record(lambda: tg.timed_generate(model, prompt, n, **kwargs))
    prof = cProfile.Profile()
    with host:
        prof.runcall(tg.timed_generate, model, prompt, n, **kwargs)
    out = io.StringIO()
    for key in ("tottime", "cumulative"):
        pstats.Stats(prof, stream=out).sort_stats(key).print_stats(40)
    with open(path, "w") as f:
        f.write(out.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="dawn", choices=["wgpu", "dawn"])
    ap.add_argument("--dtypes", default="f16,f32")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--layers", type=int, default=WIDTH64["num_hidden_layers"],
                    help="decoder layers (24, the 0.5B's; fewer for a quick check)")
    ap.add_argument("--repeat", type=int, default=5, help="timed generates per dtype (the median is reported)")
    ap.add_argument("--fused", action="store_true", help="after webgpu_llm.torch.fuse_layers(model)")
    ap.add_argument("--compiled", action="store_true",
                    help="torch.compile(backend='webgpu') with the static cache, as torch_generate.py's compiled rows")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="also run one host-only generate per dtype under cProfile and write the top functions here")
    ap.add_argument("--submit", action="store_true",
                    help="also time the encoding and submits (the reads are still answered: nothing waits for the GPU)")
    ap.add_argument("--dawn-toggles", default="",
                    help="comma-separated Dawn device toggles to enable instead of the engine's own choice "
                         "(skip_validation unless WEBGPU_LLM_VALIDATE=1; round 78 compared them this way)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.dawn_toggles:  # before the device opens (the instance takes them once)
        from wgpudawn.backends.dawn import extras

        extras.set_instance_extras(enable_toggles=args.dawn_toggles.split(","), disable_toggles=["timestamp_quantization"])
    wt.set_backend(args.backend)
    if not wt.is_available():
        sys.exit("no WebGPU adapter")
    stream = wt.context.ctx().stream
    prompt = torch.randint(0, WIDTH64["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(1)).to("webgpu")
    results = []
    for dname in args.dtypes.split(","):
        model = tg.build(dict(WIDTH64, num_hidden_layers=args.layers), tg.DTYPES[dname])
        kwargs: dict[str, Any] = {}
        if args.fused:
            wt.fuse_layers(model)
        if args.compiled:
            torch._dynamo.reset()
            tg.compile_forward(model)
            kwargs["cache_implementation"] = "static"
        for _ in range(2):  # warm-up: plans, bind groups, kernels (compiled: traced, then recorded)
            tg.timed_generate(model, prompt, args.tokens, **kwargs)
        launches = stream.launches
        tg.timed_generate(model, prompt, args.tokens, **kwargs)
        per_token = (stream.launches - launches) / args.tokens
        ms = token_ms(model, prompt, stream, args.tokens, args.repeat, args.submit, **kwargs)
        if args.profile:
            profile(model, prompt, stream, args.tokens, args.submit, f"{args.profile}_{dname}.txt", **kwargs)
        r = {"dtype": dname, "layers": args.layers, "fused": args.fused, "compiled": args.compiled, "submit": args.submit, "dawn_toggles": args.dawn_toggles,
             "host_ms_per_token": statistics.median(ms), "best_ms": min(ms), "runs_ms": ms,
             "launches_per_token": per_token}
        results.append(r)
        runs = ", ".join(f"{m:.2f}" for m in ms)
        print(f"{dname}{' +submit' if args.submit else ''}: host {r['host_ms_per_token']:.2f} ms/token, "
              f"best {min(ms):.2f} (runs {runs}), ~{per_token:.0f} launches/token", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
