"""Bind groups and queue writes through the native C API.

Eager mode creates one bind group per kernel launch; the Python wrappers of `wgpu` and
`wgpudawn` spend 50-150 µs validating and converting each one. The same call through cffi
costs a few µs. Both packages expose webgpu.h through cffi, so one path serves both.
"""

from __future__ import annotations

from typing import Any

from ..runtime.native import _ffi_module


class BindGroup:
    """A native bind group handle, released when the last reference goes.

    It has the `_internal` attribute that `Program` and `PassEncoder` read.
    """

    __slots__ = ("_internal", "_release")

    def __init__(self, handle: Any, release: Any) -> None:
        self._internal = handle
        self._release = release

    def __del__(self) -> None:
        try:
            self._release(self._internal)
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


class NativeCalls:
    def __init__(self, gpu: Any) -> None:
        mod = _ffi_module(gpu.backend)
        self.ffi, self.lib = mod.ffi, mod.lib
        self._device = gpu.device._internal
        self._queue = gpu.queue._internal
        self._create = self.lib.wgpuDeviceCreateBindGroup
        self._release = self.lib.wgpuBindGroupRelease
        self._write = self.lib.wgpuQueueWriteBuffer

    def bind_group(self, layout: Any, entries: list[tuple[Any, int, int]]) -> BindGroup:
        """`entries`: (native buffer handle, byte offset, byte size) for bindings 0, 1, ..."""
        ffi = self.ffi
        arr = ffi.new("WGPUBindGroupEntry[]", len(entries))
        for i, (buf, off, size) in enumerate(entries):
            e = arr[i]
            e.binding = i
            e.buffer = buf
            e.offset = off
            e.size = size
        desc = ffi.new("WGPUBindGroupDescriptor *")
        desc.layout = layout
        desc.entryCount = len(entries)
        desc.entries = arr
        return BindGroup(self._create(self._device, desc), self._release)

    def write(self, buf: Any, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Queue a write of `data` (a multiple of 4 bytes) into native buffer `buf`."""
        self._write(self._queue, buf, offset, self.ffi.from_buffer(data), len(data))
