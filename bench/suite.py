#!/usr/bin/env python3
"""Run named suites of benchmark commands and print one markdown table of their figures.

Each suite is a list of commands (`webgpu-llm bench`, `bench/torch_generate.py`, the peers'
scripts) run as subprocesses; each writes its full JSON, which the runner reads. With several
checkouts (`--src A/src,B/src`) every command runs once per checkout, interleaved per command
(A, B, A, B, ... with --repeat) so that the machine's drift falls on both alike, and the table
gives each figure per checkout and its ratio to the first; `--tuning` adds variants of each
checkout under Tuning overrides the same way. The protocol is docs/performance.md's.

    python bench/suite.py --list
    python bench/suite.py batch1 --dry-run
    python bench/suite.py batch1 torch --out results/
    git worktree add /tmp/prev HEAD~1
    python bench/suite.py batch1 --src /tmp/prev/src,src --repeat 2 --out results/

A checkout is used through PYTHONPATH (prepended to the inherited one) and
`python -m webgpu_llm.cli.main`; a script such as bench/torch_generate.py is taken from the
checkout beside the `src` folder when it has one, else from this one. Command output goes to
--out DIR (one JSON and one log per run, summary.json and summary.md); progress goes to stderr,
the table to stdout, last. Exit status: 0, 1 if a command failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / ".peers" / "on-device.sh"
CLI = ["-m", "webgpu_llm.cli.main"]
PRESETS = ("qwen2.5-0.5b", "qwen2.5-1.5b")
BACKENDS = ("dawn", "wgpu")
DTYPES = ("f16", "q8_0", "q4_0")
OUT = "{out}"  # replaced by the run's JSON path


@dataclass
class Cmd:
    """One command of a suite. `argv` follows the Python executable unless `shell` is set;
    a first element `bench/NAME` is resolved per checkout; `{out}` is the run's JSON file."""

    suite: str
    name: str
    argv: list[str]
    kind: str  # how its figures are read: bench, torch, llama-cuda, llama-vulkan, load, probe or none
    per_src: bool = True  # run once per checkout (else once, with the first checkout)
    shell: bool = False
    tags: list[str] = field(default_factory=list)  # labels the engine rows take in turn (--mma a,b)
    early: bool = False  # starts background work (a build) and returns: run before everything else


@dataclass
class Options:
    presets: list[str]
    backends: list[str]
    dtypes: list[str]
    reps: int | None


def _bench(suite: str, name: str, *args: str, reps: int, tags: list[str] | None = None) -> Cmd:
    return Cmd(suite, name, [*CLI, "bench", *args, "--reps", str(reps), "--json", "--out", OUT], "bench",
               tags=tags or [])


def smoke(o: Options) -> list[Cmd]:
    return [_bench("smoke", "tiny f16 wgpu", "--preset", "tiny", "--dtype", "f16", "--backend", "wgpu",
                   "--n-gen", "4", "--n-pp", "0", reps=o.reps or 1)]


def batch1(o: Options) -> list[Cmd]:
    return [_bench("batch1", f"{p} {b}", "--preset", p, "--dtype", ",".join(o.dtypes), "--backend", b, reps=o.reps or 5)
            for p in o.presets for b in o.backends]


def mma(o: Options) -> list[Cmd]:
    dtypes = [d for d in o.dtypes if d != "f16"]  # the int8 tiles serve quantized weights only
    if "dawn" not in o.backends or not dtypes:
        return []
    return [_bench("mma", f"{p} dawn", "--preset", p, "--dtype", ",".join(dtypes), "--backend", "dawn",
                   "--mma", "auto,off", reps=o.reps or 5, tags=["mma auto", "mma off"]) for p in o.presets]


def torch(o: Options) -> list[Cmd]:
    """The torch device on Dawn: eager, fused-layer and compiled decode of the 0.5B shape (f32, f16),
    compiled only for the 1.5B shape (its eager token takes minutes to be worth measuring)."""
    runs = ["--runs", str(o.reps or 3), "--out", OUT]
    script = ["bench/torch_generate.py", "--backend", "dawn", "--model"]
    return [Cmd("torch", f"{p} dawn", [*script, p, *runs] if p == "qwen2.5-0.5b" else
                [*script, p, "--modes", "compiled", "--dtypes", "f16,f32", *runs], "torch")
            for p in o.presets if p in PRESETS]  # the shapes torch_generate.py knows


