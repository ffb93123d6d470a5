"""tg128 and pp512 of the engine on one model, with an optional per-kernel profile.

Protocol (DESIGN.md): decode = 128 greedy tokens after a 16-token prompt, batch 1, one
warm-up excluded, median of the runs; prefill = a 512-token prompt.
"""

from __future__ import annotations

import statistics
from dataclasses import replace
from typing import Any

import numpy as np

from ..generation.engine import Engine
from ..generation.sampling import SamplingParams
from ..models.config import ModelConfig
from ..models.presets import weight_bytes_per_token
from ..models.transformer import Transformer, Tuning
from ..runtime.gpu import Gpu


def _ids(n: int, vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def bench_engine(gpu: Gpu, cfg: ModelConfig, tensors: dict[str, Any], *, n_prompt: int = 16, n_gen: int = 128,
                 n_pp: int = 512, reps: int = 5, fused: bool = True, per_dispatch: bool = False,
                 profile: bool = False, persist: int | None = None, mma: str = "auto",
                 log: Any = None) -> dict[str, Any]:
    """`persist`: resident workgroups of the persistent decode layers (0: off; None: the
    device's default). When it is on, the greedy tokens are also decoded with it off and
    the number of positions where they agree is reported (`persist_agree`). `mma`: the
    prompt matmuls on the int8 matrix units where the adapter has them ("auto") or not
    ("off"); `prompt_matmul` says which ran."""
    ctx = max(n_prompt + n_gen + 8, n_pp + 8)
    say = log or (lambda *_: None)
    tuning = Tuning.default(gpu, cfg.hidden, cfg.head_dim)
    if persist is not None:
        tuning = replace(tuning, persist=persist)
    tuning = replace(tuning, mma=mma)
    say(f"building {cfg.name} on {gpu.name} (fused={fused}, persist={tuning.persist})")
    model = Transformer(gpu, cfg, tensors.get, ctx=ctx, batch=max(n_pp, 16), fused=fused, tuning=tuning)
    eng = Engine(model)
    greedy = SamplingParams()
    prompt = _ids(n_prompt, cfg.vocab, 1)
    step = eng.step_program(greedy)
    out: dict[str, Any] = {"model": cfg.name, "backend": gpu.backend, "adapter": gpu.info.get("device", ""),
                           "fused": fused, "per_dispatch_submit": per_dispatch,
                           "persist": model.tuning.persist if fused else 0,
                           "dispatches_per_token": len(step), "n_prompt": n_prompt, "n_gen": n_gen,
                           "prompt_matmul": "int8 tiles" if any(d.label.startswith("mma_matmul")
                                                                for d in model.prefill.dispatches) else "SIMT"}
    if model.persist_note:
        out["persist_note"] = model.persist_note
        say("  " + model.persist_note)
    if out["persist"]:
        out["persist_agree"] = _persist_agreement(eng, prompt, n_gen)
        say(f"  greedy tokens equal to the per-dispatch decode's: {out['persist_agree']}/{n_gen}")
        if not model.tuning.persist:  # the rebuild after the comparison fell back (its check failed)
            out.update(persist=0, persist_note=model.persist_note, dispatches_per_token=len(eng.step_program(greedy)))
            say("  " + model.persist_note)
    eng.time_decode(prompt, n_gen, greedy, per_dispatch)  # warm-up (clocks ramp up after a model build)
    tg = [n_gen / eng.time_decode(prompt, n_gen, greedy, per_dispatch) for _ in range(reps)]
    out["tg_tok_s"] = statistics.median(tg)
    out["tg_runs"] = tg
    say(f"  tg{n_gen}: {out['tg_tok_s']:.1f} tok/s")
    if n_pp:
        pp_ids = _ids(n_pp, cfg.vocab, 2)
        eng.time_prefill(pp_ids)
        pp = [n_pp / eng.time_prefill(pp_ids) for _ in range(reps)]
        out["pp_tok_s"] = statistics.median(pp)
        out["pp_runs"] = pp
        out["n_pp"] = n_pp
        say(f"  pp{n_pp}: {out['pp_tok_s']:.1f} tok/s")
    if profile:
        out["profile"] = profile_step(eng, prompt, cfg, tensors)
        if n_pp and gpu.has_timestamps:
            out["profile_prefill"] = profile_prefill(eng, n_pp)
    return out


def _persist_agreement(eng: Engine, prompt: list[int], n: int) -> int:
    """Leading greedy tokens that the persistent decode shares with the per-dispatch one."""
    m = eng.m
    got = list(eng.stream(prompt, 0, SamplingParams(), n))
    g = m.tuning.persist
    m.rebuild(replace(m.tuning, persist=0))  # (the engine's step Programs follow a rebuild)
    want = list(eng.stream(prompt, 0, SamplingParams(), n))
    m.rebuild(replace(m.tuning, persist=g))
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))


