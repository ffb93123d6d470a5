"""tok/s of transformers' generate on the torch `webgpu` device, eager and compiled, f32 and f16.

The model has Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, intermediate
4864, vocab 151936, tied embeddings) with seeded random weights: timing does not depend on
the values. Protocol (tg, as in DESIGN.md): a 16-token prompt, greedy, N new tokens, warm-up
excluded, median of R runs. Decode tok/s excludes the prompt: (N - 1) / (t(N) - t(1)).

    python bench/torch_generate.py --out torch_generate.json            # everything (~3 min on an H200)
    python bench/torch_generate.py --backend dawn --dtypes f16 --modes compiled --out r.json
    python bench/torch_generate.py --tiny --new-tokens 8 --runs 1 --out /tmp/t.json   # smoke test

Eager runs use the default dynamic cache (as PyTorch's eager peer), "fused" runs the same after
`webgpu_llm.torch.fuse_layers(model)` (RMSNorm, SwiGLU and RoPE as one op each); compiled runs use
`torch.compile(model.forward, backend="webgpu")` with a static cache (as PyTorch's compiled
peer). Compiled rows also record the decode step's GPU time and its kernels' share
(`decode_step_gpu`); `--profile PREFIX` adds a cProfile of one generate per cell, and
`--max-pending` compares eager submit sizes and `--replay-chunk` a compiled replay's dispatches
per submit (`--repeat N` alternates the settings N times). The host's CPU sets much of these
figures: compare runs made in one call on one machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Any

try:
    import webgpu_llm  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch
import transformers

import webgpu_llm.torch as wt

QWEN25_05B = dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                  num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)
QWEN25_15B = dict(QWEN25_05B, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12)
MODELS = {"qwen2.5-0.5b": QWEN25_05B, "qwen2.5-1.5b": QWEN25_15B}  # shapes of the real models
TINY = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
MODES = ("eager", "fused", "compiled")  # fused: eager after webgpu_llm.torch.fuse_layers


def build(config: dict[str, Any], dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    """The model with transformers' seeded random initialisation, on the webgpu device."""
    torch.manual_seed(seed)
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**config))
    return model.to(dtype).eval().to("webgpu")


def compile_forward(model: torch.nn.Module) -> None:
    """model.forward through torch.compile(backend="webgpu"), as the compiled rows run it."""
    model.forward = torch.compile(model.__class__.forward.__get__(model), backend="webgpu")


def timed_generate(model: torch.nn.Module, prompt: torch.Tensor, n: int, **kwargs: Any) -> float:
    """Seconds of one generate, with the garbage collector off while it runs (as timeit does:
    a full collection of torch's and dynamo's objects otherwise lands in some runs, not others)."""
    gc.collect()
    gc.disable()
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            out = model.generate(prompt, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0,
                                 **kwargs)
    finally:
        gc.enable()
    out.cpu()  # the tokens are on the host: everything has run
    assert out.shape[1] == prompt.shape[1] + n, out.shape
    return time.perf_counter() - t0


def decode_step_program() -> Any:
    """The compiled decode step's Program (the most replayed graph's longest recording), or None."""
    from webgpu_llm.torch.compile.backend import RUNNERS

    runners = [r for r in RUNNERS if r.recorded]
    if not runners:
        return None
    rec = max(runners, key=lambda r: r.replays).recorded
    return max(rec.values(), key=lambda x: len(x.program.dispatches)).program


def pad_step(extra: int) -> None:
    """Make the compiled decode step's GPU work longer by `extra` more runs of its widest
    dispatch (the LM head: it writes the same logits again) at its end, or take them off (0):
    how much of a µs of GPU step reaches the token time."""
    prog = decode_step_program()
    if prog is None:
        return
    base = getattr(prog, "_unpadded", len(prog.dispatches))
    del prog.dispatches[base:]
    prog._unpadded = base
    widest = max(prog.dispatches[:base], key=lambda d: d.size(1)[0] * d.size(1)[1])
    prog.dispatches += [widest] * extra
    prog.invalidate()