def torch_cuda(o: Options) -> list[Cmd]:
    return [Cmd("torch-cuda", f"{p} f16", [*CLI, "bench", "--preset", p, "--dtype", "f16", "--backend", "dawn",
                                          "--reps", str(o.reps or 3), "--peers", "torch", "--json", "--out", OUT],
                "bench", per_src=False) for p in o.presets]


# llama.cpp CUDA's llama-bench from on-device.sh's build, once it has finished, as JSON: its
# figures are each test's median over 10 runs (llama-bench's own mean of 3, with one slow run
# among them, spread pp512 by 15-55 %); ARGS: the models and tests
LLAMA_BENCH = ("for i in $(seq 1 120); do [ -f /tmp/build.done ] && break; sleep 5; done; "
               "[ \"$(cat /tmp/build.done 2>/dev/null)\" = 0 ] || { echo 'llama.cpp CUDA build failed or unfinished'; exit 1; }; "
               "/tmp/lcb/bin/llama-bench ARGS -r 10 -ngl 99 -o json")


def peers(o: Options) -> list[Cmd]:
    sh = ["bash", str(PEERS.relative_to(ROOT))]

    def bench(name: str, args: str) -> Cmd:
        return Cmd("peers", name, ["bash", "-c", LLAMA_BENCH.replace("ARGS", args)], "llama-cuda", per_src=False, shell=True)

    return [Cmd("peers", "llama.cpp CUDA build", [*sh, "build"], "none", per_src=False, shell=True, early=True),
            Cmd("peers", "GGUF files", [*sh, "gguf"], "none", per_src=False, shell=True),
            bench("llama.cpp CUDA", "$(for f in /tmp/gg/*.gguf; do echo -m $f; done) -p 512 -n 128"),
            # the first token of a 2048-token prompt (issue 25), beside `prompt`'s --ttft 2048
            bench("llama.cpp CUDA pp2048", "-m /tmp/gg/qwen2.5-1.5b-f16.gguf -p 2048 -n 0"),
            Cmd("peers", "llama.cpp Vulkan", [*sh, "vulkan"], "llama-vulkan", per_src=False, shell=True)]


def embed(o: Options) -> list[Cmd]:
    """A batch of 64 sentences embedded in one call (`bench --embed 64`) on each backend: the
    installed all-MiniLM-L6-v2 beside sentence-transformers on the CPU (its preset with random
    weights beside transformers where the package is missing), and nomic-embed-text-v1.5's shape."""
    cmds = [_bench("embed", f"all-MiniLM-L6-v2 {b}", "--embed", "64", "--backend", b,
                   *(["--peers", "sentence-transformers"] if i == 0 else []), reps=o.reps or 5)
            for i, b in enumerate(o.backends)]
    return cmds + [_bench("embed", f"nomic-embed-text-v1.5 {b}", "--embed", "64", "--preset", "nomic-embed-text-v1.5",
                          "--dtype", "f16", "--backend", b, reps=o.reps or 5) for b in o.backends]


LOAD_CLIENTS = "1,32,64"  # DESIGN.md's concurrent streams: 64-token prompts, 128 tokens each (load.py's defaults)
LSV = "/tmp/lsv"  # where on-device.sh unpacks the prebuilt llama-server (its bin/)


def serve(o: Options) -> list[Cmd]:
    """bench/load.py against `webgpu-llm serve` (per checkout, a server per client count) and
    llama.cpp's Vulkan llama-server (-np K, once) on the peers' random-weight GGUFs in /tmp/gg."""
    tar = ROOT / ".peers" / "llama-server-vulkan.tar.xz"
    gen = ROOT / ".peers" / "gen_gguf.py"
    # only the files these shapes and types need (the peers' `gguf` step writes all six)
    files = " && ".join(f"{{ [ -f /tmp/gg/{p}-{d}.gguf ] || python3 {gen} {p} {d} /tmp/gg/{p}-{d}.gguf; }}"
                        for p in o.presets for d in o.dtypes)
    cmds = [Cmd("serve", "GGUF files", ["bash", "-c", f"mkdir -p /tmp/gg && {files}"], "none", per_src=False,
                shell=True),
            Cmd("serve", "llama-server", ["bash", "-c", f"mkdir -p {LSV} && tar xJf {tar} -C {LSV}"], "none",
                per_src=False, shell=True)]
    load = ["bench/load.py", "--clients", LOAD_CLIENTS, "--out", OUT, "--server-cmd"]
    for p in o.presets:
        for d in o.dtypes:
            gguf = f"/tmp/gg/{p}-{d}.gguf"
            # the same requests through the scheduler in one process, without HTTP (the engine's share;
            # with the batched step's kernels and its back-to-back replays in the JSON)
            cmds += [_bench("serve", f"{p} {d} {b} in-process", "--model", gguf, "--backend", b, "--n-prompt", "64",
                            "--n-pp", "0", "--streams", LOAD_CLIENTS, "--profile", reps=o.reps or 3) for b in o.backends]
            cmds += [Cmd("serve", f"{p} {d} {b}", [*load, f"{{python}} -m webgpu_llm.cli.main serve -m {gguf} --backend {b} "
                                                         "--parallel {clients} --ctx {ctx} --port {port} --quiet"], "load")
                     for b in o.backends]
            cmds.append(Cmd("serve", f"{p} {d} llama-server", [*load, f"env LD_LIBRARY_PATH={LSV}/bin {LSV}/bin/llama-server "
                                                                      f"-m {gguf} -ngl 99 -np {{clients}} -c {{ctx_total}} "
                                                                      "-fa off --port {port}"], "load", per_src=False))
    return cmds


