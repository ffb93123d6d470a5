"""The server's engine in a process of its own.

In one process the engine thread's Python (a step's tables, its encoding, the read-backs)
and the event loop's (HTTP, JSON, one server-sent event per stream and token) take turns on
the interpreter lock, and a failing driver takes the HTTP server down with it. Here the
engine (the model on the GPU and its scheduler) runs in a child process and the server
process keeps the HTTP work: `EngineProcess` is the server's Scheduler, and hands each request
to the child and its tokens back to the request's readers, one message a step each way. On an
H100 (Qwen2.5-0.5B q4_0 shape) that measured even at 32 streams and up to 10 % faster at 64.

Messages, pickled over two one-way pipes:
- to the engine: ("submit", rid, ids, params, max_tokens, stop_ids, logprobs), ("cancel", rid),
  ("close", drain);
- from it: ("ready", EngineInfo) or ("failed", message, exit code) once loaded; then
  ("out", records, Snapshot) a step, each record (rid, tokens | None, logprobs | None,
  finish reason | None, error | None); and ("closed",) at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import sys
import threading
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from typing import Any

from ..engine.sampling import SamplingParams
from ..engine.scheduler import DONE, Completion, Outbox, QueueFull, Scheduler, SchedulerStats
from ..errors import GpuError, UserError
from ..kernels.common import PAGE

START_TIMEOUT_S = 3600.0  # a model's load and warm-up (a large one on a slow disk takes minutes)


@dataclass(frozen=True)
class EngineInfo:
    """What the server needs to know of the loaded engine."""

    ctx: int
    parallel: int
    supports_logprobs: bool
    pool: int | None  # KV pages the sequences share (the batched engine), None for the serial one


@dataclass(frozen=True)
class Snapshot:
    """The engine's counters after a step (what /metrics shows)."""

    stats: SchedulerStats  # a copy
    queue_depth: int
    active: int
    kv_tokens: tuple[int, int]


def _snapshot(s: Scheduler) -> Snapshot:
    return Snapshot(replace(s.stats), s.queue_depth, s.active, s.kv_tokens)


