"""Adapter and device selection, feature detection, buffers and the pipeline cache.

Two backends speak the same Python API: `dawn` (the `wgpudawn` package, the default) and `wgpu`
(wgpu-native). Everything above this module sees only `Gpu`; what to open is a
`GpuOptions`, which the front ends fill (environment variables are read in `environment.py`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import GpuError, UserError

BACKENDS = {"wgpu": "wgpu", "dawn": "wgpudawn"}
# The engine's front ends open Dawn unless told otherwise: the subgroup-matrix tiles that the
# prompts and the batched steps run on are Dawn's (H100: the 0.5B q4_0 pp512 62.4k on Dawn
# against 21.8k on wgpu-native), and its decode is as fast or faster (docs/performance.md)
DEFAULT_BACKEND = "dawn"
NO_ADAPTER_HELP = (
    "install a Vulkan driver (Debian/Ubuntu: `apt-get install mesa-vulkan-drivers` for the "
    "CPU driver llvmpipe, or your GPU vendor's driver)"
)

# Limits we ask for at their adapter maximum: big weights, big workgroups, many bindings.
_WANTED_LIMITS = (
    "max-storage-buffer-binding-size",
    "max-buffer-size",
    "max-compute-workgroup-storage-size",
    "max-compute-invocations-per-workgroup",
    "max-compute-workgroup-size-x",
    "max-compute-workgroup-size-y",
    "max-compute-workgroups-per-dimension",
    "max-storage-buffers-per-shader-stage",
    "max-bind-groups",
)


@dataclass(frozen=True)
class GpuOptions:
    """Which device to open and which of its features the kernels may use."""

    backend: str = DEFAULT_BACKEND
    adapter: str | None = None  # an index from `webgpu-llm info` or part of a name; None: high-performance
    f16: bool = True  # ask for shader-f16 where the adapter has it
    subgroups: bool = True  # ask for subgroups (and the subgroup matrices, which need them)
    subgroup_matrices: bool = True  # ask for Dawn's subgroup matrices (the prompt matmuls' int8 tiles)
    max_binding: int | None = None  # lower the storage-binding size the kernels assume (tests: split paths)
    # Dawn validates every command it records, ~4 µs of CPU a dispatch at submit: off for users'
    # runs, on in the test suite and to debug a shader or an op
    validate: bool = False
    verbose: bool = False  # let the native libraries' messages at adapter and device creation through
    # WebGPU's bounds checks on every array index (Dawn's robustness). None: off on a GPU, where
    # prompts and batched steps run 11-18 % faster without them on an H100 and the GPU test suite
    # passes the same (docs/performance.md); on for a CPU adapter, where a stray read would take
    # the process down and no gain was measured. The torch device always keeps them (its ops
    # index with values from users' tensors); wgpu-native keeps its own either way.
    robust: bool | None = None
    # more Dawn toggles ("name" on, "-name" off; `webgpu-llm info --backend dawn` lists the device's),
    # to try a compiler or robustness switch without code
    dawn_toggles: tuple[str, ...] = ()


def backend_module(name: str, verbose: bool = False) -> Any:
    """Import the Python package behind a backend name, with a clear error if absent."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        with _quiet_native_output(verbose):
            return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise UserError(
            f"backend {name!r} needs the Python package {BACKENDS[name]!r}: "
            f"pip install {BACKENDS[name]} ({e})"
        ) from e


@contextlib.contextmanager
def _quiet_native_output(verbose: bool = False):
    """Dawn prints limit warnings at adapter creation; keep them off the terminal.

    Only adapter and device creation run inside this (`GpuOptions.verbose` lets them through).
    """
    if verbose:
        yield
        return
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no real stdout/stderr (e.g. captured): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            with contextlib.redirect_stdout(io.StringIO()):
                yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _flush_stdout() -> None:
    import sys

    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()


def list_adapters(options: GpuOptions) -> list[Any]:
    """The adapters `options.backend` lists, as the engine would see them."""
    mod = backend_module(options.backend, options.verbose)
    _prepare_backend(options)  # the instance's toggles decide what adapters list (unsafe APIs)
    _flush_stdout()
    with _quiet_native_output(options.verbose):
        return list(mod.gpu.enumerate_adapters_sync())


