"""Continuous batching: several sequences prefill and decode in one step, on shared weights.

Each sequence holds a slot (`kernels.common.Slots`): its token history, and in every layer
the pages of KV cache its length needs, from a pool shared by all (a request is admitted when
its prompt and token budget fit in the free pages, so the cache's memory follows what the
requests ask for, not `parallel` x the context). A step is one submit of one
Program over a batch of rows: every decoding sequence's next token, and the next chunk of a
prompt being prefilled (so running streams keep flowing while a new prompt is processed).
The CPU writes three small tables per step: the rows (position, slot), the attention's query
blocks (consecutive rows of one sequence) and the rows to sample from; each weight is read
once per step for all of them (the prompt matmuls), attention reads each sequence's own
cache, and each sequence samples with its own settings and seed on the GPU, appending its
token to its history, where the next step's embedding reads it. The sampled tokens come back
through mapped buffers a few steps behind, where stops, budgets and cancellations are seen;
steps already queued for a finished sequence are discarded. `scheduler()` makes this
scheduler for several sequences, the serial one for one.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import UserError
from ..kernels import attention as att
from ..kernels import sampling
from ..kernels.common import PAGE, STATE_WORDS, Slots, pack_state
from ..kernels.linear import LinearSpec
from ..kernels.rows import embed_kernel, rmsnorm_kernel
from ..models.config import ModelConfig
from ..runtime.gpu import Gpu, ReadBack
from ..runtime.program import Program, concat, run_each_once
from .programs import ExpertBuffers, Programs, kv_cache_bytes
from .sampling import SamplingParams
from .scheduler import Completion, Outbox, Scheduler, SerialScheduler
from .session import Session
from .settings import STEP_ROWS, Tuning
from .weights import ModelWeights

LP_WIDTH = 1 + 2 * sampling.TOP_LOGPROBS  # floats of a sampled row's log-probabilities


def thin_level(rows: int, tuning: Tuning) -> int:
    """How a step of `rows` rows runs its linear layers: one row (one stream decoding) on the
    one-sequence decode's mat-vecs (1); at most `tuning.thin_rows` (a decode step of that many
    sequences) on thin matmuls of `tuning.thin_tokens` rows a pass over the weights; more, on
    the prompt matmuls (0), whose 64-token tiles would be mostly empty for a few rows."""
    return 1 if rows == 1 and tuning.batch_one_row else tuning.thin_tokens if rows <= tuning.thin_rows else 0


@dataclass
class BatchBuffers:
    st: Any  # n = the step's rows (what the layers' kernels read)
    st_s: Any  # n = the step's sampled rows (the head's and the sampler's)
    rows: Any  # per row: (position, slot)
    blocks: Any  # per attention query block: (first row, rows, slot, position of the first row)
    samples: Any  # per sampled row: (row, slot, position, 0)
    slot_states: Any  # per slot: its sampling settings and draw counter (a State)
    tokens: Any  # per slot: its token history (Slots.token_stride words)
    h: Any
    xn: Any
    q: Any
    att: Any
    act: Any
    kpart: Any
    xs: Any  # the sampled rows, normed
    logits: Any  # per sampled row
    part: Any
    cand: Any
    stats: Any
    ml: Any  # a one-row step's split-K attention partials (max, sum), per head and split
    acc: Any  # and their weighted values
    sampled: Any  # per sampled row: the token
    lp: Any  # per sampled row: log-probabilities (kernels/sampling.py logprob_kernel)
    pages: Any  # per slot: its KV pages, in position order (Slots.max_pages entries)
    kv: list[Any]  # per layer: the pool of KV pages (Slots)
    qkv: Any = None  # a QKV projection's raw rows, for the per-head q/k norms (qk_norm)
    experts: ExpertBuffers | None = None  # a mixture of experts' (its rows are the step's rows)

    @classmethod
    def alloc(cls, g: Gpu, c: ModelConfig, slots: Slots, rows: int, kv_f16: bool = False, chunk: int = 16,
              per_slot: bool = False) -> BatchBuffers:
        """`chunk`: keys a split-K attention split takes; `per_slot`: its partials for every
        slot (Tuning.batch_split_keys), else for the one row of a one-row step."""
        S, T = slots.count, rows
        parts = (S if per_slot else 1) * c.n_heads * -(-slots.ctx // chunk)
        nwg = sampling.scan_workgroups(c.vocab)
        return cls(
            st=g.buffer(STATE_WORDS * 4, "batch_state"), st_s=g.buffer(STATE_WORDS * 4, "batch_sample_state"),
            rows=g.buffer(T * 8, "batch_rows"), blocks=g.buffer((T + S) * 16, "batch_blocks"),
            samples=g.buffer(S * 16, "batch_samples"), slot_states=g.buffer(S * STATE_WORDS * 4, "slot_states"),
            tokens=g.buffer(S * slots.token_stride * 4, "slot_tokens"),
            h=g.buffer(T * c.hidden * 4, "residual"), xn=g.buffer(T * max(c.hidden, c.q_dim) * 4, "normed"),
            q=g.buffer(T * c.q_dim * 4, "q"), att=g.buffer(T * c.q_dim * 4, "attn_out"),
            act=g.buffer(T * c.intermediate * 4, "ffn_act"), kpart=g.buffer(T * c.hidden * 4, "split_k_partials"),
            xs=g.buffer(S * c.hidden * 4, "sampled_rows"), logits=g.buffer(S * c.vocab * 4, "logits"),
            part=g.buffer(S * nwg * 8, "sample_part"), cand=g.buffer(S * nwg * sampling.CAND * 8, "sample_cand"),
            stats=g.buffer(S * nwg * 8, "sample_stats"), sampled=g.buffer(S * 4, "sampled"),
            ml=g.buffer(parts * 8, "attn_ml"),
            acc=g.buffer(parts * c.head_dim * 4, "attn_acc"),
            lp=g.buffer(S * LP_WIDTH * 4, "logprobs"),
            pages=g.buffer(S * slots.max_pages * 4, "kv_page_table"),
            kv=[g.buffer(kv_cache_bytes(c, slots.pool * PAGE, kv_f16), f"blk.{i}.kv_pages") for i in range(c.n_layers)],
            qkv=g.buffer(T * (c.q_dim + 2 * c.kv_dim) * 4, "qkv_rows") if c.architecture.qk_norm else None,
            experts=ExpertBuffers.alloc(g, c.hidden, c.architecture.moe, T) if c.architecture.moe else None,
        )


class BatchPrograms(Programs):
    """The step Programs of a batch of sequences in `slots` slots of up to `ctx` positions
    sharing `kv_tokens` positions of KV cache (None: enough for every slot's whole context),
    at most `max_rows` rows a step, on the weights of a loaded model. A step Program's n is the
    tuple (rows, attention blocks, sampled rows)."""

    def __init__(self, gpu: Gpu, cfg: ModelConfig, weights: ModelWeights, slots: int, ctx: int, max_rows: int,
                 tuning: Tuning, kv_f16: bool = False, kv_tokens: int | None = None) -> None:
        if kv_tokens is not None and kv_tokens < PAGE:
            raise UserError(f"--kv-tokens {kv_tokens}: the KV cache needs at least {PAGE} positions")
        self._bookkeeping(gpu, cfg, weights, ctx, tuning, True, kv_f16)
        self.slots = Slots(slots, ctx, -(-kv_tokens // PAGE) if kv_tokens else 0)
        self.batch = max(max_rows, slots)
        self.buf: Any = BatchBuffers.alloc(gpu, cfg, self.slots, self.batch, kv_f16, tuning.attn_chunk,
                                           tuning.batch_split_keys)
        # the int8 tiles' inputs are sized for one sequence's batches; the f16 tiles need none
        self.mma_usable, self.int8_tiles = False, False
        self._build()

    def _build(self) -> None:
        self.shared_bytes = self.gpu.limits["max-compute-workgroup-storage-size"]
        self.fit_partials()
        self._steps: dict[tuple[int, int, bool, bool, bool, bool, bool], Program] = {}
        b = self.buf
        self.advance = Program(self.gpu, "batch_advance")  # the tables one position on (Tuning.batch_steps)
        self.advance.add(sampling.advance_kernel(), {"st": b.st, "rows": b.rows, "blocks": b.blocks, "samples": b.samples},
                         lambda n: (-(-n[0] // sampling.ADVANCE_WG), 1, 1))

    def step(self, rows: int, samples: int, filtered: bool, penalty: bool, logprobs: bool = False,
             decode_only: bool = False) -> Program:
        """The step Program for this many rows and sampled rows: mat-vecs for one, thin
        matmuls where they are few, the tiled prompt matmuls otherwise (`thin_level`); with
        `logprobs`, the sampled rows' log-probabilities too; `decode_only` (every block one
        row: no prompt rows), without the prompt attention where split-K attention takes
        those rows (Tuning.batch_split_keys); made on first use."""
        t = self.tuning
        thin = thin_level(rows, t)
        key = (thin, thin_level(samples, t), filtered or logprobs, penalty, logprobs,
               decode_only and thin != 1 and t.batch_split_keys, thin > 1 and bool(t.batch_splits_few)
               and rows <= t.few_rows)
        prog = self._steps.get(key)
        if prog is None:
            prog = self._steps[key] = concat(self.gpu, "batch_step", self._layers(thin, key[5], key[6]),
                                             self._head(key[1]), self._sampler(key[2], penalty, logprobs))
        return prog

    def warm_up(self) -> None:
        """Build the step Programs the steps of a server take (one stream decoding, several,
        prompts among them, past few_rows and thin_rows, each with and without a filtering
        sampler), and run each of their kernels once on one row (slot 0, position 0, which a
        request writes again before it reads), so that their pipelines compile now, also on
        drivers that compile at first use, rather than in the first requests' time to first
        token."""
        t = self.tuning
        sizes = sorted({1, min(2, self.batch), min(t.few_rows, self.batch), min(t.few_rows + 1, self.batch),
                        min(t.thin_rows, self.batch), min(t.thin_rows + 1, self.batch)})
        todo = {(r, s, filtered, s == r and r > 1) for r in sizes for s in sizes if s <= r for filtered in (False, True)}
        todo |= {(r, s, f, False) for r, s, f, d in todo if d}  # a step of prompt rows sampling each of its rows
        for r, s, filtered, decode_only in sorted(todo):
            self.step(r, s, filtered, False, decode_only=decode_only)
        g, b = self.gpu, self.buf
        g.write(b.st, pack_state(n=1, pos=0))
        g.write(b.st_s, pack_state(n=1))
        g.write(b.rows, np.zeros(2, np.uint32))
        g.write(b.blocks, np.asarray([0, 1, 0, 0], np.uint32))
        g.write(b.samples, np.zeros(4, np.uint32))
        run_each_once(g, [*self._steps.values(), self.advance], (1, 1, 1))

    def _layers(self, thin: int, decode_only: bool = False, few: bool = False) -> Program:
        g, c, b, w = self.gpu, self.cfg, self.buf, self.weights
        base = {"st": b.st, "tokens": b.tokens}
        emb = w.embedding
        layers = Program(g, "batch_layers")
        layers.add(embed_kernel(LinearSpec(k=c.hidden, segments=emb.segments), self.slots, c.architecture.embed_scale),
                   {**base, **emb.bindings(), "rows": b.rows, "x": b.h}, lambda n: (n[0], 1, 1))
        self.prompt_layers(layers, base, b.kv, self.slots, rows_of=lambda n: n[0], blocks_of=lambda n: n[1],
                           tables={"rows": b.rows, "blocks": b.blocks, "pages": b.pages}, thin=thin,
                           decode_only=decode_only, few=few)
        return layers

    def _head(self, thin: int) -> Program:
        g, c, b, w = self.gpu, self.cfg, self.buf, self.step_weights(thin)
        head = Program(g, "batch_head")
        head.add(rmsnorm_kernel(c.hidden, c.rms_eps, 0, gather=True),
                 {"st": b.st_s, "samples": b.samples, "pv": w.output_norm, "x": b.h, "y": b.xs}, lambda n: (n[2], 1, 1))
        s_head = self.spec(w.lm_head, softcap=c.architecture.final_softcap)
        bind = {"st": b.st_s, **w.lm_head.bindings(), "x": b.xs, "y": b.logits}
        self._add_mm(head, s_head, "head", bind, count=lambda n: n[2], thin=thin)
        return head

    def mm_path(self, spec: LinearSpec) -> str:
        """As the one sequence's, but the int8 tiles are not offered (their inputs are sized
        for one sequence's batches) and Tuning.batch_tiles puts every format on the f16 tiles."""
        return "f16" if self._batch_tiles(spec) else super().mm_path(spec)

    def _sampler(self, filtered: bool, penalty: bool, logprobs: bool = False) -> Program:
        g, c, b = self.gpu, self.cfg, self.buf
        nwg = sampling.scan_workgroups(c.vocab)
        sb = {"samples": b.samples, "slots": b.slot_states, "tokens": b.tokens, "logits": b.logits, "part": b.part,
              "cand": b.cand, "stats": b.stats, "sampled": b.sampled, "lp": b.lp}
        per_sample = lambda n: (n[2], 1, 1)  # noqa: E731
        scan_grid = lambda n: (nwg, n[2], 1)  # noqa: E731
        sp = Program(g, "batch_sampler")
        if penalty:
            sp.add(sampling.penalty_kernel(c.vocab, self.slots), sb, per_sample)
        sp.add(sampling.scan_kernel(c.vocab, False, self.slots), sb, scan_grid)
        if filtered:  # the fast scan serves the slots that need no filter
            sp.add(sampling.scan_kernel(c.vocab, True, self.slots), sb, scan_grid)
        sp.add(sampling.pick_kernel(c.vocab, filtered, self.slots), sb, per_sample)
        if logprobs:
            sp.add(sampling.logprob_kernel(c.vocab), sb, per_sample)
        return sp


