"""Running a model's Programs: prompts, the decode loop, scoring, profiles.

`Session` is the only code that writes the per-step state and the token buffer and runs the
Programs. Each decode step is one submit of a pre-bound Program (embed, layers, head,
sampler). The sampled token stays on the GPU, where the next step's embedding kernel reads
it, so the CPU never waits for a step before encoding the next one. Tokens come back in
batches through a small ring of mappable buffers; the batch size adapts so that a batch
spans about 20 ms, which bounds both the streaming latency and the work wasted after a stop
condition is seen.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import UserError
from ..kernels.common import STATE_INDEX, STATE_WORDS
from ..kernels.persistent import GIVE_UP
from ..models.config import ModelConfig
from ..runtime.gpu import Gpu, ReadBack
from ..runtime.program import Program, concat, run_each_once, run_programs
from .programs import Programs
from .sampling import SamplingParams
from .settings import Settings, Tuning
from .weights import Tensor, upload_weights

TARGET_BATCH_S = 0.02  # a stream's read-back takes about this long's tokens (Tuning.stream_group at most)
# prompt chunks queued on the GPU at most: Ctrl-C (a closed stream) leaves at most this much
# prompt work behind, and two keep the GPU busy while the CPU queues the next
MAX_PREFILL_INFLIGHT = 2


def check_token_ids(ids: Any, vocab: int, what: str = "the prompt") -> None:
    """UserError naming the first id outside the vocabulary: the kernels index the embedding
    table with them, unchecked where WebGPU's bounds checks are off (GpuOptions.robust)."""
    try:
        a = np.asarray(ids, np.int64).ravel()
        bad = [int(x) for x in a[(a < 0) | (a >= vocab)][:1]]
    except OverflowError:  # past 64 bits
        bad = [next(int(x) for x in ids if not 0 <= int(x) < vocab)]
    if bad:
        raise UserError(f"{what}: token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")


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


