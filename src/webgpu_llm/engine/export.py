"""A model's Programs as a portable plan that a browser page replays (src/webgpu_llm/web/).

`webgpu-llm export --model M --out DIR` writes:

  plan.json         the plan (format "webgpu-llm-plan", version PLAN_VERSION): every kernel's
                    WGSL, the buffers and their sizes, the Programs as ordered dispatch lists
                    (kernel, buffers in binding order, grid), the per-step state layout
                    (kernels/common.py STATE_FIELDS), the sampler variants, the token read-back,
                    the features and limits the kernels need, the weight manifest and the
                    tokenizer's settings and chat template
  weights-NNN.bin   the weight buffers' bytes in their GPU layout (kernels/formats.py packing,
                    as `engine.weights` uploads them), at 256-byte aligned offsets; the manifest
                    gives each buffer's file, offset, size and sha256, and each file's sha256
  tokenizer.json    the vocabulary as the `tokenizers` libraries (Python and JS) read it

The Programs are built exactly as the engine builds them, on a device opened with the
options a browser page can count on (WEB_GPU_OPTIONS: no shader-f16, no subgroups, no
subgroup matrices, storage bindings of at most 128 MiB, WebGPU's guaranteed minimum), and
what `Program.add` received is read back from the dispatches (runtime/program.py keeps the
kernel and its buffers beside each dispatch). The Python engine built with the same options
and tuning runs the same WGSL on the same buffers, so the page's greedy tokens equal it.

Grids: a prefill dispatch's grid is a Python function of the batch's token count n. The plan
stores, for each distinct function, its table over n = 1 .. batch (the page's prefill chunks
never exceed the batch); the tables are deduplicated, so a model of 30 layers and a batch of
64 needs about a dozen. A table is exact for any grid function, where a declarative form
would need every grid written in a small expression language first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..kernels.common import STATE_FIELDS, STATE_WORDS
from ..runtime.gpu import GpuOptions, open_gpu
from ..runtime.program import Dispatch, Program
from .sampling import SamplingParams
from .session import Session
from .settings import CPU_TUNING, Settings, Tuning, default_tuning
from .weights import GpuMatrix

PLAN_FORMAT = "webgpu-llm-plan"
PLAN_VERSION = 1
WEB_MAX_BINDING = 128 * 2**20  # every WebGPU adapter's maxStorageBufferBindingSize at least
SHARD_BYTES = 64 * 2**20  # weight files of about this size (a larger buffer gets one to itself)
ALIGN = 256
THIN_PREFILL = 16  # prompt rows a thin prefill matmul takes a pass over the weights
# the Programs the page replays; `step` = decode + head + one sampler variant
PROGRAMS = ("embed", "prefill", "head", "decode")
SAMPLERS = {"greedy": (False, False), "greedy_penalty": (False, True),
            "filtered": (True, False), "filtered_penalty": (True, True)}
# WebGPU limit names (JS spelling) the plan's kernels need, beside `Gpu.limits`' spelling
LIMITS = {"maxStorageBufferBindingSize": "max-storage-buffer-binding-size",
          "maxBufferSize": "max-buffer-size",
          "maxComputeWorkgroupStorageSize": "max-compute-workgroup-storage-size",
          "maxComputeInvocationsPerWorkgroup": "max-compute-invocations-per-workgroup",
          "maxComputeWorkgroupSizeX": "max-compute-workgroup-size-x",
          "maxComputeWorkgroupSizeY": "max-compute-workgroup-size-y",
          "maxComputeWorkgroupSizeZ": "max-compute-workgroup-size-z",
          "maxStorageBuffersPerShaderStage": "max-storage-buffers-per-shader-stage",
          "maxComputeWorkgroupsPerDimension": "max-compute-workgroups-per-dimension"}


def web_gpu_options(base: GpuOptions | None = None) -> GpuOptions:
    """The device options a plan is built with: what any WebGPU browser offers."""
    b = base or GpuOptions()
    return replace(b, f16=False, subgroups=False, subgroup_matrices=False,
                   max_binding=min(b.max_binding or WEB_MAX_BINDING, WEB_MAX_BINDING))


def export_tuning(kind: str, session_gpu: Any, hidden: int, head_dim: int, experts: bool = False) -> Tuning:
    """The kernel shapes of a plan: "cpu" (a software adapter such as SwiftShader), "gpu", or
    "auto" (those of the exporting adapter's kind); persistent layers and matrix units off."""
    if kind == "cpu":
        t = CPU_TUNING
    elif kind == "gpu":
        t = default_tuning(_NotCpu(session_gpu), hidden, head_dim, experts)
    elif kind == "auto":
        t = default_tuning(session_gpu, hidden, head_dim, experts)
    else:
        raise UserError(f"--tuning {kind!r}: choose auto, cpu or gpu")
    # Dawn-only early loads are a measured native choice; a browser's compiler differs
    return replace(t, persist=0, mma="off", early=0)


class _NotCpu:
    """A Gpu seen as a GPU adapter (default_tuning reads only is_cpu and backend)."""

    def __init__(self, gpu: Any) -> None:
        self.is_cpu, self.backend = False, gpu.backend


def build_session(model: str | Path | None, settings: Settings | None = None, ctx: int = 2048,
                  batch: int | None = None, tuning: str = "auto", prefill: str = "auto",
                  progress: Callable[[int], None] | None = None, search: Any = None) -> tuple[Any, Session]:
    """Open a model and build its Programs as a plan needs them: (source, session). The
    session is the Python engine on the plan's kernels (tests compare the page with it).
    `prefill`: "tiled" (the engine's prompt matmuls), "thin" (the layers as thin matmuls of
    THIN_PREFILL tokens a pass over the weights) or "auto" (thin for the CPU tuning)."""
    from ..models.encoder import EncoderConfig
    from ..models.source import open_model

    s = settings or Settings()
    src = open_model(model, search)
    try:
        cfg = src.config
        if isinstance(cfg, EncoderConfig):  # the plan replays a decoder's Programs; an encoder has none
            raise UserError(f"{cfg.name} is an embedding model ({cfg.arch}): the browser runtime runs "
                            "text-generation models only")
        gpu = open_gpu(options=web_gpu_options(s.gpu))
        n_ctx = min(ctx, cfg.max_ctx)
        if n_ctx < 2:
            raise UserError(f"--ctx {ctx}: must be at least 2")
        t = export_tuning(tuning, gpu, cfg.hidden, cfg.head_dim, cfg.architecture.moe is not None)
        s = replace(s, tuning=t, persist=0, mma="off", fused=True, batch=batch)
        session = Session.build(gpu, cfg, src.tensors.get, s, n_ctx, progress)
        if prefill not in ("auto", "thin", "tiled"):
            raise UserError(f"--prefill {prefill!r}: choose auto, thin or tiled")
        if prefill == "thin" or (prefill == "auto" and t.mv == CPU_TUNING.mv):
            thin_prefill(session)
    except BaseException:
        src.close()
        raise
    return src, session


def thin_prefill(session: Session, tokens: int = 0) -> None:
    """Replace the session's prefill Program by the same layers as thin matmuls (the mat-vec's
    thread mapping, each weight unit loaded once for `tokens` rows). On software adapters the
    tiled prompt matmul's workgroup barriers dominate: SwiftShader in Chromium runs SmolLM2's
    8-token prompt 12x faster this way (2.6 s instead of 33 s), llvmpipe a 37-token one 3x."""
    session.programs.prefill = session.programs.prompt_program(tokens or THIN_PREFILL)


# -- the plan ----------------------------------------------------------------------------------
@dataclass
class _Builder:
    session: Session
    batch: int

    def __post_init__(self) -> None:
        self.buffers: list[dict[str, Any]] = []
        self.buffer_ids: dict[int, int] = {}
        self.buffer_objs: list[Any] = []
        self.kernels: list[dict[str, Any]] = []
        self.kernel_ids: dict[str, int] = {}
        self.grids: list[list[list[int]]] = []
        self.grid_ids: dict[str, int] = {}

    def buffer(self, buf: Any) -> int:
        i = self.buffer_ids.get(id(buf))
        if i is None:
            i = self.buffer_ids[id(buf)] = len(self.buffers)
            name = str(getattr(buf, "label", "") or f"buffer{i}")
            taken = {b["name"] for b in self.buffers}
            if name in taken:
                name = f"{name}#{i}"
            self.buffers.append({"name": name, "size": int(buf.size)})
            self.buffer_objs.append(buf)
        return i

    def kernel(self, d: Dispatch) -> int:
        k = d.kernel
        if k is None:
            raise ValueError(f"dispatch {d.label!r} was not added through Program.add: it cannot be exported")
        i = self.kernel_ids.get(k.wgsl)
        if i is None:
            i = self.kernel_ids[k.wgsl] = len(self.kernels)
            self.kernels.append({"name": k.name, "wgsl": k.wgsl, "bindings": list(k.bindings),
                                 **kernel_needs(k.wgsl)})
        return i

    def grid(self, d: Dispatch) -> list[int] | dict[str, int]:
        if not callable(d.grid):
            return [int(v) for v in d.grid]
        table = [list(d.size(n)) for n in range(1, self.batch + 1)]
        if all(row == table[0] for row in table):
            return table[0]
        key = json.dumps(table)
        i = self.grid_ids.get(key)
        if i is None:
            i = self.grid_ids[key] = len(self.grids)
            self.grids.append(table)
        return {"table": i}

    def program(self, prog: Program) -> list[dict[str, Any]]:
        out = []
        for d in prog.dispatches:
            bind: list[Any] = []
            for b in d.buffers:
                if isinstance(b, tuple):
                    buf, off, size = b
                    bind.append([self.buffer(buf), int(off), int(size)])
                else:
                    bind.append(self.buffer(b))
            out.append({"label": d.label, "kernel": self.kernel(d), "bind": bind, "grid": self.grid(d)})
        return out


_WG_SIZE = re.compile(r"@workgroup_size\(\s*([^)]*)\)")
_WG_VAR = re.compile(r"var<workgroup>\s+\w+\s*:\s*array<\s*(\w+(?:<\w+>)?)\s*,\s*(\d+)u?\s*>")
_SIZES = {"f32": 4, "u32": 4, "i32": 4, "f16": 2, "vec2<f32>": 8, "vec4<f32>": 16, "vec2<u32>": 8,
          "vec4<u32>": 16, "vec4<i32>": 16, "vec2<i32>": 8, "vec3<f32>": 12}


def kernel_needs(wgsl: str) -> dict[str, Any]:
    """What one kernel needs of a device: its workgroup shape, its workgroup memory where its
    declarations say (None where a type or size is not a plain literal), its features."""
    m = _WG_SIZE.search(wgsl)
    shape = [1, 1, 1]
    if m:
        dims = [p.strip().rstrip("u") for p in m.group(1).split(",") if p.strip()]
        consts = dict(re.findall(r"const\s+(\w+)\s*(?::\s*\w+)?\s*=\s*(\d+)u?\s*;", wgsl))
        for j, p in enumerate(dims[:3]):
            p = consts.get(p, p)
            shape[j] = int(p) if p.isdigit() else 0
    shared: int | None = 0
    for typ, count in _WG_VAR.findall(wgsl):
        if typ not in _SIZES or shared is None:
            shared = None
            continue
        shared += _SIZES[typ] * int(count)
    feats = []
    if re.search(r"^\s*enable\s+f16\s*;", wgsl, re.M):
        feats.append("shader-f16")
    if re.search(r"^\s*enable\s+subgroups\s*;", wgsl, re.M):
        feats.append("subgroups")
    lang = ["packed_4x8_integer_dot_product"] if _PACKED.search(wgsl) else []
    return {"workgroup_size": shape, "workgroup_bytes": shared, "features": feats, "language_features": lang}


_PACKED = re.compile(r"\b(dot4[IU]8Packed|pack4x[IU]8(Clamp)?|unpack4x[IU]8)\s*\(")


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def write_plan(source: Any, session: Session, out: Path, name: str = "") -> dict[str, Any]:
    """Write plan.json, the weight files and the tokenizer of `session` (built by
    `build_session`) into `out`; returns the plan."""
    m, g, cfg = session.programs, session.gpu, session.cfg
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("weights-*.bin"):
        old.unlink()
    b = _Builder(session, m.batch)
    programs = {"embed": b.program(m.embed), "prefill": b.program(m.prefill), "head": b.program(m.head)}
    assert m.decode is not None
    programs["decode"] = b.program(m.decode)
    for key, (filtered, penalty) in SAMPLERS.items():
        programs["sampler_" + key] = b.program(m.samplers[(filtered, penalty)])

    # the weights: every buffer the model's weights live in, read back in their GPU layout
    w = m.weights
    weight_bufs = [*w.embedding.buffers, *w.lm_head.buffers, w.output_norm]
    for L in w.layers:  # every matrix of the layer, whatever its architecture has (a router too)
        for f in dataclasses.fields(L):
            if isinstance(mat := getattr(L, f.name), GpuMatrix):
                weight_bufs.extend(mat.buffers)
        weight_bufs.append(L.params)
    files: list[dict[str, Any]] = []
    tensors: list[dict[str, Any]] = []
    shard: bytearray = bytearray()
    done: set[int] = set()

    def flush() -> None:
        if shard:
            fname = f"weights-{len(files):03d}.bin"
            (out / fname).write_bytes(shard)
            files.append({"path": fname, "size": len(shard), "sha256": _sha256(shard)})
            shard.clear()

    for buf in weight_bufs:
        if id(buf) in done or id(buf) not in b.buffer_ids:
            continue
        done.add(id(buf))
        data = g.read(buf)
        if shard and len(shard) + len(data) > SHARD_BYTES:
            flush()
        off = len(shard)
        shard += bytes(data)
        shard += b"\0" * (-len(shard) % ALIGN)
        i = b.buffer_ids[id(buf)]
        b.buffers[i]["weight"] = len(tensors)
        tensors.append({"buffer": i, "file": len(files), "offset": off, "size": len(data),
                        "sha256": _sha256(data)})
    flush()

    needs = _needs(b, g, programs)
    tok = write_tokenizer(source, out)
    params = SamplingParams()
    plan = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "model": {"name": name or cfg.name, "arch": cfg.arch, "vocab": cfg.vocab, "hidden": cfg.hidden,
                  "layers": cfg.n_layers, "heads": cfg.n_heads, "kv_heads": cfg.n_kv_heads,
                  "head_dim": cfg.head_dim, "ctx": m.ctx, "batch": m.batch,
                  "weight_bytes": sum(t["size"] for t in tensors)},
        "built_on": {"adapter": g.name, "tuning": _tuning_json(m.tuning),
                     "prefill": "thin" if any(d.label.startswith("thin_") for d in m.prefill.dispatches) else "tiled",
                     "options": {"f16": False, "subgroups": False, "max_binding": g.max_binding}},
        "features": needs["features"],
        "wgsl_language_features": needs["language_features"],
        "limits": needs["limits"],
        "state": {"buffer": b.buffer(m.buf.st), "words": STATE_WORDS,
                  "fields": [[n, t] for n, t in STATE_FIELDS]},
        "tokens": {"buffer": b.buffer(m.buf.tokens), "capacity": m.ctx},
        "logits": {"buffer": b.buffer(m.buf.logits), "count": cfg.vocab},
        "sampling": {"defaults": {"temperature": params.temperature, "top_k": params.top_k,
                                  "top_p": params.top_p, "min_p": params.min_p,
                                  "repeat_penalty": params.repeat_penalty,
                                  "repeat_last_n": params.repeat_last_n,
                                  "frequency_penalty": params.frequency_penalty,
                                  "presence_penalty": params.presence_penalty},
                     "variants": {k: "sampler_" + k for k in SAMPLERS},
                     "filtered_when": "temperature > 0 and (top_k > 0 or top_p < 1 or min_p > 0)",
                     "penalty_when": "repeat_last_n > 0 and (repeat_penalty != 1 or frequency_penalty != 0 "
                                     "or presence_penalty != 0)"},
        "steps": {
            "prefill": "for each chunk of at most batch tokens: state(pos, n) written, then embed(n), "
                       "prefill(n); the last chunk adds head(n) and a sampler(n), which writes the "
                       "next token at tokens[pos + n] and advances state.pos",
            "decode": "decode(1) + head(1) + sampler(1), one submit a token, no CPU write",
            "readback": "copy tokens[first .. first + k) to a mapped buffer every few steps",
        },
        "buffers": b.buffers,
        "kernels": b.kernels,
        "grids": b.grids,
        "programs": programs,
        "weights": {"files": files, "tensors": tensors},
        "tokenizer": tok,
    }
    (out / "plan.json").write_text(json.dumps(plan, separators=(",", ":")))
    return plan


