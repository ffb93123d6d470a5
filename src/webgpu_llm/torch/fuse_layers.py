"""Eager mode with fused layers: a model's RMSNorm, SwiGLU MLP and rotary embedding as one op each.

Eager decoding on this device is bound by the host: every ATen op is a trip through the
dispatcher into Python (~10-20 µs), and transformers' Llama/Qwen2 layers spell an RMSNorm as 6-8
ops, a SwiGLU MLP's gate as 4 and the rotary embedding of q and k as ~16. `fuse_layers(model)`
gives those modules the fused ops the compiler's passes use (`fused_ops.py`), the way Liger
Kernel or transformers' `kernelize` swap in fused layers on CUDA: the model's code, weights and
state dict stay as they are, and a module whose input is not on the webgpu device runs its own
forward.

    model = AutoModelForCausalLM.from_pretrained(...).to("webgpu")
    webgpu_llm.torch.fuse_layers(model)   # {'rms_norm': 49, 'mlp': 24, 'rope': 24} (Qwen2.5-0.5B)

Only modules whose arithmetic is known to be the fused op's are taken, in the families below:
their RMSNorms (weight * normalised x, eps in `variance_epsilon`), MLPs of plain bias-free
`nn.Linear` gate/up/down projections with SiLU, and attention modules whose forward calls the
standard `apply_rotary_pos_emb` (x * cos + rotate_half(x) * sin over the whole head): their
forward runs over a copy of its module's globals in which that name is the fused rotary.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from .fused_ops import ops

FAMILIES = ("Llama", "Qwen2", "Qwen3", "Mistral")


def _on_device(x: torch.Tensor) -> bool:
    """Whether to take the fused op: on the device, and not while torch.compile traces (its
    passes fuse the same patterns, and trace the model's own code more easily)."""
    return x.device.type == "webgpu" and not torch.compiler.is_compiling()


# -- RMSNorm ----------------------------------------------------------------------------------
def _is_rms_norm(m: nn.Module) -> bool:  # (of the FAMILIES: fuse_layers looks at no other module)
    return (type(m).__name__.endswith("RMSNorm") and hasattr(m, "variance_epsilon")
            and isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() == 1)


def _rms_norm_forward(self: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    if not _on_device(hidden_states):
        return type(self).forward(self, hidden_states)
    return ops.rms_norm(hidden_states, self.weight, float(self.variance_epsilon))


# -- SwiGLU MLP -------------------------------------------------------------------------------
def _is_silu(act: Any) -> bool:
    if isinstance(act, nn.SiLU):
        return True
    try:
        from transformers.activations import SiLUActivation
    except ImportError:
        return False
    return type(act) is SiLUActivation


def _is_swiglu(m: nn.Module) -> bool:
    projs = [getattr(m, n, None) for n in ("gate_proj", "up_proj", "down_proj")]
    # exact nn.Linear: a LoRA or quantized wrapper does more than x @ w.T
    return (all(type(p) is nn.Linear and p.bias is None for p in projs) and _is_silu(getattr(m, "act_fn", None)))


def _swiglu_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if not _on_device(x):
        return type(self).forward(self, x)
    return self.down_proj(ops.gated_linear(x, self.gate_proj.weight, self.up_proj.weight))


# -- rotary embedding -------------------------------------------------------------------------
def _fused_rotary(original: Callable[..., Any]) -> Callable[..., Any]:
    # every layer of a forward gets the same cos and sin: their unsqueezed views are made once
    last: list[Any] = [None, None, None, None]  # cos, sin, dim, (cos, sin) unsqueezed

    def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                             *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        dim = args[0] if args else kwargs.get("unsqueeze_dim", 1)
        if (len(args) > 1 or set(kwargs) - {"unsqueeze_dim"} or not _on_device(q)
                or cos.shape[-1] != q.shape[-1] or k.shape[-1] != q.shape[-1]):
            return original(q, k, cos, sin, *args, **kwargs)
        if last[0] is not cos or last[1] is not sin or last[2] != dim:
            last[:] = [cos, sin, dim, (cos.unsqueeze(dim), sin.unsqueeze(dim))]
        c, s = last[3]
        return ops.rope(q, c, s), ops.rope(k, c, s)

    return apply_rotary_pos_emb


_ROTARY_FORWARDS: dict[type, Callable[..., Any] | None] = {}


def _rotary_forward(cls: type) -> Callable[..., Any] | None:
    """The class's forward calling the fused rotary: the same code over its modeling module's
    globals with `apply_rotary_pos_emb` replaced (None where the forward does not call the
    standard one directly). Decorators around the forward (transformers wraps it in kwarg
    deprecations and kernel hooks) are rebuilt around the copy: each holds the function it
    wraps in a closure cell, which the rebuilt wrapper holds the copy's new wrapper in."""
    if cls not in _ROTARY_FORWARDS:
        chain = [cls.__dict__.get("forward")]
        while isinstance(chain[-1], types.FunctionType) and hasattr(chain[-1], "__wrapped__"):
            chain.append(chain[-1].__wrapped__)
        fwd = chain[-1]
        fn = _plain_function(getattr(fwd, "__globals__", {}).get("apply_rotary_pos_emb"))
        ok = (isinstance(fwd, types.FunctionType) and fn is not None
              and "apply_rotary_pos_emb" in fwd.__code__.co_names
              and getattr(fn, "__code__", None) is not None
              and fn.__code__.co_varnames[:5] == ("q", "k", "cos", "sin", "unsqueeze_dim")
              and all(any(c.cell_contents is inner for c in (w.__closure__ or ()))
                      for w, inner in pairwise(chain)))
        new: Callable[..., Any] | None = None
        if ok:
            new = _copy(fwd, dict(fwd.__globals__, apply_rotary_pos_emb=_fused_rotary(fn)), fwd.__closure__)
            for w, inner in reversed(list(pairwise(chain))):
                cells = tuple(types.CellType(new) if c.cell_contents is inner else c for c in w.__closure__)
                new = _copy(w, w.__globals__, cells)
                new.__wrapped__ = inner  # type: ignore[attr-defined]
        _ROTARY_FORWARDS[cls] = new
    return _ROTARY_FORWARDS[cls]


def _plain_function(fn: Any) -> Any:
    """The function itself where the `kernels` package (a transformers dependency) wrapped it
    in a module that dispatches to hub kernels: the function its forward falls back to."""
    if fn is None or hasattr(fn, "__code__"):
        return fn
    fwd = getattr(type(fn), "forward", None)
    code = getattr(fwd, "__code__", None)
    if code is not None and "func" in code.co_freevars and fwd.__closure__:
        return fwd.__closure__[code.co_freevars.index("func")].cell_contents
    return fn


def _copy(f: types.FunctionType, scope: dict[str, Any], closure: tuple[Any, ...] | None) -> types.FunctionType:
    new = types.FunctionType(f.__code__, scope, f.__name__, f.__defaults__, closure)
    new.__kwdefaults__ = f.__kwdefaults__
    new.__qualname__ = f.__qualname__
    new.__dict__.update(f.__dict__)
    return new


def _attention_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    if torch.compiler.is_compiling():  # dynamo traces the class's own forward, not a copy
        return type(self).forward(self, *args, **kwargs)
    return _ROTARY_FORWARDS[type(self)](self, *args, **kwargs)  # type: ignore[misc]


def fuse_layers(model: nn.Module) -> dict[str, int]:
    """Fuse the RMSNorms, SwiGLU MLPs and rotary embeddings of a transformers Llama/Qwen2-family
    model for eager mode on the webgpu device; returns how many modules of each were fused.

    Only this model's modules change (their `forward`, on the instance; `unfuse_layers` undoes
    it); a fused module given tensors that are not on the device runs its own forward.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fuse_layers takes a torch.nn.Module (a transformers model), not {type(model).__name__}")
    counts = {"rms_norm": 0, "mlp": 0, "rope": 0}
    for m in model.modules():
        if not type(m).__name__.startswith(FAMILIES):
            continue
        if _is_rms_norm(m):
            m.forward = types.MethodType(_rms_norm_forward, m)
            counts["rms_norm"] += 1
        elif _is_swiglu(m):
            m.forward = types.MethodType(_swiglu_forward, m)
            counts["mlp"] += 1
        elif _rotary_forward(type(m)) is not None:
            m.forward = types.MethodType(_attention_forward, m)
            counts["rope"] += 1
    return counts


def unfuse_layers(model: nn.Module) -> None:
    """Give the model's modules their own forwards back."""
    for m in model.modules():
        fwd = m.__dict__.get("forward")
        if isinstance(fwd, types.MethodType) and fwd.__func__ in (_rms_norm_forward, _swiglu_forward,
                                                                  _attention_forward):
            del m.forward