def prompt(o: Options) -> list[Cmd]:
    """The prompt path on Dawn (where the tiles run): pp512 and the first token of a 2048-token
    prompt, a short decode beside; meant to run under several --tuning variants."""
    dtypes = ",".join(o.dtypes if o.dtypes != list(DTYPES) else ["f16", "q4_0"])
    return [_bench("prompt", f"{p} dawn", "--preset", p, "--dtype", dtypes, "--backend", "dawn", "--n-gen", "32",
                   "--ttft", "2048", reps=o.reps or 3) for p in o.presets]


# the Qwen2.5 shapes' prompt matmuls: (name, weight rows, inputs, epilogue)
MATMULS = {"qwen2.5-0.5b": (("gate_up", 9728, 896, "silu_mul"), ("down", 896, 4864, "store"), ("qkv", 1152, 896, "store")),
           "qwen2.5-1.5b": (("gate_up", 17920, 1536, "silu_mul"), ("down", 1536, 8960, "store"), ("qkv", 2048, 1536, "store"))}
TILE_SHAPES = "2,2,4,4,2;2,2,4,4,1;4,2,2,4,2;4,2,2,4,2,double;4,2,4,4,2;2,4,4,2,2;4,4,2,2,2;2,2,2,2,2"  # sm,sn,tm,tn[,depth[,ku]] (mma.TileShape)


def tiles(o: Options) -> list[Cmd]:
    """bench/probe_mma_matmul.py on each prompt matmul of the shapes (f16 weights, gate/up in q4_0
    too, dequantized while staged; 512 tokens): the f16 tiles' workgroup shapes, each with f32
    and f16 rows of x, and the first shape's cuts (the probe sets its kernels itself: --tuning
    variants only repeat it)."""
    return [Cmd("tiles", f"{p} {name} {fmt}", ["bench/probe_mma_matmul.py", "--rows", str(rows), "--k", str(k), "--tokens",
                                               "512", "--fmt", fmt, "--epilogue", epi, "--shapes", TILE_SHAPES, "--out", OUT],
                "probe")
            for p in o.presets if p in MATMULS for name, rows, k, epi in MATMULS[p]
            for fmt in (("f16", "q4_0") if name == "gate_up" else ("f16",))]


MOE = (("qwen3-30b-a3b", "q4_0"), ("gpt-oss-20b", "mxfp4"))  # the shapes and types the real files have
FAMILIES = tuple((p, d) for p in ("qwen3-0.6b", "qwen3-1.7b", "gemma-3-1b") for d in ("f16", "q4_0"))


def _preset_files(suite: str, pairs: tuple[tuple[str, str], ...], o: Options) -> list[Cmd]:
    """Presets' seeded random weights written once as GGUF files into /tmp/gg
    (bench/preset_gguf.py), where the peers' `cuda` step times them with llama-bench beside the
    Qwen2.5 files; the engine on the same files (Dawn)."""
    cmds = [Cmd(suite, f"{p} {d} GGUF", ["bench/preset_gguf.py", p, d, f"/tmp/gg/{p}-{d}.gguf"], "none", per_src=False)
            for p, d in pairs]
    return cmds + [_bench(suite, f"{p} {d} dawn", "--model", f"/tmp/gg/{p}-{d}.gguf", "--backend", "dawn",
                          reps=o.reps or 3) for p, d in pairs]


