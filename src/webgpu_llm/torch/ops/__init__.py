"""ATen kernels of the webgpu device, registered on import."""

from . import attention, indexing, linalg, memory_ops, pointwise, reductions

__all__ = ["attention", "indexing", "linalg", "memory_ops", "pointwise", "reductions"]