# Set by the first Dawn device of the process: Dawn's instance toggles cannot change after
_DAWN_VALIDATES: list[bool] = []
# Dawn's int8 (and other) matrix tiles on the GPU's matrix units: asked for where listed
# (WEBGPU_LLM_NO_MMA=1 leaves it off), used by the prompt matmul (kernels/mma.py)
MMA_FEATURE = "chromium-experimental-subgroup-matrix"


def subgroup_matrix_configs(adapter: Any) -> list[dict[str, Any]]:
    """The subgroup-matrix shapes and types a Dawn adapter lists (none where it lacks the
    feature, e.g. every wgpu-native adapter)."""
    if MMA_FEATURE not in adapter.features:
        return []
    from wgpudawn.backends.dawn import extras

    return list(extras.get_adapter_properties(adapter).get("subgroup_matrix_configs", []))


def check_dawn_toggles(names: tuple[str, ...]) -> None:
    """A clear error for a Dawn toggle name that Dawn does not have ("-name": to turn off)."""
    if not names:
        return
    try:
        from wgpudawn.backends.dawn import extras
    except ImportError as e:
        raise UserError(f"Dawn toggles need the Python package 'wgpudawn' ({e})") from e
    known = extras.all_toggles()
    for t in names:
        if t.lstrip("-") not in known:
            raise UserError(f"Dawn has no toggle {t.lstrip('-')!r}: wgpudawn's extras.all_toggles() lists them")


def dawn_validates(options: GpuOptions) -> bool:
    """Whether Dawn devices of this process validate their commands (the first device's
    options decide; before any, what `options` ask for)."""
    return _DAWN_VALIDATES[0] if _DAWN_VALIDATES else options.validate


def _prepare_backend(options: GpuOptions) -> None:
    """Dawn quantizes timestamps to 16 µs by default (a browser defence against timing
    attacks); native profiling wants them exact. Dawn also skips command validation unless
    `options.validate`. Only settable before Dawn's instance exists."""
    if options.backend != "dawn":
        return
    with contextlib.suppress(Exception):  # the instance may already exist in this process
        from wgpudawn.backends.dawn import extras

        # allow_unsafe_apis: Dawn lists its experimental features (the subgroup matrices) only then;
        # vulkan_enable_f16_on_nvidia: shader-f16 (and the f16 tiles) on NVIDIA, off by default for
        # old drivers' bugs, so the kernels that use it check themselves (kernels/mma.f16_usable)
        on = [t for t in options.dawn_toggles if not t.startswith("-")]
        off = [t[1:] for t in options.dawn_toggles if t.startswith("-")]
        extras.set_instance_extras(
            enable_toggles=["allow_unsafe_apis", "vulkan_enable_f16_on_nvidia", *on]
            + ([] if options.validate else ["skip_validation"]),
            disable_toggles=["timestamp_quantization", *off])
        if not _DAWN_VALIDATES:
            _DAWN_VALIDATES.append(options.validate)


def _pick_adapter(mod: Any, backend: str, adapter: str | None, verbose: bool = False) -> Any:
    _flush_stdout()
    with _quiet_native_output(verbose):
        if adapter is None:
            found = mod.gpu.request_adapter_sync(power_preference="high-performance")
            if found is None:
                raise GpuError(f"no WebGPU adapter found for backend {backend!r}: {NO_ADAPTER_HELP}")
            return found
        adapters = list(mod.gpu.enumerate_adapters_sync())
    if not adapters:
        raise GpuError(f"no WebGPU adapter found for backend {backend!r}: {NO_ADAPTER_HELP}")
    if adapter.isdigit():
        i = int(adapter)
        if i >= len(adapters):
            raise UserError(
                f"--adapter {i}: only {len(adapters)} adapter(s) on backend {backend!r} "
                "(see `webgpu-llm info`)"
            )
        return adapters[i]
    for a in adapters:
        if adapter.lower() in a.info.get("device", "").lower():
            return a
    names = "; ".join(a.info.get("device", "?") for a in adapters)
    raise UserError(f"--adapter {adapter!r} matches no adapter on backend {backend!r} ({names})")


