"""Many requests on one model: a thread runs the GPU, requests come and go as `Completion`s.

`batch.scheduler(session, parallel)` makes one; `Scheduler.submit` queues a request (prompt ids, sampling settings, a token budget, stop ids)
and returns its `Completion` at once: the caller reads new token ids from it, blocking
(`for ids in completion`) or from asyncio (`async for ids in completion`), and may `cancel()`
it at any time. One engine thread owns the GPU and serves the queue; the server and the
Python API's concurrent calls are its front ends. A request's tokens arrive in small groups
(the engine reads tokens back a few steps at a time); `finish_reason` says why it ended:
"stop" (a stop id, not included), "length" (the budget or the context), "cancelled", or
"error" (`error` holds the message).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..errors import UserError
from ..kernels.sampling import TOP_LOGPROBS
from .sampling import SamplingParams
from .session import Session, check_token_ids

T = TypeVar("T")
DONE = object()  # the item that ends a Completion's stream of token groups


class QueueFull(Exception):
    """The scheduler's queue is full (HTTP 429)."""


class ShuttingDown(QueueFull):
    """The scheduler takes no more requests: it is closing (HTTP 503)."""


@dataclass
class Completion:
    """One request: its settings, the tokens generated so far, and how it ended."""

    ids: list[int]
    params: SamplingParams
    max_tokens: int | None  # None: until the context (or a batch's shared KV cache) is full
    stop_ids: frozenset[int]
    logprobs: int | None = None  # None: none; n: each token's logprob and the n most likely tokens'
    tokens: list[int] = field(default_factory=list)
    # per token, with `logprobs`: (its logprob, [(token, logprob) of the `logprobs` most likely])
    token_logprobs: list[tuple[float, list[tuple[int, float]]]] = field(default_factory=list)
    finish_reason: str | None = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _queue: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue, repr=False)
    _listeners: list[tuple[Sink, Any]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- the reader's side -----------------------------------------------------------------
    def budget(self, ctx: int) -> int:
        """Tokens it may sample in a context of `ctx` positions."""
        room = ctx - len(self.ids)
        return room if self.max_tokens is None else min(self.max_tokens, room)

    def cancel(self) -> None:
        """Stop this request: the engine drops it at its next step (its slot frees at once)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def __iter__(self) -> Iterator[list[int]]:
        """New token ids as they come (blocking), until the request ends."""
        while True:
            item = self._queue.get()
            if item is DONE:
                return
            yield item

    def __aiter__(self) -> AsyncIterator[list[int]]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[list[int]]:
        q: asyncio.Queue[Any] = asyncio.Queue()
        self.listen(loop_sink(asyncio.get_running_loop()), q)
        while True:
            item = await q.get()
            if item is DONE:
                return
            while not q.empty():  # a reader that fell behind takes what has queued up as one group
                more = q.get_nowait()
                if more is DONE:
                    yield item
                    return
                item = item + more
            yield item

    def listen(self, sink: Sink, key: Any) -> None:
        """Have `sink` told (key, new token ids) for every group of tokens and (key, DONE) at the
        end: first of what came before, then as they come (on the engine's thread)."""
        with self._lock:
            before = ([(key, self.tokens[:])] if self.tokens else []) + ([(key, DONE)] if self.done else [])
            if before:
                sink.deliver(before)
            if not self.done:
                self._listeners.append((sink, key))

    def wait(self) -> list[int]:
        """Block until the request ends; all its new token ids."""
        for _ in self:
            pass
        return self.tokens

    # -- the engine's side -----------------------------------------------------------------
    def _push(self, new: list[int], logprobs: list[tuple[float, list[tuple[int, float]]]] | None = None,
              outbox: Outbox | None = None) -> None:
        """Hand new tokens to the readers; with an `outbox`, async readers get them when it is
        sent (one wake-up of each event loop for a whole step's requests)."""
        if not new:
            return
        with self._lock:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            if logprobs is not None:
                self.token_logprobs.extend(logprobs)
            self.tokens.extend(new)
            self._queue.put(new)
            self._tell(new, outbox)

    def _finish(self, reason: str, error: str | None = None, outbox: Outbox | None = None) -> None:
        with self._lock:
            if self.finish_reason is not None:
                return
            self.finish_reason, self.error = reason, error
            self.finished_at = time.perf_counter()
            self._queue.put(DONE)
            self._tell(DONE, outbox)

    def _tell(self, item: Any, outbox: Outbox | None) -> None:
        for sink, key in self._listeners:
            if outbox is None:
                sink.deliver([(key, item)])
            else:
                outbox.add(sink, key, item)


class Sink(Protocol):
    """Where a Completion's readers are told of new tokens (`Completion.listen`)."""

    def deliver(self, pairs: list[tuple[Any, Any]]) -> None:
        """(a listener's key, new token ids or DONE), in order; called on the engine's thread."""


class _LoopSink:
    """The asyncio readers of one event loop: each key is a reader's queue, and one delivery is
    one `call_soon_threadsafe` (a wake-up of the loop, a write to its self-pipe, ~20 µs of the
    engine thread: per request and step it was most of a 32-stream step's host work)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def deliver(self, pairs: list[tuple[Any, Any]]) -> None:
        try:
            self.loop.call_soon_threadsafe(_put_all, pairs)
        except RuntimeError:  # the loop has closed: nobody is left to read
            pass


_loop_sinks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSink] = weakref.WeakKeyDictionary()


def loop_sink(loop: asyncio.AbstractEventLoop) -> _LoopSink:
    """The one sink of an event loop (so that an Outbox wakes each loop once a step)."""
    sink = _loop_sinks.get(loop)
    if sink is None:
        sink = _loop_sinks[loop] = _LoopSink(loop)
    return sink


def _put_all(pairs: list[tuple[asyncio.Queue[Any], Any]]) -> None:
    for q, item in pairs:
        q.put_nowait(item)


class Outbox:
    """What one engine step hands to its readers, kept per sink and delivered at once."""

    def __init__(self) -> None:
        self._items: dict[Sink, list[tuple[Any, Any]]] = {}

    def add(self, sink: Sink, key: Any, item: Any) -> None:
        self._items.setdefault(sink, []).append((key, item))

    def send(self) -> None:
        items, self._items = self._items, {}
        for sink, pairs in items.items():
            sink.deliver(pairs)


@dataclass
class SchedulerStats:
    requests: int = 0  # submitted so far
    finished: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    # the batched engine's steps: how many, their rows together, and the engine thread's
    # seconds blocked on their read-backs (the rest of its time is host work)
    steps: int = 0
    step_rows: int = 0
    wait_s: float = 0.0


class WorkQueue(Generic[T]):
    """Requests of many callers served by one engine thread: the queue (at most `max_queue`
    waiting), its lock, the counts and the close. Subclasses set what their thread reads, then
    call `_start`; their `_run` takes the work."""

    failed: str | None = None  # why the engine cannot go on (a server's engine process that ended)

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self.stats = SchedulerStats()
        self._waiting: deque[T] = deque()
        self._cv = threading.Condition()
        self._stopping = False

    def _start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def _refuse_if_closed_or_full(self, waiting: int) -> None:
        """(Under the lock) ShuttingDown while closing, QueueFull with `waiting` at the limit."""
        if self._stopping:
            raise ShuttingDown(self.failed or "the server is shutting down")
        if waiting >= self.max_queue:
            raise QueueFull(f"{waiting} requests are waiting already")

    def _enqueue(self, item: T) -> None:
        with self._cv:
            self._refuse_if_closed_or_full(len(self._waiting))
            self._waiting.append(item)
            self.stats.requests += 1
            self._cv.notify()

    def _wait_for_work(self) -> bool:
        """(Under the lock) Block until a request waits (True) or the queue closes empty (False)."""
        while not self._waiting:
            if self._stopping:
                return False
            self._cv.wait()
        return True

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests; with `drain`, finish those taken and queued first, else cancel them."""
        with self._cv:
            self._stopping = True
            if not drain:
                self._cancel_all()
            self._cv.notify()
        self._thread.join(timeout)

    def _cancel_all(self) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        raise NotImplementedError


class Scheduler(WorkQueue[Completion]):
    """Serves requests on one model from an engine thread: the queue, admission and the
    request's life; `SerialScheduler` and `batch.BatchScheduler` run the steps. Requests past
    the `parallel` admitted at a time wait in the queue, at most `max_queue` of them."""

    def __init__(self, ctx: int, parallel: int = 1, max_queue: int = 256, vocab: int | None = None) -> None:
        if parallel < 1:
            raise UserError(f"--parallel {parallel}: must be at least 1")
        super().__init__(max_queue)
        self.ctx, self.vocab = ctx, vocab
        self.parallel = parallel
        self._active: list[Completion] = []
        self._start("webgpu-llm engine")

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def kv_tokens(self) -> tuple[int, int]:
        """KV-cache positions in use by the admitted requests, and the positions there are."""
        return 0, self.ctx * self.parallel

    supports_logprobs = False

    def check(self, ids: list[int], params: SamplingParams, max_tokens: int | None,
              logprobs: int | None = None) -> None:
        """What `submit` refuses, as a UserError (for a 400 before anything is queued)."""
        params.check()
        if logprobs is not None:
            if not self.supports_logprobs:
                raise UserError("logprobs need the batched engine: serve with --parallel 2 or more")
            if not 0 <= logprobs <= TOP_LOGPROBS:
                raise UserError(f"top_logprobs {logprobs}: must be in [0, {TOP_LOGPROBS}]")
        if not ids:
            raise UserError("the prompt is empty")
        if max_tokens is not None and max_tokens < 1:
            raise UserError(f"max_tokens {max_tokens}: must be at least 1")
        if len(ids) >= self.ctx:
            raise UserError(f"the prompt has {len(ids)} tokens, the context holds {self.ctx}")
        if self.vocab is not None:
            check_token_ids(ids, self.vocab)

    def submit(self, ids: list[int], params: SamplingParams, max_tokens: int | None,
               stop_ids: frozenset[int] = frozenset(), logprobs: int | None = None) -> Completion:
        """Queue a request; raises UserError for bad settings and QueueFull when the queue is full.
        `max_tokens` None: until the context is full; `logprobs`: None, or the alternatives each
        token's log-probability comes with."""
        self.check(ids, params, max_tokens, logprobs)
        c = Completion(list(ids), params, max_tokens, frozenset(stop_ids), logprobs)
        self._enqueue(c)
        return c

    def _cancel_all(self) -> None:
        for c in [*self._waiting, *self._active]:
            c.cancel()


class SerialScheduler(Scheduler):
    """Decodes the admitted requests one after the other on a `Session` (the fastest for a
    single stream: its fused one-token decode)."""

    def __init__(self, session: Session, max_queue: int = 256) -> None:
        self.session = session
        super().__init__(session.ctx, 1, max_queue, vocab=session.cfg.vocab)

    def _next(self) -> Completion | None:
        with self._cv:
            if not self._wait_for_work():
                return None
            c = self._waiting.popleft()
            self._active.append(c)
            return c

    def _run(self) -> None:
        while True:
            c = self._next()
            if c is None:
                return
            try:
                self._serve(c)
            except UserError as e:
                c._finish("error", str(e))
            except Exception as e:  # the request fails, the engine goes on
                c._finish("error", f"{type(e).__name__}: {e}")
            finally:
                with self._cv:
                    self._active.remove(c)
                    self.stats.finished += 1

    def _serve(self, c: Completion) -> None:
        if c.cancelled:
            c._finish("cancelled")
            return
        self.stats.prompt_tokens += len(c.ids)
        budget = c.budget(self.ctx)
        stream = self.session.stream_groups(c.ids, 0, c.params, budget)
        try:
            for group in stream:  # handed over a read-back at a time: one wake-up of a reader a group
                if c.cancelled:
                    c._finish("cancelled")
                    return
                stop = next((i for i, tok in enumerate(group) if tok in c.stop_ids), None)
                c._push(group[:stop])
                self.stats.generated_tokens += len(group) if stop is None else stop
                if stop is not None:
                    c._finish("stop")
                    return
        finally:
            stream.close()
        c._finish("length")
