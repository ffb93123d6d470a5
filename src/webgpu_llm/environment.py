"""The environment variables the front ends read: all of them, here, once.

The CLI, the torch device and the test suite turn the environment into a `Settings` (and
`GpuOptions`) object that they pass down; nothing below them reads the environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import UserError

# name: what it does (the CLI's --help shows these)
VARIABLES = {
    "WEBGPU_LLM_VALIDATE": "=1 keeps Dawn's command validation (off by default: it costs CPU per dispatch; "
                           "on to debug a shader or an op)",
    "WEBGPU_LLM_PERSIST": "=auto|N experimental persistent decode layers on N workgroups (see the README)",
    "WEBGPU_LLM_DEBUG": "=1 shows Python tracebacks on errors",
    "WEBGPU_LLM_VERBOSE": "=1 lets the native libraries' messages at device creation through",
    "WEBGPU_LLM_NO_F16": "=1 leaves shader-f16 off",
    "WEBGPU_LLM_NO_SUBGROUPS": "=1 leaves subgroups (and subgroup matrices) off",
    "WEBGPU_LLM_NO_MMA": "=1 leaves the subgroup matrices (the prompts' int8 tiles) off",
    "WEBGPU_LLM_MAX_BINDING": "=BYTES lowers the storage-binding size the kernels assume",
    "WEBGPU_LLM_TUNING": "=field=value;... experimental kernel-shape overrides (engine.settings.Tuning's fields, "
                         "Python literals), e.g. f16_decode=True;tiles=(2,2,4,4)",
    "WEBGPU_LLM_ROBUST": "=1|0 Dawn's bounds checks on every array index on or off (default: off on a GPU, "
                         "where prompts and batched steps run ~15 % faster on an H100; on for a CPU adapter)",
    "WEBGPU_LLM_DAWN_TOGGLES": "=name,-name,... more Dawn toggles on (-: off), e.g. disable_workgroup_init "
                               "(`info --backend dawn --json` lists the device's)",
    "WEBGPU_LLM_TORCH_BACKEND": "=wgpu|dawn the torch device's backend (default wgpu)",
    "HF_HUB_CACHE": "=DIR where --model ORG/NAME is looked for (else $HF_HOME/hub, else "
                    "~/.cache/huggingface/hub, as huggingface_hub does; nothing is downloaded)",
    "XDG_CACHE_HOME": "=DIR where exports made on the fly for the browser are kept (DIR/webgpu-llm/exports; "
                      "else ~/.cache/webgpu-llm/exports)",
    "OLLAMA_MODELS": "=DIR where --model NAME:TAG is looked for (else ~/.ollama/models and "
                     "/usr/share/ollama/.ollama/models, as Ollama does)",
}
VALIDATE = "WEBGPU_LLM_VALIDATE"


def _on(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip() not in ("", "0")


def _robust(env: Mapping[str, str]) -> bool | None:
    v = env.get("WEBGPU_LLM_ROBUST", "").strip()
    if v not in ("", "0", "1"):
        raise UserError(f"WEBGPU_LLM_ROBUST must be 1 (bounds checks on) or 0 (off), not {v!r}")
    return None if not v else v == "1"


def gpu_options(env: Mapping[str, str] | None = None, **given: Any) -> Any:
    """`GpuOptions` from the environment; keyword arguments (not None) take precedence."""
    from .runtime.gpu import GpuOptions, check_dawn_toggles

    env = os.environ if env is None else env
    binding = env.get("WEBGPU_LLM_MAX_BINDING", "").strip()
    if binding and not binding.isdigit():
        raise UserError(f"WEBGPU_LLM_MAX_BINDING must be a number of bytes, not {binding!r}")
    toggles = tuple(t.strip() for t in env.get("WEBGPU_LLM_DAWN_TOGGLES", "").split(",") if t.strip())
    try:
        check_dawn_toggles(toggles)
    except UserError as e:
        raise UserError(f"WEBGPU_LLM_DAWN_TOGGLES: {e}") from None
    o = GpuOptions(f16=not _on(env, "WEBGPU_LLM_NO_F16"), subgroups=not _on(env, "WEBGPU_LLM_NO_SUBGROUPS"),
                   subgroup_matrices=not _on(env, "WEBGPU_LLM_NO_MMA"),
                   max_binding=int(binding) if binding else None,
                   validate=_on(env, VALIDATE), verbose=_on(env, "WEBGPU_LLM_VERBOSE"),
                   robust=_robust(env), dawn_toggles=toggles)
    return replace(o, **{k: v for k, v in given.items() if v is not None})


def settings(env: Mapping[str, str] | None = None, gpu: dict[str, Any] | None = None, **given: Any) -> Any:
    """`Settings` from the environment (its GPU options with `gpu` given); keyword arguments
    (not None) take precedence."""
    from .engine.settings import Settings, tuning_overrides

    env = os.environ if env is None else env
    persist = env.get("WEBGPU_LLM_PERSIST", "").strip()
    if persist and persist != "auto" and not persist.isdigit():
        raise UserError(f"WEBGPU_LLM_PERSIST must be a number of workgroups (0 = off) or auto, not {persist!r}")
    try:
        overrides = tuning_overrides(env.get("WEBGPU_LLM_TUNING", ""))
    except UserError as e:
        raise UserError(f"WEBGPU_LLM_TUNING: {e}") from None
    s = Settings(gpu=gpu_options(env, **(gpu or {})), persist=persist or None, overrides=overrides)
    return replace(s, **{k: v for k, v in given.items() if v is not None})


def debug(env: Mapping[str, str] | None = None) -> bool:
    return _on(os.environ if env is None else env, "WEBGPU_LLM_DEBUG")


def torch_backend(env: Mapping[str, str] | None = None) -> str:
    return (os.environ if env is None else env).get("WEBGPU_LLM_TORCH_BACKEND", "wgpu")


def hf_hub_cache(env: Mapping[str, str] | None = None) -> Path:
    """huggingface_hub's cache directory: $HF_HUB_CACHE (or its older name
    $HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
    ~/.cache/huggingface/hub."""
    env = os.environ if env is None else env
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name, "").strip():
            return Path(env[name].strip()).expanduser()
    if env.get("HF_HOME", "").strip():
        return Path(env["HF_HOME"].strip()).expanduser() / "hub"
    cache = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache).expanduser() if cache else _home(env) / ".cache") / "huggingface" / "hub"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """webgpu-llm's own cache (on-the-fly exports for the browser): $XDG_CACHE_HOME/webgpu-llm,
    else ~/.cache/webgpu-llm."""
    env = os.environ if env is None else env
    cache = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(cache).expanduser() if cache else _home(env) / ".cache") / "webgpu-llm"


def ollama_models(env: Mapping[str, str] | None = None) -> tuple[Path, ...]:
    """Ollama's model stores: $OLLAMA_MODELS, else the user's ~/.ollama/models and the Linux
    service's /usr/share/ollama/.ollama/models (the `ollama` user's home)."""
    env = os.environ if env is None else env
    if env.get("OLLAMA_MODELS", "").strip():
        return (Path(env["OLLAMA_MODELS"].strip()).expanduser(),)
    return (_home(env) / ".ollama" / "models", Path("/usr/share/ollama/.ollama/models"))


def model_search(env: Mapping[str, str] | None = None) -> Any:
    """Where `--model NAME` is looked for (`models.discovery.ModelSearch`)."""
    from .models.discovery import ModelSearch

    return ModelSearch(hf_hub=hf_hub_cache(env), ollama=ollama_models(env))


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME", "").strip()
    return Path(home) if home else Path.home()