@dataclass
class Gpu:
    """One WebGPU device with what the kernels need to know about it."""

    backend: str
    mod: Any
    adapter: Any
    device: Any
    features: frozenset[str]
    limits: dict[str, int]
    max_binding: int
    options: GpuOptions = GpuOptions()
    _pipelines: dict[str, Any] = field(default_factory=dict, repr=False)
    checks: dict[str, bool] = field(default_factory=dict, repr=False)  # kernels' self-checks on this device
    _indexed: Any = field(default=None, repr=False)  # wgpu-native's (submit, wait) by submission index
    ran: set[int] = field(default_factory=set, repr=False)  # pipelines run once (program.run_each_once)

    # -- capabilities --------------------------------------------------------------------
    def check(self, name: str, run: Callable[[], bool]) -> bool:
        """A kernel's self-check on this device (`run`: does it compute right?), run once."""
        if name not in self.checks:
            self.checks[name] = bool(run())
        return self.checks[name]

    @property
    def has_f16(self) -> bool:
        return "shader-f16" in self.features

    @property
    def has_subgroups(self) -> bool:
        return bool({"subgroup", "subgroups"} & self.features)

    def subgroups_wgsl(self, on_cpu: bool = False) -> str | None:
        """What a WGSL kernel needs to use subgroup operations here: None where there are
        none (or on CPU adapters, where they do not pay, unless `on_cpu`), else the enable
        line (Dawn wants `enable subgroups;`, wgpu-native's naga rejects it, needs nothing)."""
        if not self.has_subgroups or (self.is_cpu and not on_cpu):
            return None
        return "enable subgroups;" if self.backend == "dawn" else ""

    @property
    def subgroup_matrix_configs(self) -> list[dict[str, Any]]:
        """The subgroup-matrix shapes and types this device takes (Dawn's experimental
        `chromium-experimental-subgroup-matrix`, where enabled; else none)."""
        return subgroup_matrix_configs(self.adapter) if MMA_FEATURE in self.features else []

    @property
    def has_timestamps(self) -> bool:
        return "timestamp-query" in self.features

    @property
    def is_cpu(self) -> bool:
        """A software adapter (llvmpipe): kernels pick shapes that suit SIMD lanes, not warps."""
        return is_cpu_adapter(self.adapter)

    @property
    def queue(self) -> Any:
        return self.device.queue

    @property
    def info(self) -> dict[str, Any]:
        return dict(self.adapter.info)

    @property
    def toggles(self) -> list[str]:
        """The Dawn toggles this device runs with (asked for, and Dawn's own for the driver);
        none listed on wgpu-native."""
        if self.backend != "dawn":
            return []
        from wgpudawn.backends.dawn import extras

        return sorted(extras.get_toggles(self.device))

    @property
    def name(self) -> str:
        i = self.adapter.info
        return f"{i.get('device', '?')} ({i.get('backend_type', '?')}, {self.backend})"

    # -- buffers -------------------------------------------------------------------------
    @property
    def usage(self) -> Any:
        return self.mod.BufferUsage

    def buffer(self, nbytes: int, label: str = "", usage: int | None = None) -> Any:
        """A zero-filled storage buffer (WebGPU guarantees zero initialisation)."""
        u = self.usage
        nbytes = max(16, _align(int(nbytes), 16))
        if nbytes > self.limits["max-buffer-size"]:
            raise GpuError(
                f"buffer {label or '?'} needs {nbytes / 2**20:.1f} MiB, over this adapter's "
                f"max buffer size of {self.limits['max-buffer-size'] / 2**20:.0f} MiB"
            )
        usage = u.STORAGE | u.COPY_SRC | u.COPY_DST if usage is None else usage
        try:
            return self.device.create_buffer(size=nbytes, usage=usage, label=label)
        except Exception as e:  # wgpu raises its own error types
            raise GpuError(
                f"could not allocate {nbytes / 2**20:.1f} MiB on the GPU for {label or 'a buffer'}: "
                f"{_first_line(e)}; free GPU memory or use a smaller model / --ctx"
            ) from e

    def upload(self, data: np.ndarray | bytes | memoryview, label: str = "") -> Any:
        raw = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
        buf = self.buffer(len(raw), label)
        self.write(buf, raw)
        return buf

    def write(self, buf: Any, data: Any, offset: int = 0) -> None:
        raw = memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else data
        n = len(raw)
        if n % 4:  # queue writes must be a multiple of 4 bytes
            raw = bytes(raw) + b"\0" * (4 - n % 4)
        self.queue.write_buffer(buf, offset, raw)

    def read(self, buf: Any, offset: int = 0, nbytes: int | None = None) -> memoryview:
        """Synchronous read-back (waits for all submitted work)."""
        size = buf.size - offset if nbytes is None else nbytes
        pad = (-size) % 4
        data = self.queue.read_buffer(buf, offset, size + pad)
        return memoryview(data)[:size]

    def read_array(self, buf: Any, dtype: Any, count: int, offset: int = 0) -> np.ndarray:
        dt = np.dtype(dtype)
        return np.frombuffer(self.read(buf, offset, count * dt.itemsize), dtype=dt).copy()

    # -- pipelines -----------------------------------------------------------------------
    def pipeline(self, wgsl: str, label: str = "") -> Any:
        """Compile (once per source text) a compute pipeline with entry point `main`."""
        key = hashlib.sha1(wgsl.encode()).hexdigest()
        pipe = self._pipelines.get(key)
        if pipe is None:
            try:
                module = self.device.create_shader_module(code=wgsl, label=label)
                pipe = self.device.create_compute_pipeline(
                    layout="auto", compute={"module": module, "entry_point": "main"}, label=label
                )
            except Exception as e:
                raise GpuError(f"kernel {label or '?'} failed to compile on {self.name}: {e}") from e
            self._pipelines[key] = pipe
        return pipe

    def bind_group(self, pipeline: Any, bindings: list[Any], label: str = "") -> Any:
        entries = []
        for i, b in enumerate(bindings):
            if isinstance(b, tuple):
                buf, off, size = b
                res = {"buffer": buf, "offset": off, "size": size}
            else:
                res = {"buffer": b, "offset": 0, "size": b.size}
            entries.append({"binding": i, "resource": res})
        return self.device.create_bind_group(
            layout=pipeline.get_bind_group_layout(0), entries=entries, label=label
        )

    def submit(self, command_buffers: list[Any]) -> int | None:
        """Submit in order; on wgpu-native the submission's index (what `ReadBack` waits for)."""
        if self._indexed is None and self.backend == "wgpu":
            from .native import indexed_submit

            self._indexed = indexed_submit(self.device, self.queue)
        if self._indexed is not None:
            return self._indexed[0](command_buffers)
        self.queue.submit(command_buffers)
        return None

    def wait_submission(self, index: int | None) -> None:
        """Block until a submission (`submit`'s index) is done; everything where it is None."""
        if index is None or self._indexed is None:
            self.sync()
        else:
            self._indexed[1](index)

    def sync(self) -> None:
        """Wait until the GPU has finished all submitted work.

        wgpu 0.32's `on_submitted_work_done_sync` fails inside cffi on wgpu-native, so there
        the wait is the native `wgpuDevicePoll(wait=true)`, which is what it would do anyway.
        """
        if self.backend == "wgpu":
            from .native import device_poll

            device_poll(self.device)()
        else:
            self.queue.on_submitted_work_done_sync()