def moe(o: Options) -> list[Cmd]:
    return _preset_files("moe", MOE, o)


def families(o: Options) -> list[Cmd]:
    return _preset_files("families", FAMILIES, o)


SUITES: dict[str, tuple[Callable[[Options], list[Cmd]], str]] = {
    "smoke": (smoke, "the tiny preset, 4 tokens on wgpu-native: checks the runner (up to a minute on llvmpipe)"),
    "batch1": (batch1, "tg128/pp512 of the Qwen2.5 0.5B and 1.5B shapes, f16/q8_0/q4_0, Dawn and wgpu-native"),
    "mma": (mma, "quantized prompts on Dawn with the int8 matrix tiles and without (--mma auto,off)"),
    "torch": (torch, "the torch device's decode tok/s and compiled step GPU time (bench/torch_generate.py)"),
    "torch-cuda": (torch_cuda, "PyTorch CUDA (transformers generate, eager and compiled) beside the engine, once"),
    "embed": (embed, "embeddings/s of 64 sentences in one call (bench --embed 64), sentence-transformers on the "
                     "CPU beside"),
    "peers": (peers, "llama.cpp CUDA (llama-bench) and Vulkan (llama-server) from .peers/, once"),
    "prompt": (prompt, "pp512 and the first token of 2048 tokens on Dawn (f16, q4_0 unless --dtypes), for --tuning variants"),
    "tiles": (tiles, "the f16 tile matmul alone on each Qwen2.5 prompt matmul (bench/probe_mma_matmul.py): workgroup "
                     "shapes, f16 x, cuts"),
    "families": (families, "Qwen3 0.6B/1.7B and Gemma 3 1B shapes (f16, q4_0) as GGUF files in /tmp/gg, the "
                           "engine on them (run before `peers`, whose llama-bench then times them too)"),
    "moe": (moe, "Qwen3-30B-A3B (q4_0) and gpt-oss-20b (MXFP4) shapes as GGUF files in /tmp/gg, the engine on "
                 "them (run before `peers`, whose llama-bench then times them too)"),
    "serve": (serve, f"concurrent streams ({LOAD_CLIENTS} clients, bench/load.py) of webgpu-llm serve and "
                     "llama-server -np K on the peers' GGUFs (.peers/), each server started per K"),
}


