"""The `webgpu` torch.compile backend (registered on import)."""

from .backend import webgpu_backend

__all__ = ["webgpu_backend"]
