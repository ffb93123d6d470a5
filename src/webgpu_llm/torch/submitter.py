"""Queue submits on a worker thread, so Dawn's recording overlaps the next launches' Python.

Dawn records a command buffer's Vulkan commands inside `wgpuQueueSubmit`: ~2.6 µs a dispatch
on an H200's host (bench/NOTES.md round 99), ~2.6 ms of an eager token's ~1000 launches. cffi
releases the GIL around the call, so a worker thread can run it while the main thread goes on
queuing launches. Two threads calling into one Dawn device need the device's
`implicit-device-synchronization` feature (wgpu-native is thread-safe as it is).

Order is kept by one rule: anything else that goes to the queue (a write, a read-back, a wait)
first waits until every handed-over command buffer is submitted (`drain`). The parameter
arena's uploads of fresh bytes are the exception: no earlier command buffer reads those bytes.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

FEATURE = "implicit-device-synchronization"


class Submitter:
    def __init__(self, lib: Any, ffi: Any, queue_handle: Any) -> None:
        self._submit = lib.wgpuQueueSubmit
        self._queue = queue_handle
        self._arr = ffi.new("WGPUCommandBuffer[1]")
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._cond = threading.Condition()
        self.handed = 0  # command buffers handed over (main thread only)
        self.submitted = 0  # of them submitted (worker only)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="webgpu-submit", daemon=True)
        self._thread.start()

    def submit(self, command_buffer: Any) -> None:
        """Hand a finished command buffer (wrapper with `_internal`) to the worker."""
        self.handed += 1
        self._work.put(command_buffer)

    def drain(self) -> None:
        """Return once every handed-over command buffer is submitted (re-raising its error)."""
        if self.submitted < self.handed:
            with self._cond:
                while self.submitted < self.handed:
                    self._cond.wait()
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"a queue submit failed on the submit thread: {err}") from err

    def close(self) -> None:
        self.drain()
        self._work.put(None)
        self._thread.join()

    def _run(self) -> None:
        submit, q, arr, work = self._submit, self._queue, self._arr, self._work
        while True:
            cb = work.get()
            if cb is None:
                return
            try:
                arr[0] = cb._internal
                submit(q, 1, arr)  # cffi releases the GIL: the main thread runs meanwhile
            except BaseException as e:  # (handed to the main thread at its next drain)
                self._error = e
            del cb  # the wrapper releases the command buffer (Dawn holds its own reference)
            with self._cond:
                self.submitted += 1
                self._cond.notify()