class Session:
    """One sequence on one model: its KV cache, state and token buffers live in `programs`."""

    def __init__(self, programs: Programs) -> None:
        self.programs = programs
        self.gpu = programs.gpu
        self._steps: dict[tuple[bool, bool], Program] = {}
        self._staging: list[Any] = []
        # read-backs a stream left in flight when it was stopped (Ctrl-C): it does not wait for
        # them; the next stream does, before it queues work of its own
        self._orphans: list[ReadBack] = []
        self.stats = GenStats()
        self._check_persistent()

    @classmethod
    def build(cls, gpu: Gpu, cfg: ModelConfig, get: Callable[[str], Tensor | None], settings: Settings,
              ctx: int, progress: Callable[[int], None] | None = None) -> Session:
        """Upload a model's weights and build its Programs for `ctx` positions."""
        weights = upload_weights(gpu, cfg, get, progress)
        tuning = settings.tuning_for(gpu, cfg.hidden, cfg.head_dim, cfg.architecture.moe is not None)
        return cls(Programs(gpu, cfg, weights, ctx, settings.prompt_batch(gpu), tuning, settings.fused,
                            settings.kv_f16(weights.all_f32)))

    @property
    def cfg(self) -> ModelConfig:
        return self.programs.cfg

    @property
    def ctx(self) -> int:
        return self.programs.ctx

    @property
    def batch(self) -> int:
        return self.programs.batch

    @property
    def tuning(self) -> Tuning:
        return self.programs.tuning

    def rebuild(self, tuning: Tuning | None = None, fused: bool | None = None) -> None:
        """Build the Programs anew with other kernel shapes or fusion (weights and caches stay)."""
        self.programs.rebuild(tuning, fused)
        self._steps.clear()
        self._check_persistent()

    # -- state -----------------------------------------------------------------------------
    def _state(self, words: np.ndarray) -> None:
        self.gpu.write(self.programs.buf.st, words)

    def write_tokens(self, start: int, ids: list[int]) -> None:
        if start + len(ids) > self.programs.ctx:
            raise UserError(f"{start + len(ids)} tokens do not fit the context of {self.programs.ctx}")
        check_token_ids(ids, self.cfg.vocab)
        self.gpu.write(self.programs.buf.tokens, np.asarray(ids, np.uint32), start * 4)

    def _sync_state(self) -> None:
        """Wait for the submitted steps (a read of the state, which the sampler writes last)."""
        self.gpu.read(self.programs.buf.st, 0, 4)

    def step_program(self, params: SamplingParams) -> Program:
        """One decode step: layers, head and the sampler these settings need."""
        m = self.programs
        key = (params.filtered, params.penalised)
        step = self._steps.get(key)
        if step is None or step.dispatches[0] is not m.decode.dispatches[0]:  # (Programs rebuilt)
            step = self._steps[key] = concat(self.gpu, "step", m.decode, m.head, m.samplers[key])
        return step

    def _staging_buffer(self) -> Any:
        """A MAP_READ buffer for a read-back of up to Tuning.stream_group tokens."""
        size = 16 * max(4, self.programs.tuning.stream_group)
        while self._staging:
            buf = self._staging.pop()
            if buf.size >= size:
                return buf
        u = self.gpu.usage
        return self.gpu.device.create_buffer(size=size, usage=u.MAP_READ | u.COPY_DST)

    # -- prompt ----------------------------------------------------------------------------
    def prefill(self, ids: list[int], start: int, params: SamplingParams, seed: int,
                after_last: Any = None, sample: bool = True) -> int | None:
        """Run the prompt through the layers in batches; the last batch ends with the head
        and the sampler, which writes the first new token at position start + len(ids).
        At most MAX_PREFILL_INFLIGHT batches are queued at a time, so that a long prompt can
        be stopped between batches. The last batch's submission (`Gpu.submit`'s index)."""
        m = self.programs
        self.write_tokens(start, ids)
        pos = start
        index = None
        fences: deque[ReadBack] = deque()
        try:
            for i in range(0, len(ids), m.batch):
                n = min(m.batch, len(ids) - i)
                last = i + n >= len(ids)
                if len(fences) >= MAX_PREFILL_INFLIGHT:
                    self._recycle(fences.popleft())
                self._state(params.state(pos, n, seed))
                progs = [(m.embed, n), (m.prefill_for(n), n)]
                if last and sample:
                    progs += [(m.head, n), (m.samplers[(params.filtered, params.penalised)], n)]
                fence = None if last or len(ids) <= m.batch * MAX_PREFILL_INFLIGHT else self._staging_buffer()
                copy = after_last if last else None
                if fence is not None:
                    def copy(enc: Any, fence: Any = fence) -> None:  # the batch is done when this copy is
                        enc.copy_buffer_to_buffer(m.buf.st, 0, fence, 0, 16)
                index = run_programs(self.gpu, progs, after=copy)
                if fence is not None:
                    fences.append(ReadBack(self.gpu, fence, index))
                pos += n
        finally:
            self._orphans.extend(fences)
        return index

    def _recycle(self, rb: ReadBack) -> None:
        """Wait for a read-back buffer's mapping and put the buffer back in the pool."""
        rb.wait().unmap()
        self._staging.append(rb.buf)

    def _collect_orphans(self) -> None:
        """Wait for the read-backs a stopped stream left in flight (the GPU runs the work queued
        before them first anyway)."""
        while self._orphans:
            self._recycle(self._orphans[0])
            self._orphans.pop(0)

    def warm_up(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Run every kernel of the Programs once on one token, so that drivers that compile
        at first use (llvmpipe, some GPU drivers) do it here rather than inside a timed
        prompt; `progress(done, total)` after each kernel. The buffers it writes are
        written again before they are read."""
        m = self.programs
        self._state(SamplingParams().state(0, 1, 0))
        self.write_tokens(0, [0])
        progs = [m.embed, *m.prefills, m.head, *m.samplers.values(), m.decode, m.score_norm,
                 *m.score_chunks[:1]]
        assert all(p is not None for p in progs)
        run_each_once(self.gpu, progs, 1, progress)
        self._state(SamplingParams().state(0, 1, 0))

    def next_logits(self, ids: list[int], token: int | None = None) -> np.ndarray:
        """The logits of the decode step after prompt `ids`, with `token` as the step's input
        (default: the prompt's greedy token)."""
        self.prefill(ids, 0, SamplingParams(), 0)
        if token is not None:  # over the sampler's choice, which the queue wrote before it
            self.write_tokens(len(ids), [token])
        self.step_program(SamplingParams()).run(1)
        return self.gpu.read_array(self.programs.buf.logits, np.float32, self.cfg.vocab)

    def time_prefill(self, ids: list[int], params: SamplingParams | None = None) -> float:
        """Wall seconds to process a prompt and sample the first token (synchronised)."""
        params = params or SamplingParams()
        self.gpu.sync()
        t = time.perf_counter()
        self.prefill(ids, 0, params, 0)
        self._sync_state()
        return time.perf_counter() - t

    def time_decode(self, ids: list[int], n_gen: int, params: SamplingParams | None = None,
                    per_dispatch: bool = False) -> float:
        """Wall seconds for n_gen decode steps after the prompt, one submit per step (or, with
        `per_dispatch`, one submit per dispatch as in the eager pattern); the prompt is
        processed and synchronised first, so only the steps are timed."""
        params = params or SamplingParams()
        if len(ids) + n_gen + 1 > self.ctx:
            raise UserError(f"{len(ids)} + {n_gen} tokens do not fit the context of {self.ctx}")
        self.prefill(ids, 0, params, 0)
        step = self.step_program(params)
        self._sync_state()
        t = time.perf_counter()
        for _ in range(n_gen):
            if per_dispatch:
                step.run_per_dispatch(1)
            else:
                run_programs(self.gpu, [(step, 1)])
        self._sync_state()
        return time.perf_counter() - t

    # -- generation ------------------------------------------------------------------------
    def stream(self, ids: list[int], start: int, params: SamplingParams, max_new: int) -> Iterator[int]:
        """Yield up to `max_new` new token ids after prompt `ids` placed at `start`.

        Stop early by closing the iterator (break out of the loop): steps already queued on
        the GPU finish and their tokens are discarded.
        """
        groups = self.stream_groups(ids, start, params, max_new)
        taken, before = 0, self.stats
        try:
            for group in groups:
                for tok in group:
                    taken += 1
                    yield tok
        finally:
            groups.close()
            st = self.stats
            if st is not before and st.generated_tokens > taken:  # a group's tail was not taken
                st.overshoot += st.generated_tokens - taken
                st.generated_tokens = taken

    def stream_groups(self, ids: list[int], start: int, params: SamplingParams, max_new: int) -> Iterator[list[int]]:
        """As `stream`, the new token ids in the groups the GPU hands them back in (one
        read-back each, up to Tuning.stream_group tokens): a consumer with work per hand-over (a
        server's event per stream) does it once a group, not once a token."""
        m, gpu = self.programs, self.gpu
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
        self._collect_orphans()
        pending: deque[tuple[ReadBack, int, int]] = deque()
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
                enc.copy_buffer_to_buffer(m.buf.tokens, (first + lo) * 4, buf, 0, cnt * 4)

            return after, buf, lo, cnt

        t0 = time.perf_counter()
        after, buf, lo, cnt = copier(1)
        pending.append((ReadBack(gpu, buf, self.prefill(ids, start, params, seed, after_last=after)), lo, cnt))
        submitted = 1
        t_first = None
        try:
            while pending or submitted < max_new:
                if pending and (len(pending) >= m.tuning.stream_readbacks or submitted >= max_new):
                    rb, lo, cnt = pending[0]
                    buf = rb.wait()
                    pending.popleft()
                    toks = np.frombuffer(buf.read_mapped(0, cnt * 4), np.uint32).tolist()
                    buf.unmap()
                    self._staging.append(buf)
                    now = time.perf_counter()
                    if t_first is None:
                        t_first = now
                        st.prefill_s = now - t0
                    elif now > last_done_t:
                        rate = (lo + cnt - last_done_n) / (now - last_done_t)
                        interval = int(min(m.tuning.stream_group, max(1, rate * TARGET_BATCH_S)))
                    last_done_t, last_done_n = now, lo + cnt
                    st.generated_tokens += len(toks)
                    st.decode_s = now - t_first
                    yield toks
                    continue
                # encode and submit the next step; copy a batch of tokens out every `interval`
                upto = submitted + 1
                if upto - next_read >= interval or upto == max_new:
                    after, buf, lo, cnt = copier(upto)
                    pending.append((ReadBack(gpu, buf, run_programs(gpu, [(step, 1)], after=after)), lo, cnt))
                else:
                    run_programs(gpu, [(step, 1)])
                submitted = upto
        finally:
            # the read-backs still in flight are not waited for here (a stop must answer at
            # once, also in a long prompt): the next stream collects them
            st.overshoot = submitted - st.generated_tokens
            self._orphans.extend(rb for rb, _lo, _cnt in pending)

    # -- scoring ---------------------------------------------------------------------------
    def score(self, ids: list[int], want_logits: bool) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """Run `ids` from an empty cache in prompt batches; yield (first token, tokens, logits)
        per LM-head chunk with `want_logits`, else (first token, tokens, None) per batch, the
        batch's NLL then in `read_nll`."""
        m, g = self.programs, self.gpu
        if len(ids) > m.ctx:
            raise UserError(f"{len(ids)} tokens do not fit the context of {m.ctx}")
        self.write_tokens(0, ids)
        rows_per_chunk = m.buf.score_rows
        for b0 in range(0, len(ids), m.batch):
            n = min(m.batch, len(ids) - b0)
            self._state(SamplingParams().state(b0, n, 0, limit=len(ids)))
            chunks = [c for i, c in enumerate(m.score_chunks) if i * rows_per_chunk < n]
            if not want_logits:
                run_programs(g, [(m.embed, n), (m.tiled_for(n), n), (m.score_norm, n)] + [(c, n) for c in chunks])
                yield b0, n, None
                continue
            run_programs(g, [(m.embed, n), (m.tiled_for(n), n), (m.score_norm, n)])
            for i, c in enumerate(chunks):
                run_programs(g, [(c, n)])
                rows = min(rows_per_chunk, n - i * rows_per_chunk)
                yield b0 + i * rows_per_chunk, rows, g.read_array(m.buf.logits, np.float32, rows * self.cfg.vocab)

    def read_nll(self, n: int) -> np.ndarray:
        """The NLL of the last scored batch's first n positions."""
        return self.gpu.read_array(self.programs.buf.nll, np.float32, n)

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits (len(ids), vocab) of a token sequence, from an empty cache."""
        out = np.empty((len(ids), self.cfg.vocab), np.float32)
        for t0, rows, block in self.score(ids, True):
            assert block is not None
            out[t0:t0 + rows] = block.reshape(rows, -1)
        return out

    def nll(self, ids: list[int]) -> np.ndarray:
        """Negative log-likelihood of ids[1:] given the prefix, from an empty cache (float64)."""
        out = np.zeros(max(0, len(ids) - 1), np.float64)
        for b0, n, _ in self.score(ids, False):
            got = self.read_nll(n)
            k = min(n, len(ids) - 1 - b0)
            out[b0:b0 + k] = got[:k]
        return out

    # -- persistent decode layers ----------------------------------------------------------
    def _check_persistent(self) -> None:
        """Where the decode layers are persistent, check them on the device and fall back to
        one dispatch per kernel where they cannot be used (Programs.persist_note says why)."""
        m = self.programs
        if not (m.fused and m.tuning.persist):
            return
        why = self._persistent_mismatch()
        if why:
            m.no_persist(why)
            self._steps.clear()

    def _persistent_mismatch(self) -> str:
        """Run the decode layers persistent and as their stages one dispatch each, from the
        same state: why the persistent ones cannot be used here ("" if they can). Their
        barriers must all complete (every workgroup resident), and their residual must be the
        stages' own: the hand-offs between workgroups rely on behaviour that WGSL does not
        promise."""
        m, g, n = self.programs, self.gpu, self.cfg.hidden
        # one token at the next position (its KV row is the next to be written anyway); the
        # state is put back after
        saved = g.read_array(m.buf.st, np.uint32, STATE_WORDS)
        one = saved.copy()
        one[STATE_INDEX["n"]] = 1
        self._state(one)
        try:
            assert m.decode is not None
            m.decode.run()
            if int(g.read_array(m.buf.sync, np.uint32, 1, GIVE_UP * 4)[0]):
                return f"the persistent decode's barrier gave up with {m.tuning.persist} workgroups (not all resident)"
            got = g.read_array(m.buf.h, np.float32, n)
            m.decode_program("stages").run()
            want = g.read_array(m.buf.h, np.float32, n)
        finally:
            self._state(saved)
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        if not err < 1e-5:  # the same arithmetic: only a stale hand-off differs (NaN included)
            return f"the persistent decode's layers differ from the per-kernel ones (relative error {err:.1e})"
        return ""

    def persist_agreement(self, prompt: list[int], n: int) -> int:
        """Leading greedy tokens that the persistent decode shares with the per-dispatch one."""
        got = list(self.stream(prompt, 0, SamplingParams(), n))
        groups = self.tuning.persist
        self.rebuild(replace(self.tuning, persist=0))
        want = list(self.stream(prompt, 0, SamplingParams(), n))
        self.rebuild(replace(self.tuning, persist=groups))
        return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))

    # -- profiles --------------------------------------------------------------------------
    def prefill_gpu_seconds(self, n: int, reps: int = 5) -> float:
        """GPU seconds of an n-token prompt through the layers (embedding, head excluded)."""
        self._state(SamplingParams().state(0, n, 0))
        return self.programs.tiled_for(n).time_gpu(n, reps=reps)

    def profile_prefill(self, n: int) -> dict[str, Any]:
        """Where the layers of an n-token prompt spend their GPU time (embedding, head excluded)."""
        gpu_s = self.prefill_gpu_seconds(n)
        return {"tokens": n, "gpu_us": gpu_s * 1e6, "layers_tok_s": n / gpu_s,
                "kernels": self.programs.tiled_for(n).profile_by_label(n)}

    def step_kernels(self, prompt: list[int]) -> list[dict[str, Any]]:
        """GPU time of a greedy decode step after `prompt`, per kernel label (timestamps)."""
        self.prefill(prompt, 0, SamplingParams(), 0)
        return self.step_program(SamplingParams()).profile_by_label(1)

    def step_gpu_seconds(self, prompt: list[int], reps: int = 5) -> float:
        """GPU seconds of a greedy decode step after `prompt` (timestamps)."""
        self.prefill(prompt, 0, SamplingParams(), 0)
        return self.step_program(SamplingParams()).time_gpu(1, reps=reps)

    def profile_step(self, prompt: list[int], weight_bytes: int) -> dict[str, Any]:
        """Where a decode step's time goes: CPU encode, GPU total, GPU per kernel, bandwidth
        (of `weight_bytes` read a token)."""
        step = self.step_program(SamplingParams())
        self.prefill(prompt, 0, SamplingParams(), 0)
        res: dict[str, Any] = {"dispatches": len(step), "cpu_encode_us": step.time_encode(1) * 1e6}
        if self.gpu.has_timestamps:
            gpu_s = step.time_gpu(1, reps=10)
            res.update({
                "gpu_us": gpu_s * 1e6,
                "weight_bytes": weight_bytes,
                "bandwidth_gb_s": weight_bytes / gpu_s / 1e9,
                "kernels": step.profile_by_label(1),
            })
        return res