class Fail(Exception):
    """Bad input: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise Fail(message)


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = Parser(prog="bench/suite.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="suites:\n" + "\n".join(f"  {k:11s} {d}" for k, (_, d) in SUITES.items()))
    ap.add_argument("suites", nargs="*", metavar="SUITE", help="suites to run, in order (--list shows them)")
    ap.add_argument("--list", action="store_true", help="list the suites and their commands' count, and exit")
    ap.add_argument("--dry-run", action="store_true", help="print the commands in the order they would run, and exit")
    ap.add_argument("--src", default=str(ROOT / "src"), metavar="DIR[,DIR...]",
                    help="checkouts' src folders to compare, A first (default: this checkout's src)")
    ap.add_argument("--tuning", action="append", default=None, metavar="FIELD=VALUE[;...]",
                    help="also run each command under these Tuning overrides (WEBGPU_LLM_TUNING), a variant beside "
                         "each checkout; '' for the defaults; repeat it for more, e.g. --tuning '' --tuning "
                         "'batch_tiles=(1,4,1,2)' (default: the inherited environment's)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N", help="run each command N times per checkout, "
                    "interleaved A, B, A, B; the table takes the median (default 1)")
    ap.add_argument("--out", default=None, metavar="DIR", help="write each run's JSON and log, summary.json and "
                    "summary.md here (default: a new temporary folder, named on stderr)")
    ap.add_argument("--presets", default=",".join(PRESETS),
                    help="model shapes for batch1, mma, torch (its two) and torch-cuda (default: %(default)s)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="engine backends for batch1 (mma: dawn only) (default: %(default)s)")
    ap.add_argument("--dtypes", default=",".join(DTYPES),
                    help="engine weight types for batch1 (mma: the quantized ones) (default: %(default)s)")
    ap.add_argument("--reps", type=int, default=None, metavar="N",
                    help="timed runs per figure inside each command (default: the suite's: 5 engine, 3 torch)")
    ap.add_argument("--python", default=sys.executable, metavar="PATH",
                    help="the Python that runs the commands (default: this one)")
    ap.add_argument("--timeout", type=float, default=560, metavar="S", help="seconds per command (default 560)")
    args = ap.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        raise Fail(f"unknown suite {unknown[0]!r}: choose from {', '.join(SUITES)}")
    if not args.suites and not args.list:
        raise Fail(f"name a suite ({', '.join(SUITES)}), or --list")
    for name, value in (("--repeat", args.repeat), ("--reps", args.reps)):
        if value is not None and value < 1:
            raise Fail(f"{name} must be 1 or more, not {value}")
    if args.timeout <= 0:
        raise Fail("--timeout must be positive")
    for name in ("presets", "backends", "dtypes"):
        setattr(args, name, [v.strip() for v in getattr(args, name).split(",") if v.strip()])
        if not getattr(args, name):
            raise Fail(f"--{name} is empty")
    if bad := [b for b in args.backends if b not in BACKENDS]:
        raise Fail(f"unknown backend {bad[0]!r}: choose from {', '.join(BACKENDS)}")
    presets, dtypes = known(ROOT / "src")
    for name, given, valid in (("preset", args.presets, presets), ("weight type", args.dtypes, dtypes)):
        if valid and (bad := [v for v in given if v not in valid]):
            raise Fail(f"unknown {name} {bad[0]!r}: choose from {', '.join(valid)}")
    srcs = [s.strip() for s in args.src.split(",") if s.strip()]
    if not srcs or len(srcs) > 26:
        raise Fail("--src takes 1 to 26 folders")
    paths = []
    for s in srcs:
        p = Path(s).resolve()
        if not (p / "webgpu_llm" / "__init__.py").is_file():
            raise Fail(f"--src {s}: no webgpu_llm package in it (give a checkout's src folder)")
        paths.append(p)
    tunings: list[str | None] = [t.strip() for t in args.tuning] if args.tuning else [None]
    for t in tunings:
        if t and (err := bad_tuning(ROOT / "src", t)):
            raise Fail(f"--tuning {t!r}: {err}")
    # the variants, A, B, ...: each checkout under each tuning
    args.variants = [Variant(p, t) for p in paths for t in tunings]
    if len(args.variants) > 26:
        raise Fail(f"{len(args.variants)} checkouts x tunings: at most 26")
    return args


@dataclass
class Variant:
    """What a command runs against: a checkout's src folder, and its Tuning overrides (None:
    the environment's WEBGPU_LLM_TUNING as inherited)."""

    src: Path
    tuning: str | None = None

    def describe(self) -> str:
        return str(self.src) + (f" [{self.tuning or 'defaults'}]" if self.tuning is not None else "")


def bad_tuning(src: Path, text: str) -> str | None:
    """Why this checkout's engine refuses a Tuning override string (None: it takes it, or it
    cannot be imported here)."""
    sys.path.insert(0, str(src))
    try:
        from webgpu_llm.engine.settings import tuning_overrides
        from webgpu_llm.errors import UserError
    except ImportError:
        return None
    finally:
        sys.path.remove(str(src))
    try:
        tuning_overrides(text)
    except UserError as e:
        return str(e)
    return None


def known(src: Path) -> tuple[list[str], list[str]]:
    """The presets and weight types this checkout's engine knows (none if it cannot be imported)."""
    sys.path.insert(0, str(src))
    try:
        from webgpu_llm.models.presets import DTYPES as dtypes
        from webgpu_llm.models.presets import PRESETS as presets
    except ImportError:
        return [], []
    finally:
        sys.path.remove(str(src))
    return list(presets), list(dtypes)


def label(i: int) -> str:
    return chr(ord("A") + i)


def revision(src: Path) -> str:
    """The checkout's commit (short), '-dirty' when its src has uncommitted changes; '?' outside git."""
    try:
        rev = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=20).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
    return (rev or "?") + ("-dirty" if dirty else "")


def env_for(v: Variant) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(v.src), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    if v.tuning is not None:
        env["WEBGPU_LLM_TUNING"] = v.tuning
    return env


def command(cmd: Cmd, src: Path, python: str, out: str) -> list[str]:
    argv = [out if a == OUT else a for a in cmd.argv]
    if cmd.shell:
        return argv
    if argv[0].startswith("bench/"):  # the checkout's own copy of the script, if it has one
        own = src.parent / argv[0]
        argv[0] = str(own if own.is_file() else ROOT / argv[0])
    return [python, *argv]


