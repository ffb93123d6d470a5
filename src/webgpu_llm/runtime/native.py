"""Direct calls into the native WebGPU C API for the per-dispatch hot path.

The Python wrappers of `wgpu` and `wgpudawn` check arguments and build cffi arrays on every
`set_bind_group`; replaying a bound Program needs none of that. Both packages expose the same
C API (webgpu.h) through cffi, so one fast path serves both.
"""

from __future__ import annotations

from typing import Any


def _ffi_module(backend: str) -> Any:
    if backend == "wgpu":
        from wgpu.backends.wgpu_native import _ffi
    else:
        from wgpudawn.backends.dawn import _ffi  # type: ignore[no-redef]
    return _ffi


class PassEncoder:
    """Encodes (pipeline, bind group, grid) triples into an open compute pass."""

    def __init__(self, backend: str) -> None:
        ffi_mod = _ffi_module(backend)
        lib = ffi_mod.lib
        self._set_pipeline = lib.wgpuComputePassEncoderSetPipeline
        self._set_bind_group = lib.wgpuComputePassEncoderSetBindGroup
        self._dispatch = lib.wgpuComputePassEncoderDispatchWorkgroups
        self._null = ffi_mod.ffi.NULL

    def encode(self, cpass: Any, items: list[tuple[Any, Any, int, int, int]]) -> None:
        """`items` hold raw handles (`obj._internal`); the pipeline is set only on change."""
        p = cpass._internal
        sp, sb, dw, null = self._set_pipeline, self._set_bind_group, self._dispatch, self._null
        last = None
        for pipe, bg, x, y, z in items:
            if pipe is not last:
                sp(p, pipe)
                last = pipe
            sb(p, 0, bg, 0, null)
            dw(p, x, y, z)