def pages_for(prompt: int, budget: int) -> int:
    """KV pages a sequence needs: its prompt's positions and those of the tokens it samples
    but the last (which no step reads back in)."""
    return -(-(prompt + budget - 1) // PAGE)


def admission_pages(prompt: int, max_tokens: int | None, ctx: int) -> int:
    """The pages a request is admitted with: those of its prompt and max_tokens (in the
    context), or without max_tokens those of its prompt and first token (it takes the rest
    as it goes)."""
    room = ctx - prompt
    return pages_for(prompt, min(2, room) if max_tokens is None else min(max_tokens, room))


def check_pages(prompt: int, max_tokens: int | None, ctx: int, pool: int) -> None:
    """A UserError where a request could never be admitted to a KV cache of `pool` pages."""
    need = admission_pages(prompt, max_tokens, ctx)
    if need > pool:
        raise UserError(f"the prompt ({prompt} tokens) and max_tokens need {need * PAGE} positions of KV "
                        f"cache; it holds {pool * PAGE} (lower max_tokens, or serve with a larger --kv-tokens)")


@dataclass
class _Seq:
    c: Completion
    slot: int
    budget: int  # tokens it may sample
    pages: list[int]  # its KV pages, in position order
    grows: bool = False  # no max_tokens: pages taken as it goes, until none is free
    prefilled: int = 0  # prompt tokens submitted
    submitted: int = 0  # samples submitted
    received: int = 0  # samples read back
    finished: bool = False

    @property
    def prompt(self) -> int:
        return len(self.c.ids)


@dataclass
class _Step:
    """A submitted step: its read-back and the sequences its samples belong to, in order."""

    read: ReadBack | None  # None: the step sampled nothing
    buf: Any
    seqs: list[_Seq]
    logprobs: bool = False  # the step computed its sampled rows' log-probabilities
    sub: int = 1  # decode steps in the submit (Tuning.batch_steps), their samples one after another
    at: float = field(default_factory=time.perf_counter)


class BatchScheduler(Scheduler):
    """A `Scheduler` whose engine thread decodes up to `parallel` sequences in every step
    (continuous batching), each new prompt prefilled in chunks of at most `max_rows` rows
    shared with the running sequences' decode rows."""

    supports_logprobs = True

    @property
    def kv_tokens(self) -> tuple[int, int]:
        """KV-cache positions the admitted requests hold (whole pages), and the positions there are."""
        pool = self.programs.slots.pool
        return (pool - len(self._free_pages)) * PAGE, pool * PAGE

    def __init__(self, programs: BatchPrograms, max_queue: int = 256) -> None:
        self.programs = programs
        self._free = list(range(programs.slots.count))[::-1]
        self._free_pages = list(range(programs.slots.pool))[::-1]
        self._seqs: list[_Seq] = []
        self._inflight: deque[_Step] = deque()
        self._staging: list[Any] = []
        super().__init__(programs.ctx, parallel=programs.slots.count, max_queue=max_queue,
                         vocab=programs.cfg.vocab)

    # -- admission -------------------------------------------------------------------------
    def check(self, ids: list[int], params: SamplingParams, max_tokens: int | None,
              logprobs: int | None = None) -> None:
        super().check(ids, params, max_tokens, logprobs)
        check_pages(len(ids), max_tokens, self.ctx, self.programs.slots.pool)

    def _admit(self) -> None:
        """Requests in order while a slot is free and their KV pages fit (the first that does
        not waits for running ones to finish, and those behind it with it): those of the
        prompt and max_tokens, or without max_tokens those of the prompt and its first token
        (it takes more as it goes, and ends, "length", when none is free)."""
        m = self.programs
        with self._cv:
            while self._waiting and self._free:
                c = self._waiting[0]
                if c.cancelled:
                    self._waiting.popleft()
                    c._finish("cancelled")
                    self.stats.finished += 1
                    continue
                need = admission_pages(len(c.ids), c.max_tokens, m.ctx)
                if need > len(self._free_pages):
                    return
                self._waiting.popleft()
                slot = self._free.pop()
                pages = [self._free_pages.pop() for _ in range(need)]
                self._active.append(c)
                s = _Seq(c, slot, c.budget(m.ctx), pages, grows=c.max_tokens is None)
                self._seqs.append(s)
                self.stats.prompt_tokens += len(c.ids)
                g = m.gpu
                g.write(m.buf.pages, np.asarray(pages, np.uint32), slot * m.slots.max_pages * 4)
                g.write(m.buf.tokens, np.asarray(c.ids, np.uint32), slot * m.slots.token_stride * 4)
                g.write(m.buf.slot_states, c.params.state(0, 0, c.params.resolved_seed()), slot * STATE_WORDS * 4)

    def _release(self, s: _Seq, reason: str, error: str | None = None, outbox: Outbox | None = None) -> None:
        if s.finished:
            return
        s.finished = True
        s.c._finish(reason, error, outbox)
        with self._cv:
            self._seqs.remove(s)
            self._active.remove(s.c)
            self._free.append(s.slot)
            self._free_pages += s.pages[::-1]
            self.stats.finished += 1

    # -- the engine thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._admit()
            for s in [s for s in self._seqs if s.c.cancelled]:
                self._release(s, "cancelled")
            plan = self._plan()
            if plan is None:
                if self._inflight:
                    self._collect_or_fail()
                    continue
                with self._cv:
                    if not self._waiting:
                        if self._stopping and not self._seqs:
                            return
                        self._cv.wait(timeout=0.05)
                continue
            try:
                self._submit(*plan, sub=self._substeps(*plan))
            except Exception as e:  # the step failed: its sequences fail, the engine goes on
                self._fail_all(e)
                continue
            while len(self._inflight) >= self.programs.tuning.batch_inflight:
                self._collect_or_fail()

    def _fail_all(self, e: Exception) -> None:
        """Every running sequence ends with `e` as its error, the steps in flight dropped."""
        for s in list(self._seqs):
            self._release(s, "error", f"{type(e).__name__}: {e}")
        self._inflight.clear()

    def _collect_or_fail(self) -> None:
        """The oldest step in flight collected; where that fails, every running sequence ends
        with the error (the engine thread goes on: nothing waits forever on a dead one)."""
        try:
            self._collect(self._inflight.popleft())
        except Exception as e:
            self._fail_all(e)

    def _plan(self) -> tuple[list[tuple[int, int]], list[tuple[int, int, int, int]], list[tuple[int, int, int]],
                             list[_Seq], tuple[bool, bool, bool]] | None:
        """The next step's rows, query blocks and sampled rows (None: nothing to do now)."""
        m = self.programs
        rows: list[tuple[int, int]] = []
        blocks: list[tuple[int, int, int, int]] = []
        samples: list[tuple[int, int, int]] = []
        owners: list[_Seq] = []
        for s in list(self._seqs):  # decode rows: the token sampled last goes in at its position
            if s.prefilled == s.prompt and 0 < s.submitted < s.budget:
                pos = s.prompt + s.submitted - 1
                if pos // PAGE >= len(s.pages) and not self._grow(s):
                    continue
                blocks.append((len(rows), 1, s.slot, pos))
                samples.append((len(rows), s.slot, pos))
                rows.append((pos, s.slot))
                owners.append(s)
        for s in self._seqs:  # prompt rows, in the room the decode rows leave
            room = m.batch - len(rows)
            if s.prefilled == s.prompt or room <= 0:
                continue
            n = min(room, s.prompt - s.prefilled)
            for b0 in range(0, n, att.BQ):
                blocks.append((len(rows) + b0, min(att.BQ, n - b0), s.slot, s.prefilled + b0))
            rows += [(s.prefilled + i, s.slot) for i in range(n)]
            s.prefilled += n
            if s.prefilled == s.prompt:  # the prompt's last row gives the first token
                samples.append((len(rows) - 1, s.slot, s.prompt - 1))
                owners.append(s)
        if not rows:
            return None
        key = (any(o.c.params.filtered for o in owners), any(o.c.params.penalised for o in owners),
               any(o.c.logprobs is not None for o in owners))
        return rows, blocks, samples, owners, key

    def _substeps(self, rows: list[tuple[int, int]], blocks: list[Any], samples: list[Any], owners: list[_Seq],
                  key: tuple[bool, bool, bool]) -> int:
        """Decode steps this plan may run in one submit (Tuning.batch_steps): only running
        streams' decode rows (each its own block and sample), no log-probabilities, nobody
        waiting for a free slot, and every stream's budget and KV pages covering them."""
        n = self.programs.tuning.batch_steps
        if n <= 1 or key[2] or not (len(rows) == len(blocks) == len(samples) == len(owners)):
            return 1
        with self._cv:
            if self._waiting and self._free:
                return 1
        for s in owners:
            if s.submitted == 0 or s.prefilled != s.prompt:  # a prompt's last row: its first token
                return 1
            pos = s.prompt + s.submitted - 1
            n = min(n, s.budget - s.submitted, len(s.pages) * PAGE - pos)
        return max(1, n)

    def _grow(self, s: _Seq) -> bool:
        """A page more for a sequence without max_tokens; where none is free, its budget ends
        at the tokens already asked for."""
        m = self.programs
        with self._cv:
            if s.grows and self._free_pages:
                s.pages.append(self._free_pages.pop())
                m.gpu.write(m.buf.pages, np.asarray(s.pages[-1:], np.uint32),
                            (s.slot * m.slots.max_pages + len(s.pages) - 1) * 4)
                return True
        s.budget = s.submitted
        if s.received >= s.budget:
            self._release(s, "length")
        return False

    def _submit(self, rows: list[tuple[int, int]], blocks: list[tuple[int, int, int, int]],
                samples: list[tuple[int, int, int]], owners: list[_Seq], key: tuple[bool, bool, bool],
                sub: int = 1) -> None:
        """Write the step's tables and submit it (`sub` decode steps of it, the tables moved one
        position on between them), its samples copied out for `_collect`."""
        m, g, b = self.programs, self.programs.gpu, self.programs.buf
        # (a one-row step's split-K attention and its merge read the row's position there)
        g.write(b.st, pack_state(n=len(rows), pos=rows[0][0] if len(rows) == 1 else 0))
        g.write(b.rows, np.asarray(rows, np.uint32))
        g.write(b.blocks, np.asarray(blocks, np.uint32))
        if samples:
            g.write(b.st_s, pack_state(n=len(samples)))
            g.write(b.samples, np.asarray([(*x, 0) for x in samples], np.uint32))
        for s in owners:
            s.submitted += sub
        self.stats.steps += sub
        self.stats.step_rows += len(rows) * sub
        S = m.slots.count
        buf = self._staging.pop() if self._staging else g.device.create_buffer(
            size=S * 4 * max(1 + LP_WIDTH, m.tuning.batch_steps), usage=g.usage.MAP_READ | g.usage.COPY_DST)
        n = len(samples)
        lps = key[2]

        step = m.step(len(rows), n, *key, decode_only=all(bk[1] == 1 for bk in blocks))
        size = (len(rows), len(blocks), n)
        enc = g.device.create_command_encoder()
        for j in range(sub):  # a pass a decode step, its samples copied out after it
            cpass = enc.begin_compute_pass()
            step.encode(cpass, size)
            if j < sub - 1:
                m.advance.encode(cpass, size)
            cpass.end()
            if n:
                enc.copy_buffer_to_buffer(b.sampled, 0, buf, j * n * 4, n * 4)
        if n and lps:
            enc.copy_buffer_to_buffer(b.lp, 0, buf, S * 4, n * LP_WIDTH * 4)
        index = g.submit([enc.finish()])
        self._inflight.append(_Step(ReadBack(g, buf, index) if n else None, buf, owners, lps, sub))

    def _collect(self, step: _Step) -> None:
        """Read a step's samples back and hand them to their requests."""
        if step.read is None:
            self._staging.append(step.buf)
            return
        t = time.perf_counter()
        step.read.wait()
        self.stats.wait_s += time.perf_counter() - t
        n, S = len(step.seqs), self.programs.slots.count
        # one read from the start: Dawn maps ranges at offsets of 8 bytes, and the log-probs
        # start at S words (an odd slot count's are not)
        end = max(n * 4 * step.sub, (S + n * LP_WIDTH) * 4 if step.logprobs else 0)
        raw = np.frombuffer(step.buf.read_mapped(0, end), np.uint8)
        toks = raw[:n * 4 * step.sub].view(np.uint32).tolist()
        lp = raw[S * 4:(S + n * LP_WIDTH) * 4].view(np.float32).reshape(n, LP_WIDTH).copy() if step.logprobs else None
        step.buf.unmap()
        self._staging.append(step.buf)
        out = Outbox()  # the step's tokens and ends reach each event loop in one wake-up
        for i, s in enumerate(step.seqs):
            if s.finished:
                continue  # a stop or a cancel came first: the tokens queued after it are discarded
            new: list[int] = []
            end = None
            for j in range(step.sub):  # its token of each decode step in the submit, in order
                tok = toks[j * n + i]
                s.received += 1
                if s.c.cancelled:
                    end = "cancelled"
                elif tok in s.c.stop_ids:
                    end = "stop"
                else:
                    new.append(int(tok))
                    end = "length" if s.received >= s.budget else None
                if end:
                    break
            if new:
                s.c._push(new, None if s.c.logprobs is None or lp is None else [_logprobs(lp[i], s.c.logprobs)], out)
                self.stats.generated_tokens += len(new)
            if end:
                self._release(s, end, outbox=out)
        out.send()


def _logprobs(row: np.ndarray, n: int) -> tuple[float, list[tuple[int, float]]]:
    """A sampled row's log-probabilities as (the token's, [(token, logprob)] of the n most likely)."""
    ids = row[1::2].view(np.uint32)
    return float(row[0]), [(int(ids[i]), float(row[2 + 2 * i])) for i in range(n)]


def batch_programs(programs: Programs, slots: int, ctx: int | None = None, max_rows: int | None = None,
                   kv_tokens: int | None = None) -> BatchPrograms:
    """Batch Programs on the weights of a loaded model's Programs (shared, not copied), steps
    of up to `max_rows` rows (default: its prompt batch, up to STEP_ROWS)."""
    t = replace(programs.tuning, persist=0)
    return BatchPrograms(programs.gpu, programs.cfg, programs.weights, slots, ctx or programs.ctx,
                         max_rows or min(programs.batch, STEP_ROWS), t, programs.kv_f16, kv_tokens)


def scheduler(session: Session, parallel: int = 1, max_queue: int = 256, max_rows: int | None = None,
              kv_tokens: int | None = None, warm_up: bool = False) -> Scheduler:
    """A scheduler for `parallel` sequences at a time on a loaded model: the serial one for 1,
    continuous batching (on the same weights, `parallel` slots of the session's context
    sharing `kv_tokens` positions of KV cache, default enough for all of them) for more;
    `warm_up`: its step Programs built and their kernels run once first (BatchPrograms.warm_up)."""
    if parallel <= 1:
        return SerialScheduler(session, max_queue)
    programs = batch_programs(session.programs, parallel, max_rows=max_rows, kv_tokens=kv_tokens)
    if warm_up:
        programs.warm_up()
    return BatchScheduler(programs, max_queue)


__all__ = ["BatchPrograms", "BatchScheduler", "batch_programs", "scheduler"]
