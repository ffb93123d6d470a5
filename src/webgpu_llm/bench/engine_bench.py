"""tg128 and pp512 of the engine on one model, with an optional per-kernel profile.

Protocol (DESIGN.md): decode = 128 greedy tokens after a 16-token prompt, batch 1, one
warm-up excluded, median of the runs; prefill = a 512-token prompt.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import replace
from typing import Any

import numpy as np

from ..engine import SamplingParams, Session, Settings
from ..kernels.common import STATE_INDEX
from ..models.config import ModelConfig
from ..models.presets import weight_bytes, weight_bytes_per_token
from ..runtime.gpu import Gpu


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _ids(n: int, vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, vocab, n).tolist()


def bench_settings(settings: Settings, n_prompt: int = 16, n_gen: int = 128, n_pp: int = 512,
                   ttft: int = 0, stream_batch: int = 0, ctx: int = 0) -> tuple[Settings, int]:
    """The settings (prompt batch) and context a benchmark's model is built with: what its runs
    need (as llama-bench sizes it), or `ctx` where that is more; with `--streams`, at least the
    server's prompt batch (`stream_batch`), with which its one stream prefills its prompt."""
    return (replace(settings, batch=max(n_pp, 16, stream_batch)),
            max(bench_ctx(n_prompt, n_gen, n_pp, ttft), ctx))


def bench_ctx(n_prompt: int = 16, n_gen: int = 128, n_pp: int = 512, ttft: int = 0) -> int:
    """The context a benchmark's runs need."""
    return max(n_prompt + n_gen + 8, n_pp + 8, ttft + 8)