def stem(k: int, cmd: Cmd, who: str, r: int) -> str:
    """The file name (no suffix) of the k-th run's JSON and log."""
    return f"{k:03d}_{cmd.suite}_{cmd.name.replace(' ', '_')}_{who}_r{r}"


def plan(cmds: list[Cmd], nsrc: int, repeat: int) -> list[tuple[Cmd, int, int]]:
    """(command, checkout index, round), interleaved per command: A B A B ... for each; the
    commands that only start background work first, so that it runs beside the others."""
    steps = []
    for c in sorted(cmds, key=lambda c: not c.early):
        if c.per_src:
            steps += [(c, i, r) for r in range(repeat) for i in range(nsrc)]
        else:
            steps.append((c, 0, 0))
    return steps


# -- reading figures: {cell: {metric: value}} --------------------------------------------------

def _engine_cells(doc: dict[str, Any], tags: list[str]) -> dict[str, dict[str, float]]:
    cells: dict[str, dict[str, float]] = {}
    for i, r in enumerate(doc.get("engine", [])):
        key = f"{r['model'].split(' (')[0]} {r.get('dtype', '?')} {r['backend']}"
        if tags:
            key += f" {tags[i % len(tags)]}"
        if r.get("persist"):
            key += f" persist {r['persist']}"
        m = cells.setdefault(key, {})
        if r.get("tg_tok_s"):
            m[f"tg{r['n_gen']} tok/s"] = r["tg_tok_s"]
        if r.get("pp_tok_s"):
            m[f"pp{r['n_pp']} tok/s"] = r["pp_tok_s"]
        if r.get("ttft_ms"):
            m[f"first token of {r['n_ttft']} ms"] = r["ttft_ms"]
        if r.get("texts_s"):  # bench --embed
            m[f"embed{r['texts']} texts/s"] = r["texts_s"]
        for x in r.get("streams", []):  # bench --streams: the scheduler in-process
            m[f"{x['streams']} streams tok/s"] = x["tok_s"]
            if x.get("ttft_ms_p50"):
                m[f"{x['streams']} streams TTFT p50 ms"] = x["ttft_ms_p50"]
            if x.get("step_gpu_ms"):
                m[f"{x['streams']} streams step GPU ms"] = x["step_gpu_ms"]
            if x.get("wall_ms_per_step"):  # the batched engine: a step's wall and host time
                m[f"{x['streams']} streams step ms"] = x["wall_ms_per_step"]
                m[f"{x['streams']} streams step host ms"] = x["host_ms_per_step"]
    for r in doc.get("peers", []):
        m = cells.setdefault(f"{r['peer']} {r.get('dtype', '?')}", {})
        for k in ("tg", "pp"):
            if r.get(f"{k}_tok_s"):
                m[f"{k} tok/s"] = r[f"{k}_tok_s"]
        if r.get("texts_s"):
            m[f"embed{r['texts']} texts/s"] = r["texts_s"]
    return cells


