"""The environment a characterization ran in: host, packages, and each backend's adapter."""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata as md
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..runtime.gpu import Gpu

_PACKAGES = ("webgpu-llm", "wgpu", "wgpudawn", "numpy", "matplotlib", "torch")
_LIMITS = ("max-storage-buffer-binding-size", "max-buffer-size", "max-compute-workgroups-per-dimension",
           "max-compute-invocations-per-workgroup")


def host_environment() -> dict[str, Any]:
    return {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "os": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {p: _version(p) for p in _PACKAGES},
        "git_commit": _git_commit(),
    }


def adapter_record(gpu: Gpu, wait_method: str) -> dict[str, Any]:
    info = gpu.info
    return {
        "device": info.get("device", ""),
        "vendor": info.get("vendor", ""),
        "architecture": info.get("architecture", ""),
        "adapter_type": info.get("adapter_type", ""),
        "backend_type": info.get("backend_type", ""),
        # The driver name and version are in the description on Vulkan (e.g. "Mesa 25.0.7").
        "description": info.get("description", ""),
        "features": sorted(gpu.features),
        "limits": {k: gpu.limits[k] for k in _LIMITS if k in gpu.limits},
        "timestamps": gpu.has_timestamps,
        "wait": wait_method,
    }


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    if sys.platform == "darwin":
        with contextlib.suppress(Exception):
            return subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                  text=True, timeout=5).stdout.strip()
    return platform.processor() or platform.machine()


def _version(pkg: str) -> str | None:
    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The commit of the source tree, when running from a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                           text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() or None if r.returncode == 0 else None