class ReadBack:
    """A MAP_READ buffer that the submission `index` (`Gpu.submit`'s) copies into, to read
    while later work runs. On Dawn the map starts at once and `wait` blocks in Dawn until it is
    mapped. On wgpu-native it starts in `wait`, once that submission is done: a pending map
    there wakes wgpu-py's poll thread, whose blocking poll waits for all the submitted work
    while holding the lock every submit takes, so that a map started at once stalls the next
    submits until the GPU is idle (the batched server's steps ran one at a time)."""

    def __init__(self, gpu: Gpu, buf: Any, index: int | None) -> None:
        self.gpu, self.buf, self.index = gpu, buf, index
        self._promise = None if gpu.backend == "wgpu" else buf.map_async(gpu.mod.MapMode.READ)

    def wait(self) -> Any:
        """Block until the buffer is mapped; the buffer."""
        if self._promise is None:
            self.gpu.wait_submission(self.index)
            self._promise = self.buf.map_async("READ_NOSYNC")  # the data is there: no extra submit
        self._promise.sync_wait()
        return self.buf


def _align(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def _first_line(e: BaseException) -> str:
    s = str(e).strip().splitlines()
    return s[0] if s else type(e).__name__


def bounds_checked(options: GpuOptions, adapter: Any) -> bool:
    """Whether a device of `adapter` keeps WebGPU's bounds checks (GpuOptions.robust)."""
    return options.robust if options.robust is not None else is_cpu_adapter(adapter)


def is_cpu_adapter(adapter: Any) -> bool:
    return str(adapter.info.get("adapter_type", "")).upper() == "CPU"


def open_gpu(backend: str | None = None, adapter: str | None = None, max_binding: int | None = None,
             options: GpuOptions | None = None) -> Gpu:
    """Open a device with every useful feature that `options` allow and the adapter's
    largest limits; `backend`, `adapter` and `max_binding`, where given, override `options`'.
    """
    o = options or GpuOptions()
    o = replace(o, backend=backend or o.backend, adapter=adapter if adapter is not None else o.adapter,
                max_binding=max_binding or o.max_binding)
    mod = backend_module(o.backend, o.verbose)
    _prepare_backend(o)
    try:
        ad = _pick_adapter(mod, o.backend, o.adapter, o.verbose)
    except (GpuError, UserError):
        raise
    except Exception as e:
        raise GpuError(f"could not open a WebGPU adapter on backend {o.backend!r}: "
                       f"{_first_line(e)}; {NO_ADAPTER_HELP}") from e
    feats = set(ad.features)
    want = {"shader-f16", "timestamp-query", "subgroup", "subgroups", MMA_FEATURE} & feats
    if not o.f16:
        want.discard("shader-f16")
    if not o.subgroups:
        want -= {"subgroup", "subgroups", MMA_FEATURE}
    if not o.subgroup_matrices:
        want.discard(MMA_FEATURE)
    limits = {k: ad.limits[k] for k in _WANTED_LIMITS if k in ad.limits}
    o = replace(o, robust=bounds_checked(o, ad) if o.backend == "dawn" else True)  # wgpu-native: its own
    try:
        with _quiet_native_output(o.verbose):
            if not o.robust:
                from wgpudawn.backends.dawn import extras

                dev = extras.request_device_sync(ad, required_features=sorted(want), required_limits=limits,
                                                 enable_toggles=["disable_robustness"])
            else:
                dev = ad.request_device_sync(required_features=sorted(want), required_limits=limits)
    except Exception as e:
        raise GpuError(f"could not open a WebGPU device on {ad.info.get('device', '?')}: "
                       f"{_first_line(e)}") from e
    got = dict(dev.limits)
    binding = int(got["max-storage-buffer-binding-size"])
    binding = min(binding, int(got["max-buffer-size"]))
    if o.max_binding:
        binding = min(binding, int(o.max_binding))
    binding -= binding % 256
    return Gpu(o.backend, mod, ad, dev, frozenset(dev.features), got, binding, o)


_DEFAULT: dict[GpuOptions, Gpu] = {}


def default_gpu(options: GpuOptions | str) -> Gpu:
    """A process-wide shared device per set of options (or backend name)."""
    if isinstance(options, str):
        options = GpuOptions(backend=options)
    if options not in _DEFAULT:
        _DEFAULT[options] = open_gpu(options=options)
    return _DEFAULT[options]
