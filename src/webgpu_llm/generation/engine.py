"""The decode loop: the GPU samples, the CPU runs ahead, tokens come back asynchronously.

Each step is one submit of a pre-bound Program (embed, layers, head, sampler). The sampled
token stays on the GPU, where the next step's embedding kernel reads it, so the CPU never
waits for a step before encoding the next one. Tokens come back in batches through a small
ring of mappable buffers; the batch size adapts so that a batch spans about 20 ms, which
bounds both the streaming latency and the work wasted after a stop condition is seen.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError
from ..models.transformer import Transformer
from ..runtime.program import Program, concat, run_programs
from .sampling import SamplingParams

MAX_PENDING = 3  # read-backs in flight
MAX_INTERVAL = 16  # steps per read-back at most
TARGET_BATCH_S = 0.02


@dataclass
class GenStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    overshoot: int = 0  # steps the GPU ran past the stop (discarded)

    @property
    def decode_tok_s(self) -> float:
        return (self.generated_tokens - 1) / self.decode_s if self.decode_s > 0 and self.generated_tokens > 1 else 0.0

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "generated_tokens": self.generated_tokens,
                "prefill_s": round(self.prefill_s, 6), "decode_s": round(self.decode_s, 6),
                "prefill_tok_s": round(self.prefill_tok_s, 2), "decode_tok_s": round(self.decode_tok_s, 2)}


class Engine:
    def __init__(self, model: Transformer) -> None:
        self.m = model
        self.gpu = model.gpu
        self._steps: dict[tuple[bool, bool], Program] = {}
        self._staging: list[Any] = []
        self.stats = GenStats()

    # -- helpers ---------------------------------------------------------------------------
    def step_program(self, params: SamplingParams) -> Program:
        m = self.m
        key = (params.filtered, params.penalised)
        step = self._steps.get(key)
        if step is None or step.dispatches[0] is not m.decode.dispatches[0]:  # (built anew by rebuild)
            step = self._steps[key] = concat(self.gpu, "step", m.decode, m.head, m.samplers[key])
        return step

    def _staging_buffer(self) -> Any:
        if self._staging:
            return self._staging.pop()
        u = self.gpu.usage
        return self.gpu.device.create_buffer(size=MAX_INTERVAL * 4 * 4, usage=u.MAP_READ | u.COPY_DST)

    def write_tokens(self, start: int, ids: list[int]) -> None:
        if start + len(ids) > self.m.ctx:
            raise UserError(f"{start + len(ids)} tokens do not fit the context of {self.m.ctx}")
        self.gpu.write(self.m.tokens, np.asarray(ids, np.uint32), start * 4)

    # -- prompt ----------------------------------------------------------------------------
    def prefill(self, ids: list[int], start: int, params: SamplingParams, seed: int,
                after_last: Any = None, sample: bool = True) -> None:
        """Run the prompt through the layers in batches; the last batch ends with the head
        and the sampler, which writes the first new token at position start + len(ids)."""
        m = self.m
        self.write_tokens(start, ids)
        pos = start
        for i in range(0, len(ids), m.batch):
            n = min(m.batch, len(ids) - i)
            last = i + n >= len(ids)
            self.gpu.write(m.st, params.state(pos, n, seed))
            progs = [(m.embed, n), (m.prefill, n)]
            if last and sample:
                progs += [(m.head, n), (m.samplers[(params.filtered, params.penalised)], n)]
            run_programs(self.gpu, progs, after=after_last if last else None)
            pos += n

    def time_prefill(self, ids: list[int], params: SamplingParams | None = None) -> float:
        """Wall seconds to process a prompt and sample the first token (synchronised)."""
        params = params or SamplingParams()
        self.gpu.sync()
        t = time.perf_counter()
        self.prefill(ids, 0, params, 0)
        self.gpu.read(self.m.st, 0, 4)
        return time.perf_counter() - t

    def time_decode(self, ids: list[int], n_gen: int, params: SamplingParams | None = None,
                    per_dispatch: bool = False) -> float:
        """Wall seconds for n_gen decode steps after the prompt, one submit per step (or, with
        `per_dispatch`, one submit per dispatch as in the eager pattern); the prompt is
        processed and synchronised first, so only the steps are timed."""
        params = params or SamplingParams()
        m = self.m
        if len(ids) + n_gen + 1 > m.ctx:
            raise UserError(f"{len(ids)} + {n_gen} tokens do not fit the context of {m.ctx}")
        self.prefill(ids, 0, params, 0)
        step = self.step_program(params)
        self.gpu.read(m.st, 0, 4)
        t = time.perf_counter()
        for _ in range(n_gen):
            if per_dispatch:
                step.run_per_dispatch(1)
            else:
                run_programs(self.gpu, [(step, 1)])
        self.gpu.read(m.st, 0, 4)
        return time.perf_counter() - t

    # -- generation ------------------------------------------------------------------------
    def stream(self, ids: list[int], start: int, params: SamplingParams, max_new: int) -> Iterator[int]:
        """Yield up to `max_new` new token ids after prompt `ids` placed at `start`.

        Stop early by closing the iterator (break out of the loop): steps already queued on
        the GPU finish and their tokens are discarded.
        """
        m, gpu = self.m, self.gpu
        params.check()
        if not ids:
            raise UserError("the prompt is empty")
        first = start + len(ids)  # position of the first new token
        if first >= m.ctx:
            raise UserError(f"the prompt has {first} tokens, the context holds {m.ctx}: "
                            "use a larger --ctx or a shorter prompt (or --truncate)")
        max_new = min(max_new, m.ctx - first)
        if max_new <= 0:
            return
        seed = params.resolved_seed()
        step = self.step_program(params)
        pending: deque[tuple[Any, Any, int, int]] = deque()
        st = self.stats = GenStats(prompt_tokens=len(ids))
        next_read = 0  # index of the first generated token not yet copied out
        submitted = 0
        interval = 1
        last_done_t = 0.0
        last_done_n = 0

        def copier(upto: int) -> Any:
            nonlocal next_read
            lo, cnt = next_read, upto - next_read
            buf = self._staging_buffer()
            next_read = upto

            def after(enc: Any) -> None:
                enc.copy_buffer_to_buffer(m.tokens, (first + lo) * 4, buf, 0, cnt * 4)

            return after, buf, lo, cnt

        t0 = time.perf_counter()
        after, buf, lo, cnt = copier(1)
        self.prefill(ids, start, params, seed, after_last=after)
        pending.append((buf.map_async(gpu.mod.MapMode.READ), buf, lo, cnt))
        submitted = 1
        t_first = None
        try:
            while pending or submitted < max_new:
                if pending and (len(pending) >= MAX_PENDING or submitted >= max_new):
                    promise, buf, lo, cnt = pending.popleft()
                    promise.sync_wait()
                    toks = np.frombuffer(buf.read_mapped(0, cnt * 4), np.uint32).tolist()
                    buf.unmap()
                    self._staging.append(buf)
                    now = time.perf_counter()
                    if t_first is None:
                        t_first = now
                        st.prefill_s = now - t0
                    elif now > last_done_t:
                        rate = (lo + cnt - last_done_n) / (now - last_done_t)
                        interval = int(min(MAX_INTERVAL, max(1, rate * TARGET_BATCH_S)))
                    last_done_t, last_done_n = now, lo + cnt
                    for tok in toks:
                        st.generated_tokens += 1
                        st.decode_s = now - t_first
                        yield int(tok)
                    continue
                # encode and submit the next step; copy a batch of tokens out every `interval`
                upto = submitted + 1
                if upto - next_read >= interval or upto == max_new:
                    after, buf, lo, cnt = copier(upto)
                    run_programs(gpu, [(step, 1)], after=after)
                    pending.append((buf.map_async(gpu.mod.MapMode.READ), buf, lo, cnt))
                else:
                    run_programs(gpu, [(step, 1)])
                submitted = upto
        finally:
            st.overshoot = submitted - st.generated_tokens
            for promise, buf, _lo, _cnt in pending:  # let in-flight read-backs land, then recycle
                try:
                    promise.sync_wait()
                    buf.unmap()
                    self._staging.append(buf)
                except Exception:
                    pass