def _torch_cells(doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    model = str(doc.get("model", "?")).split(" ")[0]
    cells: dict[str, dict[str, float]] = {}
    for r in doc.get("results", []):
        m = cells.setdefault(f"{model} {r['dtype']} {r['mode']}", {})
        m["decode tok/s"] = r["decode_tok_s"]
        step = r.get("decode_step_gpu") or {}
        if step.get("gpu_us"):
            m["step GPU µs"] = step["gpu_us"]
    return cells


def _gguf_name(path: str) -> str:
    stem = Path(path).name.removesuffix(".gguf")
    head, _, dtype = stem.rpartition("-")
    return f"{head} {dtype}" if head else stem


def _llama_cuda_cells(text: str) -> dict[str, dict[str, float]]:
    """llama-bench's JSON (-o json): each model's tests at their median over the runs; a prompt
    test also as the time to its first token."""
    cells: dict[str, dict[str, float]] = {}
    for r in json.loads(text[text.index("["):]):
        test = f"tg{r['n_gen']}" if r["n_gen"] else f"pp{r['n_prompt']}"
        rate = statistics.median(r["samples_ts"])
        m = cells.setdefault(f"llama.cpp CUDA {_gguf_name(r['model_filename'])}", {})
        m[f"{test} tok/s"] = rate
        if not r["n_gen"] and r["n_prompt"] != 512:
            m[f"first token of {r['n_prompt']} ms"] = r["n_prompt"] / rate * 1000
    return cells


def _llama_vulkan_cells(text: str) -> dict[str, dict[str, float]]:
    cells: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if "tg128" in r:
                cells[f"llama.cpp Vulkan {_gguf_name(r['file'])}"] = {"tg128 tok/s": r["tg128"],
                                                                      "pp512 tok/s": r["pp512"]}
    return cells


def _load_cells(cmd: Cmd, doc: dict[str, Any]) -> dict[str, dict[str, float]]:
    cells: dict[str, dict[str, float]] = {}
    for r in doc["runs"]:
        m = cells.setdefault(f"{cmd.name} K={r['clients']}", {"aggregate tok/s": r["aggregate_tok_s"]})
        for name, key in (("TTFT p50 ms", ("ttft_s", "p50")), ("ITL p50 ms", ("itl_s", "p50")),
                          ("ITL p99 ms", ("itl_s", "p99"))):
            if r[key[0]][key[1]] is not None:
                m[name] = r[key[0]][key[1]] * 1000
        if r.get("server_ttft_mean_s") is not None:  # the server's own (webgpu-llm serve's /metrics)
            m["server TTFT mean ms"] = r["server_ttft_mean_s"] * 1000
        if r.get("server_duration_mean_s") is not None:
            m["server request mean ms"] = r["server_duration_mean_s"] * 1000
    return cells


def figures(cmd: Cmd, out: Path, stdout: str) -> dict[str, dict[str, float]]:
    if cmd.kind in ("bench", "torch"):
        text = out.read_text() if out.is_file() else stdout.strip().splitlines()[-1]
        doc = json.loads(text)
        return _engine_cells(doc, cmd.tags) if cmd.kind == "bench" else _torch_cells(doc)
    if cmd.kind == "load":
        return _load_cells(cmd, json.loads(out.read_text()))
    if cmd.kind == "probe":  # a kernel a cell: its µs and TFLOP/s (the numpy checks' errors too)
        rows = json.loads(out.read_text())["rows"]
        return {f"{cmd.name}: {r['kernel']}": ({"µs": r["us"], "TFLOP/s": r["tflops"]} if "us" in r else
                                                {"max rel err": r["rel_err"]}) for r in rows}
    if cmd.kind == "llama-cuda":
        return _llama_cuda_cells(stdout)
    if cmd.kind == "llama-vulkan":
        return _llama_vulkan_cells(stdout)
    return {}


# -- running ------------------------------------------------------------------------------------

def run_one(argv: list[str], env: dict[str, str], timeout: float) -> tuple[int, str, str]:
    """Run in its own process group (killed whole on timeout); exit status, stdout, stderr."""
    p = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        return 124, out, err + f"\ntimed out after {timeout:g} s"


def check_import(python: str, src: Path) -> None:
    """The checkout's package must be the one a command imports (not an installed copy)."""
    p = subprocess.run([python, "-c", "import webgpu_llm; print(webgpu_llm.__file__)"], env=env_for(Variant(src)),
                       capture_output=True, text=True, timeout=120)
    got = p.stdout.strip()
    if p.returncode or not Path(got).resolve().is_relative_to(src):
        raise Fail(f"--src {src}: {python} imports webgpu_llm from {got or p.stderr.strip()[-200:]!r}, not from it")


def fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.1f}"