def bench_engine(gpu: Gpu, cfg: ModelConfig, tensors: dict[str, Any], settings: Settings, *, n_prompt: int = 16,
                 n_gen: int = 128, n_pp: int = 512, reps: int = 5, per_dispatch: bool = False,
                 profile: bool = False, log: Any = None, ttft: int = 0, streams: tuple[int, ...] = (),
                 session: Session | None = None, ctx: int = 0) -> dict[str, Any]:
    """tg/pp of a model built with `settings` (its context and prompt batch are the
    benchmark's). Where its decode layers are persistent, the greedy tokens are also decoded
    with them off and the number of positions where they agree is reported (`persist_agree`);
    `prompt_matmul` says where each role's prompt matmul ran: int8 tiles, f16 tiles or simt,
    `prompt_tiles` the f16 tiles' workgroup shape of those on them (e.g. "4x2x4x4 depth 2"),
    `prompt_splits` the ways each splits K (Tuning.splits, or with `multiprocessors` > 0,
    Tuning.sms, the model of waves for that many), `prompt_batch` the prompt tokens a batch;
    `decode_matvec` each role's decode arithmetic: int8, f16 or f32.
    `ttft`: also the time to the first token of a prompt of that many tokens (`ttft_ms`),
    taken in prompt batches of `n_pp` tokens. `streams`: also K requests at once through the
    server's scheduler in this process (`n_prompt` prompt tokens, `n_gen` tokens each), for each K:
    `streams` in the result lists each K's `tok_s`, the generated tokens / the wall time from the
    first submit to the last token, i.e. what `serve --parallel K` can give without HTTP, and
    where the GPU has timestamps `step_gpu_ms`, the GPU time of one step of K decode rows (and
    `gpu_tok_s`, the rate the GPU alone would allow).
    `session`: the model already loaded (with
    `bench_settings`' context and batch; the variants of one benchmark share its weights),
    whose Programs are built anew with `settings`' kernels and fusion."""
    settings, ctx = bench_settings(settings, n_prompt, n_gen, n_pp, ttft, Settings().prompt_batch(gpu) if streams else 0,
                                   ctx)
    say = log or (lambda *_: None)
    tuning = settings.tuning_for(gpu, cfg.hidden, cfg.head_dim, cfg.architecture.moe is not None)
    if session is None:
        say(f"building {cfg.name} on {gpu.name} (context {ctx}, fused={settings.fused}, persist={tuning.persist}; "
            f"{_size(weight_bytes(tensors))} of weights)")
        eng = Session.build(gpu, cfg, tensors.get, settings, ctx)
    else:
        if (session.ctx, session.batch) != (ctx, settings.prompt_batch(gpu)):
            raise ValueError(f"the session's context and batch {(session.ctx, session.batch)} are not the "
                             f"benchmark's {(ctx, settings.prompt_batch(gpu))}")
        say(f"rebuilding {cfg.name}'s kernels (fused={settings.fused}, persist={tuning.persist}, mma={tuning.mma}, "
            f"attention tiles={tuning.attn_tiles})")
        eng = session
        eng.rebuild(tuning, settings.fused)
    m = eng.programs
    greedy = SamplingParams()
    prompt = _ids(n_prompt, cfg.vocab, 1)
    step = eng.step_program(greedy)
    out: dict[str, Any] = {"model": cfg.name, "backend": gpu.backend, "adapter": gpu.info.get("device", ""),
                           "fused": settings.fused, "per_dispatch_submit": per_dispatch,
                           "persist": eng.tuning.persist if settings.fused else 0,
                           "dispatches_per_token": len(step), "n_prompt": n_prompt, "n_gen": n_gen, "ctx": eng.ctx,
                           "kv": "f16" if m.kv_f16 else "f32",
                           "mma": eng.tuning.mma, "prompt_matmul": dict(m.mm_paths), "prompt_tiles": dict(m.mm_tiles),
                           "prompt_splits": dict(m.mm_splits), "prompt_batch": m.batch,
                           "multiprocessors": eng.tuning.sms, "decode_matvec": dict(m.mv_paths),
                           "prompt_attention": _attention_path(m)}
    if gpu.backend == "dawn":  # WEBGPU_LLM_ROBUST, WEBGPU_LLM_DAWN_TOGGLES: and of these
        out["bounds_checks"] = gpu.options.robust
        if gpu.options.dawn_toggles:
            out["dawn_toggles"] = gpu.toggles
    if settings.overrides:  # WEBGPU_LLM_TUNING: the figures are of these switches
        out["tuning_overrides"] = {k: repr(v) for k, v in settings.overrides}
    if m.persist_note:
        out["persist_note"] = m.persist_note
        say("  " + m.persist_note)
    if out["persist"]:
        out["persist_agree"] = eng.persist_agreement(prompt, n_gen)
        say(f"  greedy tokens equal to the per-dispatch decode's: {out['persist_agree']}/{n_gen}")
        if not eng.tuning.persist:  # the rebuild after the comparison fell back (its check failed)
            out.update(persist=0, persist_note=m.persist_note, dispatches_per_token=len(eng.step_program(greedy)))
            say("  " + m.persist_note)
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
    if ttft:
        ids = _ids(ttft, cfg.vocab, 3)
        eng.time_prefill(ids)
        out["ttft_ms"] = statistics.median(1e3 * eng.time_prefill(ids) for _ in range(reps))
        out["n_ttft"] = ttft
        say(f"  time to first token of {ttft}: {out['ttft_ms']:.1f} ms")
    if streams:
        out["streams"] = [_bench_streams(eng, k, n_prompt, n_gen, reps, say, profile) for k in streams]
    if profile:
        out["profile"] = eng.profile_step(prompt, weight_bytes_per_token(tensors, cfg.tie_embeddings, cfg.architecture.moe))
        if n_pp and gpu.has_timestamps:
            out["profile_prefill"] = eng.profile_prefill(n_pp)
    return out