def measure(model: torch.nn.Module, prompt: torch.Tensor, n: int, runs: int, pad: int = 0,
            **kwargs: Any) -> dict[str, Any]:
    stream = wt.context.ctx().stream
    timed_generate(model, prompt, n, **kwargs)  # warm-up (and compilation)
    pad_step(pad)
    timed_generate(model, prompt, 1, **kwargs)
    full, first = [], []
    launches0, submits0 = stream.launches, stream.submits
    host, made = [], []  # per decoded token: this thread's CPU ms, bind groups created

    def mark() -> tuple[float, int]:
        return time.thread_time(), getattr(stream, "bind_groups_made", 0)  # (0: an older package)

    for _ in range(runs):
        c0, b0 = mark()
        full.append(timed_generate(model, prompt, n, **kwargs))
        c1, b1 = mark()
        first.append(timed_generate(model, prompt, 1, **kwargs))
        c2, b2 = mark()
        host.append(((c1 - c0) - (c2 - c1)) / max(n - 1, 1) * 1e3)
        made.append(((b1 - b0) - (b2 - b1)) / max(n - 1, 1))
    t_full, t_first = statistics.median(full), statistics.median(first)
    return {
        "new_tokens": n,
        "runs": runs,
        "seconds": full,
        "tok_s": n / t_full,
        "decode_tok_s": (n - 1) / max(t_full - t_first, 1e-9),
        "decode_tok_s_best": (n - 1) / max(min(full) - min(first), 1e-9),  # the least disturbed runs
        "first_token_s": t_first,
        "launches_per_run": (stream.launches - launches0) / runs,
        "eager_submits_per_run": (stream.submits - submits0) / runs,
        # the host's side alone, which the GPU's time and the other threads do not move
        "host_cpu_ms_per_token": statistics.median(host),
        "bind_groups_per_token": statistics.median(made),
    }


def decode_step_gpu() -> dict[str, Any] | None:
    """GPU time of the most replayed recording (the decode step) replayed alone, and its
    kernels' time by name (each dispatch in its own timestamped pass: an upper bound) and by
    omission (`marginal_us`: the step without that kernel's dispatches), and each dispatch's time."""
    from webgpu_llm.runtime.program import Program

    prog = decode_step_program()
    gpu = wt.context.ctx().gpu
    if prog is None or not gpu.has_timestamps:
        return None
    kernels = prog.profile_by_label(1)
    full = prog.time_gpu(1, reps=20) * 1e6
    # what each kernel really costs in the step: the step's time without its dispatches (the
    # timing of these kernels does not depend on the values they read)
    marginal = {}
    for k in kernels[:8]:
        rest = Program(gpu, "rest")
        for d in prog.dispatches:
            if d.label != k["kernel"]:
                rest.add_bound(d.label, d.pipeline, d.bind_group, d.grid)
        marginal[k["kernel"]] = full - rest.time_gpu(1, reps=20) * 1e6
    return {"dispatches": len(prog.dispatches), "gpu_us": full,
            "profile_sum_us": sum(k["us"] for k in kernels), "top_kernels_us": {k["kernel"]: k["us"] for k in kernels[:15]},
            "marginal_us": marginal, "dispatch_us": [[label, sec * 1e6] for label, sec in prog.profile(1)]}


def eager_step_gpu(model: torch.nn.Module, prompt: torch.Tensor) -> dict[str, Any] | None:
    """GPU time of one eager decode forward inside `generate` (its third forward: a decode step
    with generate's own mask and cache): its launches are recorded as compiled graphs' are, then
    timed as one pass, and by kernel name (each dispatch in its own timestamped pass: an upper
    bound)."""
    from webgpu_llm.torch.memory import Capture
    from webgpu_llm.torch.stream import ParamArena, Recording

    c = wt.context.ctx()
    if not c.gpu.has_timestamps:
        return None
    stream, pool = c.stream, c.pool
    capture, rec = Capture(), Recording(ParamArena(c.gpu, stream.align))
    calls = [0]

    def start(module: Any, args: Any) -> None:
        calls[0] += 1
        if calls[0] == 3:
            stream.flush()
            pool.capture, stream.recording = capture, rec

    def stop(module: Any, args: Any, out: Any) -> None:
        if stream.recording is rec:
            stream.flush()
            stream.recording, pool.capture = None, None
            capture.recording = False

    hooks = [model.register_forward_pre_hook(start), model.register_forward_hook(stop)]
    try:
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    finally:
        for h in hooks:
            h.remove()
        stream.recording, pool.capture = None, None
    prog = rec.program(c.gpu, "eager step")
    kernels = prog.profile_by_label(1)
    result = {"dispatches": len(prog.dispatches), "gpu_us": prog.time_gpu(1, reps=10) * 1e6,
              "profile_sum_us": sum(k["us"] for k in kernels), "kernels": kernels}
    capture.release(pool)
    return result