def tables(cells: dict[tuple[str, str, str], dict[int, list[float]]], labels: list[str],
           once: dict[tuple[str, str, str], float]) -> str:
    lines = []
    if cells:
        head = ["suite", "cell", "figure", *labels, *[f"{x}/{labels[0]}" for x in labels[1:]]]
        lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
        for (suite, cell, metric), per in cells.items():
            med = [statistics.median(per[i]) if per.get(i) else None for i in range(len(labels))]
            ratios = [f"{m / med[0]:.3f}" if m and med[0] else "—" for m in med[1:]]
            lines.append("| " + " | ".join([suite, cell, metric, *map(fmt, med), *ratios]) + " |")
    if once:
        lines += ["", "| suite | peer | figure | value |", "| --- | --- | --- | --- |"]
        lines += [f"| {s} | {c} | {m} | {fmt(v)} |" for (s, c, m), v in once.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        opts = Options(args.presets, args.backends, args.dtypes, args.reps)
        suites = {name: SUITES[name][0](opts) for name in (args.suites or SUITES)}
        if args.list:
            for name, cmds in suites.items():
                print(f"{name:11s} {len(cmds)} command{'s' * (len(cmds) != 1):1s}  {SUITES[name][1]}")
            return 0
        # without the peers' files these suites cannot run; a dry run still lists what they would do
        for name in ("serve", "peers"):
            if name in suites and not PEERS.is_file():
                print(f"{name}: {'would be ' * args.dry_run}skipped: {PEERS.relative_to(ROOT)} not found (run "
                      "../shared/device/peers/prepare in this checkout and carry .peers)", file=sys.stderr)
                if not args.dry_run:
                    suites[name] = []
        variants = args.variants
        labels = [label(i) for i in range(len(variants))]
        steps = plan([c for cmds in suites.values() for c in cmds], len(variants), args.repeat)
        if args.dry_run:
            for k, (cmd, i, r) in enumerate(steps, 1):
                v, who = variants[i], labels[i] if cmd.per_src else "-"
                pre = "" if cmd.shell else f"PYTHONPATH={shlex.quote(str(v.src))}${{PYTHONPATH:+:$PYTHONPATH}} "
                if v.tuning is not None and not cmd.shell:
                    pre = f"WEBGPU_LLM_TUNING={shlex.quote(v.tuning)} " + pre
                print(f"[{who}] {pre}{shlex.join(command(cmd, v.src, args.python, f'OUT/{stem(k, cmd, who, r)}.json'))}")
            return 0
        for src in dict.fromkeys(v.src for v in variants):
            check_import(args.python, src)
    except Fail as e:
        print(f"bench/suite.py: error: {e}", file=sys.stderr)
        return 2

    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="suite-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    srcs = [{"label": lab, "src": str(v.src), "tuning": v.tuning, "revision": revision(v.src)}
            for lab, v in zip(labels, variants)]
    said = [f"{lab} = {v.describe()} ({s['revision']})" for lab, v, s in zip(labels, variants, srcs)]
    for line in said:
        print(line, file=sys.stderr)
    cells: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    once: dict[tuple[str, str, str], float] = {}
    runs, failed = [], []
    for k, (cmd, i, r) in enumerate(steps, 1):
        who = labels[i] if cmd.per_src else "-"
        name = stem(k, cmd, who, r)
        out = out_dir / f"{name}.json"
        argv = command(cmd, variants[i].src, args.python, str(out))
        t0 = time.perf_counter()
        rc, stdout, stderr = run_one(argv, env_for(variants[i]), args.timeout)
        secs = time.perf_counter() - t0
        (out_dir / f"{name}.log").write_text(f"$ {shlex.join(argv)}\n{stdout}\n--- stderr\n{stderr}")
        got: dict[str, dict[str, float]] = {}
        error = None
        if rc == 0:
            try:
                got = figures(cmd, out, stdout)
            except (ValueError, KeyError, IndexError) as e:
                error = f"could not read its figures: {type(e).__name__}: {e}"
        else:
            error = f"exit {rc}: {(stderr.strip().splitlines() or ['no output'])[-1][:300]}"
        if error:
            failed.append(f"{who} {cmd.suite} {cmd.name}: {error} (log: {out_dir / name}.log)")
        print(f"[{k}/{len(steps)}] {who} {cmd.suite} {cmd.name}: {'ok' if not error else 'FAILED'} in {secs:.0f} s",
              file=sys.stderr, flush=True)
        for cell, metrics in got.items():
            for metric, value in metrics.items():
                if cmd.per_src:
                    cells.setdefault((cmd.suite, cell, metric), {}).setdefault(i, []).append(value)
                else:
                    once[(cmd.suite, cell, metric)] = value
        runs.append({"suite": cmd.suite, "name": cmd.name, "checkout": who, "round": r, "argv": argv, "rc": rc,
                     "seconds": secs, "json": str(out) if out.is_file() else None, "figures": got, "error": error})
    table = tables(cells, labels, once)
    summary = {"checkouts": srcs, "suites": list(suites), "repeat": args.repeat, "runs": runs,
               "cells": [{"suite": s, "cell": c, "figure": m,
                          "values": {labels[i]: v for i, v in sorted(per.items())}} for (s, c, m), per in cells.items()],
               "once": [{"suite": s, "cell": c, "figure": m, "value": v} for (s, c, m), v in once.items()]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "summary.md").write_text(table + "\n")
    print(f"runs' JSON and logs in {out_dir}", file=sys.stderr)
    for f in failed:
        print(f"failed: {f}", file=sys.stderr)
    print("\n".join(said))
    print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