def _bench_streams(eng: Session, k: int, n_prompt: int, n_gen: int, reps: int, say: Any,
                  profile: bool = False) -> dict[str, Any]:
    """Aggregate tok/s of `k` concurrent greedy requests on the scheduler `serve --parallel k`
    uses (with the server's prompt batch), and their times to the first token (submitted at
    once: the last waits for every prompt before it); for the batched engine also its steps per run, rows
    a step and the engine thread's host milliseconds a step (its time not blocked on the GPU);
    with `profile`, the per-kernel GPU time of one step of `k` decode rows."""
    from ..engine.batch import BatchScheduler, scheduler

    greedy = SamplingParams()
    prompts = [_ids(n_prompt, eng.cfg.vocab, 10 + i) for i in range(k)]
    sched = scheduler(eng, parallel=k, max_rows=Settings().step_rows(eng.gpu))
    st = sched.stats
    host: list[tuple[int, int, float, float]] = []  # per run: steps, rows, wall s, s blocked on the GPU
    ttft: list[float] = []  # per request: submitted to first token, s
    try:
        def run(n: int) -> float:
            s0, r0, w0 = st.steps, st.step_rows, st.wait_s
            t = time.perf_counter()
            done = [sched.submit(p, greedy, n) for p in prompts]
            got = sum(len(c.wait()) for c in done)
            dt = time.perf_counter() - t
            host.append((st.steps - s0, st.step_rows - r0, dt, st.wait_s - w0))
            ttft.extend(c.first_token_at - c.submitted_at for c in done if c.first_token_at is not None)
            return got / dt

        run(min(n_gen, 8))  # warm-up: the batched Programs' first steps
        host.clear()
        ttft.clear()
        runs = [run(n_gen) for _ in range(reps)]
        if isinstance(sched, BatchScheduler) and (profile or eng.gpu.has_timestamps):
            # The replays below take the tables of the scheduler's last step, which must have had
            # all k rows (a thin matmul's work follows the rows in the tables): prompts short
            # enough to be admitted in one step decode in lockstep and end together.
            short = [p[:max(1, sched.programs.batch // k)] for p in prompts]
            for c in [sched.submit(p, greedy, n_gen) for p in short]:
                c.wait()
    finally:
        sched.close()
    r: dict[str, Any] = {"streams": k, "tok_s": statistics.median(runs), "runs": runs,
                         "ttft_ms_p50": 1e3 * statistics.median(ttft), "ttft_ms_max": 1e3 * max(ttft)}
    if isinstance(sched, BatchScheduler):
        steps, rows, wall, wait = (sum(x) for x in zip(*host))
        r.update(steps_per_run=steps / len(host), rows_per_step=rows / steps, wall_ms_per_step=1e3 * wall / steps,
                 host_ms_per_step=1e3 * (wall - wait) / steps)
        if profile:
            r["step_ladder_ms"] = step_ladder(sched, k)
    if eng.gpu.has_timestamps:  # the GPU's share: the last step (k decode rows) replayed alone
        if isinstance(sched, BatchScheduler):
            step = sched.programs.step(k, k, False, False, decode_only=True)
            r["step_gpu_ms"] = 1e3 * step.time_gpu((k, k, k), reps=max(reps, 3))
            if profile:
                r["step_profile"] = step.profile_by_label((k, k, k))
        else:
            r["step_gpu_ms"] = 1e3 * eng.step_gpu_seconds(prompts[0], reps=max(reps, 3))
        r["gpu_tok_s"] = k / r["step_gpu_ms"] * 1e3
    say(f"  {k} streams through the scheduler: {r['tok_s']:.1f} tok/s together, first token after "
        f"{r['ttft_ms_p50']:.1f} ms (p50; last {r['ttft_ms_max']:.1f} ms)"
        + (f" (a step's GPU time {r['step_gpu_ms']:.2f} ms: {r['gpu_tok_s']:.0f} tok/s)" if "step_gpu_ms" in r else "")
        + (f"; {r['steps_per_run']:.0f} steps a run, {r['rows_per_step']:.1f} rows and "
           f"{r['wall_ms_per_step']:.2f} ms a step, {r['host_ms_per_step']:.2f} ms of it host work"
           if "steps_per_run" in r else "")
        + ("; replayed: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in r["step_ladder_ms"].items())
           if "step_ladder_ms" in r else ""))
    return r


def step_ladder(sched: Any, k: int, reps: int = 60) -> dict[str, float]:
    """Wall milliseconds a step of `k` decode rows (the last one the scheduler ran, its tables
    as they were) replayed `reps` times back to back: all in one submit (`one_submit`, a pass
    each: what several steps a submit could reach), a submit each (`replay`, the GPU's rate for
    consecutive steps), with the scheduler's five table writes before each (`writes`), and with
    those and a read-back of its samples each, `Tuning.batch_inflight` in flight (`read_backs`,
    the scheduler's GPU-side work without its Python). Beside `wall_ms_per_step`, the rungs
    say where a step's time goes."""
    from ..engine.batch import LP_WIDTH
    from ..runtime.gpu import ReadBack
    from ..runtime.program import run_programs

    m, g = sched.programs, sched.programs.gpu
    b, n = m.buf, (k, k, k)
    step = m.step(k, k, False, False, decode_only=True)
    tables = [(buf, bytes(g.read(buf))) for buf in (b.st, b.rows, b.blocks, b.st_s, b.samples)]
    if (rows := int(np.frombuffer(tables[0][1], np.uint32)[STATE_INDEX["n"]])) != k:
        raise RuntimeError(f"the scheduler's last step had {rows} rows, not {k}: its replay would time other work")
    S = m.slots.count
    staging = [g.device.create_buffer(size=S * 4 * (1 + LP_WIDTH), usage=g.usage.MAP_READ | g.usage.COPY_DST)
               for _ in range(m.tuning.batch_inflight + 1)]
    out: dict[str, float] = {}
    g.sync()
    t = time.perf_counter()
    enc = g.device.create_command_encoder()
    for _ in range(reps):
        cpass = enc.begin_compute_pass()
        step.encode(cpass, n)
        cpass.end()
    g.submit([enc.finish()])
    g.sync()
    out["one_submit"] = 1e3 * (time.perf_counter() - t) / reps
    for rung in ("replay", "writes", "read_backs"):
        g.sync()
        pending: list[ReadBack] = []
        t = time.perf_counter()
        for i in range(reps):
            if rung != "replay":
                for buf, data in tables:
                    g.write(buf, data)
            if rung == "read_backs":
                if len(pending) >= m.tuning.batch_inflight:
                    pending.pop(0).wait().unmap()
                dst = staging[i % len(staging)]
                index = run_programs(g, [(step, n)], after=lambda enc, dst=dst: enc.copy_buffer_to_buffer(
                    b.sampled, 0, dst, 0, k * 4))
                pending.append(ReadBack(g, dst, index))
            else:
                run_programs(g, [(step, n)])
        for rb in pending:
            rb.wait().unmap()
        g.sync()
        out[rung] = 1e3 * (time.perf_counter() - t) / reps
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| model | backend | fused | persistent | dispatches/token | tg tok/s | prompt matmul | prompt attention "
            "| pp tok/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")

    def pp(r: dict[str, Any]) -> str:  # "—" where the prompt was not timed (--n-pp 0)
        return f"{r['pp_tok_s']:.0f}" if "pp_tok_s" in r else "—"

    tuned = any("tuning" in r for r in rows)  # (bench --tuning: a column of the variants' switches)
    if tuned:
        head = head.replace("| model |", "| model | tuning |", 1).replace("| --- |", "| --- | --- |", 1)
    lines = [f"| {r['model']}{' | ' + (r.get('tuning') or '(defaults)') if tuned else ''} | {r['backend']} | {'yes' if r['fused'] else 'no'}"
             f"{' (submit/dispatch)' if r.get('per_dispatch_submit') else ''} | "
             f"{r.get('persist') or 'no'} | {r['dispatches_per_token']} | "
             f"{r['tg_tok_s']:.1f} | {_paths(r)} | {r.get('prompt_attention', '—')} | {pp(r)} |" for r in rows]
    table = head + "\n".join(lines) + "\n"
    many = [(r, x) for r in rows for x in r.get("streams", [])]
    if many:  # --streams: the scheduler's aggregate beside the one-sequence decode
        def host(x: dict[str, Any]) -> str:
            return (f"{x['rows_per_step']:.1f} | {x['wall_ms_per_step']:.2f} | {x['host_ms_per_step']:.2f}"
                    if "steps_per_run" in x else "— | — | —")

        table += ("\n| model | streams | tok/s together | rows a step | ms a step | host ms a step | a step's GPU ms "
                  "| tok/s the GPU allows | tg tok/s |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
                  + "".join(f"| {r['model']} | {x['streams']} | {x['tok_s']:.1f} | {host(x)} | "
                            + (f"{x['step_gpu_ms']:.2f} | {x['gpu_tok_s']:.0f}" if "step_gpu_ms" in x else "— | —")
                            + f" | {r['tg_tok_s']:.1f} |\n" for r, x in many))
    return table


def _paths(r: dict[str, Any]) -> str:
    """The prompt matmuls' paths in a row: one, or those used joined (e.g. int8+simt)."""
    paths = r.get("prompt_matmul") or {}
    return "+".join(sorted(set(paths.values()))) if isinstance(paths, dict) and paths else "—"


def _kernel_table(kernels: list[dict[str, Any]], unit: str, whole_us: float = 0.0) -> str:
    """Per-kernel times (each dispatch timed in a pass of its own); with `whole_us`, the time of
    all of them in one pass, also each kernel's estimated share of it: its time less the
    passes' cost a dispatch (what the per-pass times add up to beyond the whole, spread evenly)."""
    tot = sum(k["us"] for k in kernels) or 1.0
    n = sum(k["count"] for k in kernels) or 1
    extra = (tot - whole_us) / n if whole_us and tot > whole_us else 0.0
    cols = f"| kernel | count | workgroups | {unit} | share |" + (f" ~in one pass (less {extra:.1f} µs a dispatch) |" if extra else "")
    rows = [f"| {k['kernel']} | {k['count']} | {k.get('workgroups', '')} | {k['us']:.1f} | {100 * k['us'] / tot:.1f} % |"
            + (f" {max(k['us'] - extra * k['count'], 0.0):.1f} |" if extra else "") + "\n" for k in kernels]
    return cols + "\n|" + " --- |" * (cols.count("|") - 1) + "\n" + "".join(rows)


def profile_markdown(p: dict[str, Any]) -> str:
    s = f"dispatches/token {p['dispatches']}, CPU encode {p['cpu_encode_us']:.0f} µs/token"
    if "gpu_us" in p:
        s += (f", GPU {p['gpu_us']:.0f} µs/token, weights {p['weight_bytes'] / 1e6:.0f} MB/token → "
              f"{p['bandwidth_gb_s']:.0f} GB/s\n\n" + _kernel_table(p["kernels"], "GPU µs/token", p["gpu_us"]))
    return s


def streams_profile_markdown(x: dict[str, Any]) -> str:
    """The per-kernel GPU time of one batched step of `x['streams']` decode rows."""
    return (f"{x['streams']} decode rows, GPU {x['step_gpu_ms'] * 1e3:.0f} µs a step\n\n"
            + _kernel_table(x["step_profile"], "GPU µs/step", x["step_gpu_ms"] * 1e3))


def _attention_path(m: Any) -> str:
    """The prompt attention's kernel: the f16 tiles (with its key splits, Tuning.attn_splits) or SIMT."""
    if not m.attention_tiles(m.attention_spec(0)):
        return "simt"
    return "f16 tiles" + (f", keys in {m.tuning.attn_splits} parts" if m.tuning.attn_splits > 1 else "")


def prefill_markdown(p: dict[str, Any]) -> str:
    return (f"{p['tokens']} tokens, GPU {p['gpu_us']:.0f} µs through the layers ({p['layers_tok_s']:.0f} tok/s)\n\n"
            + _kernel_table(p["kernels"], "GPU µs", p["gpu_us"]))