def _tuning_json(t: Tuning) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(t).items()}


def _needs(b: _Builder, g: Any, programs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    feats = sorted({f for k in b.kernels for f in k["features"]})
    binding = max((buf["size"] for buf in b.buffers), default=0)
    wgs = [k["workgroup_size"] for k in b.kernels]
    shared = [k["workgroup_bytes"] for k in b.kernels]
    # a kernel whose workgroup memory the regex could not add up needs what it was built for
    wg_bytes = (g.limits["max-compute-workgroup-storage-size"] if any(s is None for s in shared)
                else max((s for s in shared if s is not None), default=0))
    limits = {
        "maxStorageBufferBindingSize": binding,
        "maxBufferSize": binding,
        "maxComputeWorkgroupStorageSize": wg_bytes,
        "maxComputeInvocationsPerWorkgroup": max((x * y * z for x, y, z in wgs), default=1),
        "maxComputeWorkgroupSizeX": max((s[0] for s in wgs), default=1),
        "maxComputeWorkgroupSizeY": max((s[1] for s in wgs), default=1),
        "maxComputeWorkgroupSizeZ": max((s[2] for s in wgs), default=1),
        "maxStorageBuffersPerShaderStage": max((len(k["bindings"]) for k in b.kernels), default=1),
        "maxComputeWorkgroupsPerDimension": _max_groups(b, programs),
    }
    lang = sorted({f for k in b.kernels for f in k["language_features"]})
    return {"features": feats, "limits": limits, "language_features": lang}


def _max_groups(b: _Builder, programs: dict[str, list[dict[str, Any]]]) -> int:
    most = 1
    for table in b.grids:
        for row in table:
            most = max(most, *row)
    for prog in programs.values():
        for d in prog:
            if isinstance(d["grid"], list):
                most = max(most, *d["grid"])
    return most


# -- the tokenizer -----------------------------------------------------------------------------
def write_tokenizer(source: Any, out: Path) -> dict[str, Any]:
    """tokenizer.json beside the plan, and what the page needs to encode like the Python
    tokenizer: the special tokens llama.cpp splits off first, BOS, stops, the chat template."""
    tok = source.tokenizer()
    info: dict[str, Any] = {
        "file": "tokenizer.json",
        "add_bos": bool(tok.add_bos), "bos_id": tok.bos_id, "eos_id": tok.eos_id,
        "bos_text": tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
        "end_ids": list(tok.end_ids), "stop_ids": sorted(int(i) for i in tok.stop_ids),
        "hidden_ids": sorted(i for i in range(tok.vocab_size) if tok.is_special(i)),
        "strip_first_space": bool(tok.strip_first_space),
        "chat_template": tok.chat_template,
        "special_texts": {},
    }
    tmpl = getattr(tok, "_template", None)
    if tmpl is not None:
        info["special_texts"] = dict(getattr(tmpl, "special_tokens", {}) or {})
    if source.kind == "hf":
        shutil.copyfile(Path(source.path) / "tokenizer.json", out / "tokenizer.json")
        info.update(kind="hf", specials=[], sentencepiece=False, space_prefix=False)
        return info
    hf, specials, spm, space_prefix = gguf_tokenizer(source.metadata)
    (out / "tokenizer.json").write_text(hf.to_str())
    info.update(kind="gguf", specials=specials, sentencepiece=spm, space_prefix=space_prefix)
    return info


def gguf_tokenizer(metadata: dict[str, Any]) -> tuple[Any, list[dict[str, Any]], bool, bool]:
    """The GGUF vocabulary's BPE model as a `tokenizers` Tokenizer (with a decoder), the
    special tokens to split off before it (llama.cpp's order: longest first), whether it is
    SentencePiece and whether a space goes before the text and after each special token."""
    from tokenizers import decoders

    from ..tokenizer.bpe_models import byte_level_bpe, sentencepiece_bpe
    from ..tokenizer.gguf_vocab import CONTROL, UNKNOWN, USER_DEFINED, read_gguf_vocab, scalar
    from ..tokenizer.pretokenizers import pre_tokenizer_for

    vocab = read_gguf_vocab(metadata)
    if vocab.model == "bert":
        raise UserError("exporting a WordPiece (BERT) vocabulary for the browser is not supported")
    spm = vocab.model == "llama"
    flag = scalar(metadata.get("tokenizer.ggml.add_space_prefix"))
    if spm:
        unk = vocab.special.get("unk")
        hf = sentencepiece_bpe(vocab.ids, vocab.scores, vocab.tokens[unk] if unk is not None else None)
        space_prefix = bool(flag) if isinstance(flag, (bool, int)) else True
        hf.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    else:
        hf = byte_level_bpe(vocab.ids, vocab.merges, pre_tokenizer_for(vocab.pre))
        space_prefix = bool(flag) if isinstance(flag, (bool, int)) else False
        hf.decoder = decoders.ByteLevel()
    specials = [{"text": vocab.tokens[i], "id": int(i), "control": vocab.types[i] != USER_DEFINED,
                 "lstrip": False, "rstrip": i in vocab.rstrip_ids}
                for i in vocab.ids_of_type(CONTROL, USER_DEFINED, UNKNOWN)]
    specials.sort(key=lambda t: -len(t["text"].encode("utf-8")))
    return hf, specials, spm, space_prefix


def read_plan(path: Path) -> dict[str, Any]:
    """A plan.json, checked to be one."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not a webgpu-llm export ({e})") from e
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        raise UserError(f"{path} is not a webgpu-llm export (no \"format\": \"{PLAN_FORMAT}\")")
    if plan.get("version") != PLAN_VERSION:
        raise UserError(f"{path} is a plan of version {plan.get('version')}, this is version {PLAN_VERSION}")
    return plan


def prefill_logits(session: Session, ids: list[int]) -> np.ndarray:
    """The logits of the last prompt token through the plan's Programs (prefill + head), as
    the page computes them."""
    session.prefill(ids, 0, SamplingParams(), 0)
    return session.gpu.read_array(session.programs.buf.logits, np.float32, session.cfg.vocab)