def write_profile(path: str, model: torch.nn.Module, prompt: torch.Tensor, n: int, **kwargs: Any) -> str:
    """One generate under cProfile: the host's time per token, by function."""
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    timed_generate(model, prompt, n, **kwargs)
    prof.disable()
    buf = io.StringIO()
    st = pstats.Stats(prof, stream=buf)
    buf.write(f"# one generate of {n} new tokens\n")
    st.sort_stats("tottime").print_stats(40)
    st.sort_stats("cumulative").print_stats(60)
    with open(path, "w") as f:
        f.write(buf.getvalue())
    return path


def add_model_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--model", default="qwen2.5-0.5b", choices=sorted(MODELS),
                    help="the shape of the random-weight model")
    ap.add_argument("--tiny", action="store_true", help="a 2-layer model instead (smoke test)")


def model_config(args: argparse.Namespace) -> dict[str, Any]:
    return dict(TINY if args.tiny else MODELS[args.model])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="JSON results path")
    ap.add_argument("--backend", default="wgpu", choices=["wgpu", "dawn"])
    ap.add_argument("--dtypes", default="f32,f16")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated: eager, fused (eager after webgpu_llm.torch.fuse_layers), compiled")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--eager-new-tokens", type=int, default=64, help="eager is slow: fewer tokens")
    add_model_args(ap)
    ap.add_argument("--vocab", type=int, default=0,
                    help="another vocabulary size (the host's cost per token barely depends on it; "
                         "llvmpipe's 128 MiB binding limit needs <= 32768 for the 0.5B shape)")
    ap.add_argument("--max-pending", default=None,
                    help="comma-separated eager submit sizes (launches queued before a submit) to compare")
    ap.add_argument("--replay-chunk", default=None,
                    help="comma-separated dispatches per submit of a compiled replay to compare (0: one submit)")
    ap.add_argument("--pad-step", default=None,
                    help="compiled: comma-separated numbers of extra LM-head dispatches at the end of the decode "
                         "step to compare (how much added GPU time reaches tok/s)")
    ap.add_argument("--tiles", default=None,
                    help="comma-separated f16 prompt matmul paths to compare: auto (the f16 tiles where the device "
                         "has them), off (the f32 tiled matmul); first_token_s is the prompt's time")
    ap.add_argument("--repeat", type=int, default=1, help="go through the settings this many times (A B A B ...)")
    ap.add_argument("--eager-step-gpu", action="store_true",
                    help="eager and fused rows: also time one eager decode forward's launches (inside generate) "
                         "on the GPU, by kernel")
    ap.add_argument("--profile", default=None, metavar="PREFIX",
                    help="after timing, run one generate per cell under cProfile and write "
                         "PREFIX_<dtype>_<mode>.txt (functions by own time and by cumulative time)")
    args = ap.parse_args()
    unknown = set(args.modes.split(",")) - set(MODES)
    if unknown:
        sys.exit(f"unknown mode(s) {', '.join(sorted(unknown))}: choose from {', '.join(MODES)}")

    warnings.simplefilter("ignore")
    wt.set_backend(args.backend)
    if not wt.is_available():
        sys.exit("no WebGPU adapter")
    config = model_config(args)
    if args.vocab:
        config["vocab_size"] = args.vocab
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, config["vocab_size"], (1, args.prompt_tokens), generator=gen).to("webgpu")
    settings: list[dict[str, Any]] = [{}]
    for name, opt in (("max_pending", args.max_pending), ("replay_chunk", args.replay_chunk),
                      ("pad", args.pad_step), ("tiles", args.tiles)):
        if opt:
            settings = [{**s, name: v if name == "tiles" else int(v)} for s in settings for v in opt.split(",")]
    results = []
    for dname in args.dtypes.split(","):
        model = build(config, DTYPES[dname])
        for mode in args.modes.split(","):
            torch._dynamo.reset()
            wt.reset_fallback_report()
            kwargs: dict[str, Any] = {}
            n = args.new_tokens
            wt.unfuse_layers(model)
            if mode == "compiled":
                compile_forward(model)
                kwargs["cache_implementation"] = "static"
            else:
                model.forward = model.__class__.forward.__get__(model)
                n = min(n, args.eager_new_tokens)
                if mode == "fused":
                    r_fused = wt.fuse_layers(model)
                    print(f"  fused layers: {r_fused}", flush=True)
            stream = wt.context.ctx().stream
            for setting in settings * args.repeat:
                for k, v in setting.items():
                    if k == "tiles":
                        wt.configure(tiles=v)
                    elif k != "pad":
                        setattr(stream, k, v)
                t0 = time.perf_counter()
                r = measure(model, prompt, n, args.runs, pad=setting.get("pad", 0) if mode == "compiled" else 0,
                            **kwargs)
                if setting.get("pad") and mode == "compiled":
                    r["padded_step_gpu_us"] = decode_step_program().time_gpu(1, reps=20) * 1e6
                    print(f"  padded step GPU {r['padded_step_gpu_us']:.0f} µs", flush=True)
                r.update(dtype=dname, mode=mode, pad_step=setting.get("pad", 0), max_pending=stream.max_pending, replay_chunk=getattr(stream, "replay_chunk", None), tiles=wt.settings().tiles,
                         wall_s=time.perf_counter() - t0, fallback_report=wt.fallback_report())
                if setting:
                    print(f"  {setting}: decode {r['decode_tok_s']:.1f} tok/s (best {r['decode_tok_s_best']:.1f})",
                          flush=True)
                results.append(r)
            if mode == "compiled":  # launches per replayed graph (the decode step is the one replayed most)
                pad_step(0)
                graphs = sorted(wt.graph_report(), key=lambda g: -g["replays"])
                r["graphs"] = graphs
                r["decode_step_launches"] = graphs[0]["recorded_launches"] if graphs else None
                r["decode_step_gpu"] = decode_step_gpu()
            elif args.eager_step_gpu:
                r["eager_step_gpu"] = g = eager_step_gpu(model, prompt)
                if g:
                    top = ", ".join(f"{k['kernel']} {k['us']:.0f} ({k['count']})" for k in g["kernels"][:8])
                    print(f"  eager step GPU {g['gpu_us']:.0f} µs, {g['dispatches']} dispatches: {top}", flush=True)
            if args.profile:
                r["profile"] = write_profile(f"{args.profile}_{dname}_{mode}.txt", model, prompt, n, **kwargs)
            print(f"{dname:4s} {mode:8s} {r['tok_s']:8.1f} tok/s  decode {r['decode_tok_s']:8.1f} tok/s  "
                  f"first token {r['first_token_s'] * 1e3:7.1f} ms  fallbacks {sum(r['fallback_report'].values())}  "
                  f"launches/run {r['launches_per_run']:.0f}", flush=True)
        del model

    gpu = wt.context.ctx().gpu
    doc = {
        "command": " ".join([sys.executable, *sys.argv]),
        "model": "tiny" if args.tiny else f"{args.model} shape, random weights",
        "config": config,
        "device": gpu.name,
        "backend": args.backend,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "prompt_tokens": args.prompt_tokens,
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
    print()
    print(f"| dtype | mode | launches per submit (eager / replay) | tok/s | decode tok/s (median / best) | "
          f"first token ms | host CPU ms / token | bind groups made / token |  ({gpu.name})")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['dtype']} | {r['mode']} | {r['max_pending']} / {r['replay_chunk']} | {r['tok_s']:.1f} | "
              f"{r['decode_tok_s']:.1f} / {r['decode_tok_s_best']:.1f} | {r['first_token_s'] * 1e3:.1f} | "
              f"{r['host_cpu_ms_per_token']:.2f} | {r['bind_groups_per_token']:.1f} |")


if __name__ == "__main__":
    main()