class _Outlet:
    """One end of a pipe that several threads send on; a send to a process that has gone is
    dropped (the reading side sees the end and ends what waits on it)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, msg: Any) -> None:
        with self.lock:
            try:
                self.conn.send(msg)
            except (OSError, EOFError, ValueError):
                pass


# -- the engine's side (the child process) -----------------------------------------------------
class _PipeSink(_Outlet):
    """Every request's tokens and ends, a step's in one message (the keys are (rid, Completion));
    the engine thread and the command loop both send."""

    def __init__(self, conn: Connection, scheduler: Scheduler) -> None:
        super().__init__(conn)
        self.scheduler = scheduler
        self._lp_sent: dict[int, int] = {}
        self.last: Snapshot | None = None  # the counters last sent

    def deliver(self, pairs: list[tuple[Any, Any]]) -> None:
        records = []
        for (rid, c), item in pairs:
            if item is DONE:
                records.append((rid, None, None, c.finish_reason, c.error))
                self._lp_sent.pop(rid, None)
            else:
                lps = None
                if c.logprobs is not None:
                    at = self._lp_sent.get(rid, 0)
                    lps = c.token_logprobs[at:at + len(item)]
                    self._lp_sent[rid] = at + len(item)
                records.append((rid, item, lps, None, None))
        self.last = _snapshot(self.scheduler)
        self.send(("out", records, self.last))

    def counters(self) -> None:
        """The counters alone where they changed since the last message (a request's end is
        told before its scheduler counts it)."""
        snap = _snapshot(self.scheduler)
        if snap != self.last:
            self.last = snap
            self.send(("out", [], snap))


def engine_main(args: argparse.Namespace, commands: Connection, out: Connection) -> None:
    """The child: load the model, then serve the commands until "close" (or the server's end)."""
    # the server decides when this process ends: Ctrl-C at a terminal and a service manager's
    # SIGTERM reach the whole process group, and the running streams must drain first
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..cli.common import load_llm
    from ..engine.batch import scheduler as make_scheduler

    try:
        llm = load_llm(args)
        sch = make_scheduler(llm.session, parallel=args.parallel, max_queue=1 << 30, kv_tokens=args.kv_tokens,
                             warm_up=True)
    except BaseException as e:
        code = getattr(e, "exit_code", 1)
        msg = str(e) if hasattr(e, "exit_code") else f"internal error: {type(e).__name__}: {e}"
        if getattr(args, "debug", False) and not hasattr(e, "exit_code"):
            import traceback

            traceback.print_exc()
        out.send(("failed", msg, code))
        return
    if llm.session.tuning.gil_switch_s > 0:
        sys.setswitchinterval(llm.session.tuning.gil_switch_s)
    pool = getattr(getattr(sch, "programs", None), "slots", None)
    out.send(("ready", EngineInfo(sch.ctx, sch.parallel, sch.supports_logprobs, pool.pool if pool else None)))
    sink = _PipeSink(out, sch)
    running: dict[int, Completion] = {}
    closer: threading.Thread | None = None
    try:
        while closer is None or closer.is_alive():
            if not commands.poll(0.05):
                sink.counters()
                continue
            msg = commands.recv()
            if msg[0] == "submit":
                rid = msg[1]
                try:
                    c = sch.submit(*msg[2:])
                except (UserError, QueueFull) as e:  # the server checked it first: a race at most
                    c = Completion(list(msg[2]), msg[3], msg[4], frozenset())
                    c._finish("error", str(e))
                running[rid] = c
                c.listen(sink, (rid, c))
            elif msg[0] == "cancel":
                c = running.get(msg[1])
                if c is not None:
                    c.cancel()
            elif msg[0] == "close" and closer is None:  # drain in a thread: cancels still come in
                closer = threading.Thread(target=sch.close, args=(msg[1],), daemon=True)
                closer.start()
            for rid in [r for r, c in running.items() if c.done]:
                del running[rid]
    except (EOFError, OSError):  # the server is gone: nobody waits for the streams
        sch.close(drain=False, timeout=5.0)
    finally:
        sink.send(("closed",))
        llm.close()


# -- the server's side -------------------------------------------------------------------------
@dataclass
class _RemoteCompletion(Completion):
    """A request whose engine is the child: a cancel goes there too."""

    rid: int = 0
    engine: EngineProcess | None = field(default=None, repr=False)

    def cancel(self) -> None:
        if not self.cancelled and not self.done and self.engine is not None:
            self.engine._commands.send(("cancel", self.rid))
        super().cancel()


class EngineProcess(Scheduler):
    """The server's Scheduler, its engine in a child process (`start`); this process's thread
    hands the child's tokens to the requests' readers."""

    def __init__(self, proc: Any, commands: Connection, out: Connection, info: EngineInfo,
                 max_queue: int = 256) -> None:
        self.proc, self._commands, self._out, self.info = proc, _Outlet(commands), out, info
        self.supports_logprobs = info.supports_logprobs
        self._requests: dict[int, _RemoteCompletion] = {}
        self._next_rid = 0
        self._snap = Snapshot(SchedulerStats(), 0, 0,
                              (0, info.pool * PAGE if info.pool is not None else info.ctx * info.parallel))
        super().__init__(info.ctx, info.parallel, max_queue)

    @classmethod
    def start(cls, args: argparse.Namespace, max_queue: int = 256) -> EngineProcess:
        """Start the child, load the model there (its progress on this stderr) and wait for it;
        its load's failure is raised here, as it would have been in this process."""
        ctx = mp.get_context("spawn")  # a clean interpreter: no GPU or thread state copied
        cmd_r, cmd_w = ctx.Pipe(duplex=False)
        out_r, out_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=engine_main, args=(args, cmd_r, out_w), name="webgpu-llm engine", daemon=False)
        proc.start()
        cmd_r.close()
        out_w.close()
        try:
            msg = out_r.recv() if out_r.poll(START_TIMEOUT_S) else ("failed", "the engine did not start in time", 1)
        except (EOFError, OSError):
            msg = ("failed", f"the engine process ended while loading (exit code {_exit_code(proc)})", 1)
        except BaseException:
            proc.kill()
            raise
        if msg[0] != "ready":
            proc.join(5.0)
            if proc.is_alive():
                proc.kill()
            raise (UserError if msg[2] == 2 else GpuError)(msg[1])
        return cls(proc, cmd_w, out_r, msg[1], max_queue)

    # -- what the server reads -------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests waiting: those past the slots at once, and the child's own count (which
        also holds the ones KV pages keep back) as of its last step."""
        return max(len(self._requests) - self.parallel, self._snap.queue_depth)

    @property
    def active(self) -> int:
        return self._snap.active

    @property
    def kv_tokens(self) -> tuple[int, int]:
        return self._snap.kv_tokens

    def check(self, ids: list[int], params: SamplingParams, max_tokens: int | None,
              logprobs: int | None = None) -> None:
        super().check(ids, params, max_tokens, logprobs)
        if self.info.pool is not None:
            from ..engine.batch import check_pages

            check_pages(len(ids), max_tokens, self.ctx, self.info.pool)

    def submit(self, ids: list[int], params: SamplingParams, max_tokens: int | None,
               stop_ids: frozenset[int] = frozenset(), logprobs: int | None = None) -> Completion:
        self.check(ids, params, max_tokens, logprobs)
        with self._cv:
            self._refuse_if_closed_or_full(self.queue_depth)
            rid, self._next_rid = self._next_rid, self._next_rid + 1
            c = _RemoteCompletion(list(ids), params, max_tokens, frozenset(stop_ids), logprobs, rid=rid, engine=self)
            self._requests[rid] = c
        self._commands.send(("submit", rid, list(ids), params, max_tokens, frozenset(stop_ids), logprobs))
        return c

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        with self._cv:
            self._stopping = True
        self._commands.send(("close", drain))
        self._thread.join(timeout)
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5.0)

    # -- this process's reader thread ------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                msg = self._out.recv()
            except (EOFError, OSError):
                msg = ("gone",)
            if msg[0] == "out":
                self._deliver(msg[1], msg[2])
                continue
            failed = (f"the engine process ended unexpectedly (exit code {_exit_code(self.proc)})"
                      if msg[0] == "gone" else None)
            with self._cv:  # ("closed",) or the child's end: no more tokens will come
                self._stopping, self.failed = True, failed
                left, self._requests = list(self._requests.values()), {}
            for c in left:
                c._finish("error", self.failed or "the server shut down before the request finished")
            return

    def _deliver(self, records: list[tuple[Any, ...]], snap: Snapshot) -> None:
        out = Outbox()  # one wake-up of the event loop for the step's requests
        for rid, tokens, lps, finish, error in records:
            c = self._requests.get(rid)
            if c is None:
                continue
            if tokens is not None:
                c._push(tokens, lps, out)
            else:
                c._finish(finish, error, out)
                with self._cv:
                    del self._requests[rid]
        self.stats, self._snap = snap.stats, snap
        out.send()


def _exit_code(proc: Any) -> Any:
    proc.join(1.0)
    return proc.exitcode


__all__ = ["EngineInfo", "EngineProcess", "engine_main"]
