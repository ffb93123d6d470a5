"""The only code that touches native WebGPU handles and the C API behind the Python wrappers.

`wgpu` (wgpu-native) and `wgpudawn` (Dawn) wrap each webgpu.h object in a Python class whose raw
cffi handle is the private attribute `_internal`, and expose webgpu.h itself through their
private `_ffi` modules. Both packages have the same C API, so one fast path serves both. The
rest of the code (the torch stream, characterize/) goes through the small API below instead of
reading those private parts.

The Python wrappers check arguments and build cffi arrays on every `set_bind_group` or
`create_bind_group`: 10-150 µs where the same native call costs a few µs. The hot paths
(replaying a Program, the torch stream's launches) therefore keep raw handles: get them once
with `handle()` when an object is made, and bind the native functions once (`PassEncoder`,
`NativeCalls`), so that a launch costs no more Python calls than the native calls themselves.

    handle(obj)          the raw handle of a wgpu/wgpudawn object (or of a NativeBindGroup)
    pass_calls(backend)  the three native per-dispatch calls of a compute pass
    PassEncoder          encodes (pipeline, bind group, grid) items into an open compute pass
    NativeCalls          bind group creation and queue writes on raw handles
    NativeBindGroup      a bind group made by NativeCalls, released when the last reference goes
    device_poll(device)  wgpu-native: a function that blocks until the device's work is done
    indexed_submit(...)  wgpu-native: submit and get the submission's index; poll until one is done
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A raw webgpu.h handle (a cffi pointer: WGPUBuffer, WGPUComputePipeline, WGPUBindGroup, ...).
# Valid only while the object it came from (or a NativeBindGroup) is alive.
Handle = Any
# (pipeline handle, bind group handle, x, y, z): one dispatch, as PassEncoder encodes it.
Item = tuple[Handle, Handle, int, int, int]


def _ffi_module(backend: str) -> Any:
    if backend == "wgpu":
        from wgpu.backends.wgpu_native import _ffi
    else:
        from wgpudawn.backends.dawn import _ffi  # type: ignore[no-redef]
    return _ffi


def handle(obj: Any) -> Handle:
    """The raw native handle of a `wgpu`/`wgpudawn` object (buffer, pipeline, bind group layout,
    bind group, compute pass encoder, device, queue) or of a `NativeBindGroup`.

    The caller keeps `obj` alive as long as it uses the handle. Take it once, where the object
    is made, not per use in a hot loop.
    """
    return obj._internal


@dataclass(frozen=True)
class PassCalls:
    """The native per-dispatch calls of a compute pass, as raw cffi functions:

    set_pipeline(pass, pipeline), set_bind_group(pass, 0, group, 0, null) and
    dispatch(pass, x, y, z), all on raw handles (`handle(cpass)`, ...); `null` is the C NULL
    for set_bind_group's dynamic offsets.
    """

    set_pipeline: Callable[..., None]
    set_bind_group: Callable[..., None]
    dispatch: Callable[..., None]
    null: Any


def pass_calls(backend: str) -> PassCalls:
    """`PassCalls` of `backend` ("wgpu" or "dawn")."""
    mod = _ffi_module(backend)
    lib = mod.lib
    return PassCalls(lib.wgpuComputePassEncoderSetPipeline, lib.wgpuComputePassEncoderSetBindGroup,
                     lib.wgpuComputePassEncoderDispatchWorkgroups, mod.ffi.NULL)


class PassEncoder:
    """Encodes (pipeline, bind group, grid) items into an open compute pass."""

    def __init__(self, backend: str) -> None:
        c = pass_calls(backend)
        self._set_pipeline = c.set_pipeline
        self._set_bind_group = c.set_bind_group
        self._dispatch = c.dispatch
        self._null = c.null

    def encode(self, cpass: Any, items: list[Item]) -> None:
        """Encode `items` (raw handles, see `Item`) into `cpass` (a wrapper compute pass);
        the pipeline is set only when it changes."""
        p = cpass._internal
        sp, sb, dw, null = self._set_pipeline, self._set_bind_group, self._dispatch, self._null
        last = None
        for pipe, bg, x, y, z in items:
            if pipe is not last:
                sp(p, pipe)
                last = pipe
            sb(p, 0, bg, 0, null)
            dw(p, x, y, z)


class NativeBindGroup:
    """A native bind group, released when the last reference goes.

    `handle` is its raw handle (what `PassEncoder` items hold); `handle(group)` gives the same,
    so it can stand wherever a wrapper bind group does (e.g. in a `Program`'s dispatch).
    """

    __slots__ = ("_internal", "_release", "handle")

    def __init__(self, raw: Handle, release: Callable[[Handle], None]) -> None:
        self._internal = raw
        self.handle = raw
        self._release = release

    def __del__(self) -> None:
        try:
            self._release(self._internal)
        except Exception:  # interpreter shutdown: the library may be gone already
            pass


class NativeCalls:
    """Bind group creation and queue writes through the native C API, on raw handles.

    Eager torch creates bind groups per launch; the wrappers spend 50-150 µs validating and
    converting each one, the same call through cffi a few µs.
    """

    def __init__(self, gpu: Any) -> None:
        """`gpu`: a `runtime.gpu.Gpu` (its backend, device and queue)."""
        mod = _ffi_module(gpu.backend)
        self._cffi, self._lib = mod.ffi, mod.lib
        self._device = gpu.device._internal
        self._queue = gpu.queue._internal
        self._create = self._lib.wgpuDeviceCreateBindGroup
        self._release = self._lib.wgpuBindGroupRelease
        self._write = self._lib.wgpuQueueWriteBuffer

    def bind_group(self, layout: Handle, entries: list[tuple[Handle, int, int]]) -> NativeBindGroup:
        """A bind group of the bind group layout `layout` (a raw handle); `entries`: (raw buffer
        handle, byte offset, byte size) for bindings 0, 1, ..."""
        ffi = self._cffi
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
        return NativeBindGroup(self._create(self._device, desc), self._release)

    def write(self, buf: Handle, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Queue a write of `data` (a multiple of 4 bytes) into the buffer with raw handle `buf`."""
        self._write(self._queue, buf, offset, self._cffi.from_buffer(data), len(data))


def device_poll(device: Any) -> Callable[[], None]:
    """wgpu-native only: a function that blocks until all work submitted to `device` (a `wgpu`
    device) is done, through the native `wgpuDevicePoll(wait=true)`.

    wgpu 0.32's `on_submitted_work_done_sync` fails inside cffi on wgpu-native; this is what that
    call would do anyway. Dawn has no such call (use its queue's `on_submitted_work_done_sync`).
    """
    mod = _ffi_module("wgpu")
    poll, dev, null = mod.lib.wgpuDevicePoll, device._internal, mod.ffi.NULL

    def wait() -> None:
        poll(dev, 1, null)

    return wait


def indexed_submit(device: Any, queue: Any) -> tuple[Callable[[list[Any]], int], Callable[[int], None]]:
    """wgpu-native only: (submit, wait) on a `wgpu` device and its queue: `submit(command
    buffers)` returns the submission's index (`wgpuQueueSubmitForIndex`), `wait(index)` blocks
    until that submission is done (`wgpuDevicePoll(wait=true, &index)`), not all the work
    submitted after it."""
    mod = _ffi_module("wgpu")
    ffi, lib = mod.ffi, mod.lib
    q, dev = queue._internal, device._internal
    submit_for_index, poll = lib.wgpuQueueSubmitForIndex, lib.wgpuDevicePoll

    def submit(command_buffers: list[Any]) -> int:
        arr = ffi.new("WGPUCommandBuffer[]", [cb._internal for cb in command_buffers])
        return int(submit_for_index(q, len(command_buffers), arr))

    def wait(index: int) -> None:
        poll(dev, 1, ffi.new("WGPUSubmissionIndex *", index))

    return submit, wait
