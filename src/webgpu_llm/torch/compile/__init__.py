"""The `webgpu` torch.compile backend (registered on import)."""

from .backend import graph_report, webgpu_backend

__all__ = ["graph_report", "webgpu_backend"]