def profile_prefill(eng: Engine, n: int) -> dict[str, Any]:
    """Where the layers of an n-token prompt spend their GPU time (embedding, head excluded)."""
    m = eng.m
    eng.gpu.write(m.st, SamplingParams().state(0, n, 0))
    gpu_s = m.prefill.time_gpu(n, reps=5)
    return {"tokens": n, "gpu_us": gpu_s * 1e6, "layers_tok_s": n / gpu_s, "kernels": m.prefill.profile_by_label(n)}


def profile_step(eng: Engine, prompt: list[int], cfg: ModelConfig, tensors: dict[str, Any]) -> dict[str, Any]:
    """Where a decode step's time goes: CPU encode, GPU total, GPU per kernel, bandwidth."""
    gpu = eng.gpu
    step = eng.step_program(SamplingParams())
    eng.prefill(prompt, 0, SamplingParams(), 0)
    res: dict[str, Any] = {"dispatches": len(step), "cpu_encode_us": step.time_encode(1) * 1e6}
    if gpu.has_timestamps:
        gpu_s = step.time_gpu(1, reps=10)
        wb = weight_bytes_per_token(tensors, cfg.tie_embeddings)
        res.update({
            "gpu_us": gpu_s * 1e6,
            "weight_bytes": wb,
            "bandwidth_gb_s": wb / gpu_s / 1e9,
            "kernels": step.profile_by_label(1),
        })
    return res


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| model | backend | fused | persistent | dispatches/token | tg tok/s | prompt matmul | pp tok/s |\n"
            "| --- | --- | --- | --- | --- | --- | --- | --- |\n")

    def pp(r: dict[str, Any]) -> str:  # "—" where the prompt was not timed (--n-pp 0)
        return f"{r['pp_tok_s']:.0f}" if "pp_tok_s" in r else "—"

    lines = [f"| {r['model']} | {r['backend']} | {'yes' if r['fused'] else 'no'}"
             f"{' (submit/dispatch)' if r.get('per_dispatch_submit') else ''} | "
             f"{r.get('persist') or 'no'} | {r['dispatches_per_token']} | "
             f"{r['tg_tok_s']:.1f} | {r.get('prompt_matmul', '—')} | {pp(r)} |" for r in rows]
    return head + "\n".join(lines) + "\n"


def _kernel_table(kernels: list[dict[str, Any]], unit: str) -> str:
    tot = sum(k["us"] for k in kernels) or 1.0
    rows = [f"| {k['kernel']} | {k['count']} | {k['us']:.1f} | {100 * k['us'] / tot:.1f} % |\n" for k in kernels]
    return f"| kernel | count | {unit} | share |\n| --- | --- | --- | --- |\n" + "".join(rows)


def profile_markdown(p: dict[str, Any]) -> str:
    s = f"dispatches/token {p['dispatches']}, CPU encode {p['cpu_encode_us']:.0f} µs/token"
    if "gpu_us" in p:
        s += (f", GPU {p['gpu_us']:.0f} µs/token, weights {p['weight_bytes'] / 1e6:.0f} MB/token → "
              f"{p['bandwidth_gb_s']:.0f} GB/s\n\n" + _kernel_table(p["kernels"], "GPU µs/token"))
    return s


def prefill_markdown(p: dict[str, Any]) -> str:
    return (f"{p['tokens']} tokens, GPU {p['gpu_us']:.0f} µs through the layers ({p['layers_tok_s']:.0f} tok/s)\n\n"
            + _kernel_table(p["kernels"], "GPU µs"))
