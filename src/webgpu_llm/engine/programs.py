"""A decoder's buffers and Programs on the GPU: Llama's layer, with what the model's
`Architecture` (models/config.py) adds to it.

Programs built here (each bound once, replayed with one submit; `Session` runs them):
  embed    the batch's token embeddings
  prefill  per layer [RMSNorm, QKV matmul (+bias, RoPE, KV append), causal attention,
           O matmul + residual, RMSNorm, gate/up matmul + SiLU·mul, down matmul + residual];
           a function of the token count n (grids scale with n)
  decode   embedding, then per layer 5 fused dispatches: RMSNorm+QKV mat-vec(+bias, RoPE, KV
           append), split-K attention, combine+O mat-vec+residual, RMSNorm+gate/up
           mat-vec+SiLU·mul, down mat-vec+residual; with `Tuning.persist` the same 5 kernels
           as the stages of one persistent dispatch per layer (kernels/persistent.py); with
           `fused=False` the same math in 13 plain dispatches
  head     final RMSNorm + LM head mat-vec on the batch's last token
  samplers see kernels/sampling.py
  score    final RMSNorm of every token + LM head matmul + NLL, in chunks of the vocabulary rows

What an architecture adds, as options of these kernels: GELU·mul instead of SiLU·mul, a
sliding window, soft-capped scores and their scale (attention), an embedding scale, soft-capped
logits (the head's store), per-layer RoPE frequencies (parameter buffer), LongRoPE's scale of
the rotated dims. As kernels of their own (kernels/norms.py): per-head q/k RMSNorm after a QKV
projection that stores raw rows (Qwen3, Gemma 3: a decode layer of 6 dispatches), and Gemma's
norms of the attention's and FFN's outputs before each residual add (after O and down
projections that store; Gemma 3: 8). The persistent decode layers cover only architectures
without kernels of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

from ..errors import GpuError
from ..kernels import attention as att
from ..kernels import attention_tiles as at
from ..kernels import elementwise as ew
from ..kernels import mma, moe, sampling
from ..kernels.common import STATE_WORDS, Slots
from ..kernels.direct_tiles import (
    DirectShape,
    direct_matmul_grid,
    direct_matmul_kernel,
    direct_ok,
)
from ..kernels.linear import (
    AttnShape,
    Experts,
    LinearSpec,
    QkvShape,
    epilogue_grid,
    epilogue_kernel,
    f16_weights,
    grid_2d,
    half_usable,
    int8_ok,
    matmul_grid,
    matmul_kernel,
    matvec_grid,
    matvec_groups,
    matvec_kernel,
    spread_ok,
    thin_matmul_grid,
    thin_matmul_kernel,
)
from ..kernels.loss import nll_kernel
from ..kernels.norms import post_norm_kernel, qk_norm_grid, qk_norm_kernel
from ..kernels.persistent import SYNC_WORDS, Stage, persistent_kernel
from ..kernels.rows import embed_kernel, rmsnorm_kernel
from ..models.config import ModelConfig, Moe
from ..runtime.gpu import Gpu
from ..runtime.program import Program
from .settings import PERSIST_WG, ROUTER_SPLITS_MAX, SHORT_PREFILL, SPLIT_MAX, Tuning
from .waves import Split, by_waves, plan_split
from .weights import GpuMatrix, LayerWeights, ModelWeights, f16_copy

SCORE_ROWS = 64  # tokens per LM-head matmul when every position's logits are needed
# the fewest keys a split-K decode split takes (Tuning.attn_chunk), uncapped: its partials'
# buffers hold ctx / MIN_CHUNK splits a head
MIN_CHUNK = 16


def partial_splits(ctx: int) -> int:
    """The split-K decode attention's splits a head that its partials' buffers hold."""
    return -(-ctx // MIN_CHUNK)


@dataclass
class Buffers:
    """The activations, caches and per-step state of one sequence (batch: prompt tokens per
    chunk; ctx: positions)."""

    st: Any  # the per-step state (kernels/common.py STATE_FIELDS)
    tokens: Any  # every position's token id (the sampler appends to it)
    h: Any  # residual stream, a row per token
    h2: Any  # a persistent layer's residual after O
    sync: Any  # the persistent layers' barrier counters
    xn: Any  # normed rows
    q: Any
    att: Any  # attention output
    act: Any  # SiLU(gate)·up
    logits: Any
    ml: Any  # split-K attention partials: running max and sum
    acc: Any  # split-K attention partials: weighted values
    part: Any  # sampler scratch
    cand: Any
    stats: Any
    nll: Any
    kpart: Any  # split-K prompt matmul partials
    tmp: Any  # the unfused decode's scratch
    kv: list[Any]  # per layer: K cache then V cache, each (kv_heads, ctx, head_dim), f32 or f16 pairs (kv_f16)
    score_rows: int
    qkv: Any = None  # a QKV projection's raw rows, for the per-head q/k norms (qk_norm)
    experts: ExpertBuffers | None = None  # a mixture of experts' (kernels/moe.py)

    @classmethod
    def alloc(cls, g: Gpu, c: ModelConfig, ctx: int, batch: int, kv_f16: bool = False) -> Buffers:
        T = batch
        score_rows = min(SCORE_ROWS, T)
        most_splits = partial_splits(ctx)
        nwg = sampling.scan_workgroups(c.vocab)
        return cls(
            st=g.buffer(STATE_WORDS * 4, "state"),
            tokens=g.buffer((ctx + 8) * 4, "tokens"),
            h=g.buffer(T * c.hidden * 4, "residual"),
            h2=g.buffer(c.hidden * 4, "residual_mid"),
            sync=g.buffer(SYNC_WORDS * 4, "persistent_sync"),
            xn=g.buffer(T * max(c.hidden, c.q_dim) * 4, "normed"),
            q=g.buffer(T * c.q_dim * 4, "q"),
            att=g.buffer(T * c.q_dim * 4, "attn_out"),
            act=g.buffer(T * c.intermediate * 4, "ffn_act"),
            logits=g.buffer(score_rows * c.vocab * 4, "logits"),
            ml=g.buffer(c.n_heads * most_splits * 8, "attn_ml"),
            acc=g.buffer(c.n_heads * most_splits * c.head_dim * 4, "attn_acc"),
            part=g.buffer(nwg * 8, "sample_part"),
            cand=g.buffer(nwg * sampling.CAND * 8, "sample_cand"),
            stats=g.buffer(nwg * 8, "sample_stats"),
            nll=g.buffer(T * 4, "nll"),
            kpart=g.buffer(T * c.hidden * 4, "split_k_partials"),  # grown by Programs.fit_partials
            tmp=g.buffer(max(c.q_dim + 2 * c.kv_dim, 2 * c.intermediate) * 4, "unfused_tmp"),
            kv=[g.buffer(kv_cache_bytes(c, ctx, kv_f16), f"blk.{i}.kv_cache") for i in range(c.n_layers)],
            score_rows=score_rows,
            qkv=g.buffer(T * (c.q_dim + 2 * c.kv_dim) * 4, "qkv_rows") if c.architecture.qk_norm else None,
            experts=ExpertBuffers.alloc(g, c.hidden, c.architecture.moe, T) if c.architecture.moe else None,
        )


def token_floats(c: ModelConfig) -> int:
    """The f32s a prompt token takes in the widest of its activation buffers (FFN, QKV rows, a
    mixture's (token, slot) outputs)."""
    m = c.architecture.moe
    return max(c.intermediate, c.q_dim + 2 * c.kv_dim, c.hidden, m.used * max(c.hidden, m.ffn) if m else 0)


def fit_batch(batch: int, ctx: int, binding: int, c: ModelConfig) -> int:
    """The prompt batch for `batch` asked: at most the context, and as many tokens as the widest
    activation buffer can bind (a multiple of 64 where it is fewer)."""
    room = binding // (4 * token_floats(c))
    return max(1, min(batch, ctx, room if room >= batch else max(64, room - room % 64)))


def kv_cache_bytes(c: ModelConfig, ctx: int, kv_f16: bool) -> int:
    """A layer's K and V caches of `ctx` positions, in f16s or f32s."""
    return 2 * c.kv_dim * ctx * (2 if kv_f16 else 4)


@dataclass
class ExpertBuffers:
    """A mixture-of-experts layer's scratch for `batch` tokens (kernels/moe.py's tables)."""

    logits: Any  # the router's, a row a token
    route: Any
    groups: Any
    act: Any  # the chosen experts' SiLU(gate)·up, a row a (token, slot) pair
    y: Any  # their outputs, likewise
    xn16: Any  # the normed rows as f16s for the experts' gate/up (Tuning.x_f16; the router reads xn)

    @classmethod
    def alloc(cls, g: Gpu, hidden: int, m: Moe, batch: int) -> ExpertBuffers:
        pairs = batch * m.used
        # (logits: room for a split router's partial sums, Tuning.router_splits)
        return cls(logits=g.buffer(batch * m.count * ROUTER_SPLITS_MAX * 4, "moe_logits"),
                   route=g.buffer(pairs * 8, "moe_route"),
                   # (room for a tile list of the smallest token blocks: Tuning.expert_list)
                   groups=g.buffer(moe.groups_words(m.count, pairs, tiles=16) * 4, "moe_groups"),
                   act=g.buffer(pairs * m.ffn * 4, "moe_act"), y=g.buffer(pairs * hidden * 4, "moe_out"),
                   xn16=g.buffer(batch * hidden * 2, "moe_normed_f16"))


class HalfRows(NamedTuple):
    """Which prompt rows are written as f16s for the f16-tile matmuls that read them
    (Tuning.x_f16): xn before attention for QKV, xn before the FFN for gate/up, gate/up's
    outputs for down, the attention's (on its tiles, keys in one part) for O; a mixture's xn
    before the FFN as f32s and also as f16s for the experts' gate/up (its router reads the
    f32s), the expert gate/up's outputs for the expert down. With Gemma's output norms the
    one after O writes the FFN's xn."""

    qkv: bool = False
    ffn: bool = False
    act: bool = False
    att: bool = False
    expert_in: bool = False
    expert_act: bool = False


class Programs:
    """A model's weights, buffers and bound Programs; `rebuild` makes the Programs anew with
    other kernel shapes or fusion (weights and caches stay)."""

    def __init__(self, gpu: Gpu, cfg: ModelConfig, weights: ModelWeights, ctx: int, batch: int,
                 tuning: Tuning, fused: bool = True, kv_f16: bool = False) -> None:
        self._bookkeeping(gpu, cfg, weights, ctx, tuning, fused, kv_f16)
        self.batch = fit_batch(batch, ctx, gpu.max_binding, cfg)
        self.buf = Buffers.alloc(gpu, cfg, ctx, self.batch, kv_f16)
        # a prompt matmul's input as int8 units, for the matrix units (kernels/mma.py), made on first use
        self.mma_usable = mma.usable(gpu)
        self.int8_tiles = True  # whether int8 tiles may run at all (a batch's Programs: no)
        self._build()

    def _bookkeeping(self, gpu: Gpu, cfg: ModelConfig, weights: ModelWeights, ctx: int, tuning: Tuning,
                     fused: bool, kv_f16: bool) -> None:
        """What every Programs keeps beside its buffers: the model, the settings, and which
        path and shape each role's kernels took (filled in by `_build`)."""
        self.gpu, self.cfg, self.weights, self.ctx, self.fused = gpu, cfg, weights, ctx, fused
        self.tuning = tuning
        self.kv_f16 = kv_f16
        weights.fit_rope(gpu, cfg, ctx)
        # role -> the path its prompt matmul takes (int8, f16, simt; "f16, x f16": reading f16 rows)
        self.mm_paths: dict[str, str] = {}
        # role -> the f16 tiles' workgroup its prompt matmul took (mma.TileShape.label), after any
        # fallback to the device's workgroup memory
        self.mm_tiles: dict[str, str] = {}
        self.mm_splits: dict[str, int] = {}
        self.mv_paths: dict[str, str] = {}  # role -> its decode mat-vec's arithmetic (int8, f16, f32)
        self.xq8: Any = None
        self.xs8: Any = None
        self._sums: Any = None  # split QKV's and gate/up's partial sums (_split_sums)
        self._f16_weights: ModelWeights | None = None  # f16 copies for the batched steps (step_weights)
        self._tparts: dict[str, Any] | None = None  # the prompt attention's key splits' (_attn_parts)
        self.persist_note = ""  # why the persistent decode layers are not used, where asked for

    # -- kernels ---------------------------------------------------------------------------
    @property
    def f16_tiles_usable(self) -> bool:
        """Whether the f16 tiles run on this device's matrix units: asked only where a kernel
        would take them, since the answer runs a check on the device the first time."""
        return mma.f16_usable(self.gpu)

    def spec(self, m: GpuMatrix, **kw: Any) -> LinearSpec:
        return LinearSpec(k=m.k, segments=m.segments, eps=self.cfg.rms_eps, **kw)

    # -- the architecture's options of the layer's kernels -----------------------------------
    def window(self, i: int) -> int:
        """Layer i's attention window, 0 where it sees every key (a window of the whole
        context or more never limits anything)."""
        w = self.cfg.architecture.window(i)
        return w if 0 < w < self.ctx else 0

    def qkv_shape(self) -> QkvShape:
        c = self.cfg
        scale = c.rope_attention_factor()
        pairs = c.rope_dim // 2 if scale != 1.0 and c.rope_dim != c.head_dim else 0
        return QkvShape(c.q_dim, c.kv_dim, c.head_dim, self.ctx, scale, pairs, self.kv_f16)

    def attention_spec(self, i: int, chunk: int = 64, wg: int = 0) -> att.AttentionSpec:
        c, a = self.cfg, self.cfg.architecture
        return att.AttentionSpec(c.n_heads, c.n_kv_heads, c.head_dim, self.ctx, chunk, wg,
                                 window=self.window(i), softcap=a.attn_softcap, scale=a.attn_scale,
                                 sinks=self.weights.layout.sinks if a.sinks else -1, kv_f16=self.kv_f16)

    def split_attention(self, i: int, batched: bool = False) -> tuple[att.AttentionSpec, AttnShape]:
        """Layer i's split-K decode attention (the tuning's chunk, key reads and most splits a
        head: `batched`, a batched step's, whose rows multiply its workgroups), and the layout
        of its partials for the kernel that merges them."""
        t = self.tuning
        a = replace(self.attention_spec(i, t.attn_chunk, t.attn_wg), cap=t.batch_decode_splits if batched else t.decode_splits,
                    preload=t.attn_preload)
        if a.max_splits > partial_splits(self.ctx):
            raise ValueError(f"Tuning.attn_chunk {t.attn_chunk}: {a.max_splits} splits a head overflow the partials' "
                             f"buffers; take at least {MIN_CHUNK} keys a split, or cap the splits (decode_splits)")
        return a, a.shape(t.combine_unroll, t.merge_at_once)

    def o_spec(self, L: LayerWeights, **kw: Any) -> LinearSpec:
        """The attention's output projection, with its bias where the architecture has one."""
        if self.cfg.architecture.o_bias:
            kw.update(bias=True, bias_off=self.weights.layout.o_bias)
        return self.spec(L.o, **kw)

    @property
    def act(self) -> str:
        """The gate/up projection's epilogue."""
        return {"gelu_tanh": "gelu_mul", "swiglu_oai": "swiglu_oai"}.get(self.cfg.architecture.act, "silu_mul")

    def qkv_spec(self, L: LayerWeights, qkv_shape: QkvShape, **kw: Any) -> LinearSpec:
        """The QKV projection: bias, RoPE and KV append in its epilogue, or (per-head q/k norms)
        its raw rows stored for `qk_norm_kernel`."""
        c, lay = self.cfg, self.weights.layout
        if c.architecture.qk_norm:
            kw.pop("slots", None)
            return self.spec(L.qkv, **kw)
        return self.spec(L.qkv, epilogue="qkv", bias=c.qkv_bias, qkv=qkv_shape, bias_off=lay.bias,
                         rope_off=lay.rope, **kw)

    def qk_norm(self, qkv_shape: QkvShape, slots: Slots | None = None, partials: int = 1) -> Any:
        c, lay = self.cfg, self.weights.layout
        return qk_norm_kernel(qkv_shape, c.rms_eps, lay.q_norm, lay.k_norm, lay.rope, slots, partials)

    def matvec_shape(self, spec: LinearSpec, role: str, wg: int = 0) -> tuple[dict[str, int], bool]:
        """The mat-vec's shape for `role` (with `wg` threads a workgroup if given), and whether
        it takes the int8 path."""
        def sized(shape: dict[str, int]) -> dict[str, int]:
            shape = {**shape, "wg": wg} if wg else shape
            if spec.experts and self.tuning.expert_ilp:
                shape = {**shape, "ilp": self.tuning.expert_ilp}
            return {**shape, "tpr": self.tuning.expert_tpr} if spec.experts and self.tuning.expert_tpr else shape

        shape = sized(self.tuning.shape(role, int8=True))
        if self.tuning.int8 and int8_ok(spec, shape["wg"], self.shared_bytes, self.tuning.int8_direct):
            ilp = shape["ilp"] if self.tuning.int8_ilp or (spec.experts and self.tuning.expert_ilp) else 1
            return {**shape, "ilp": ilp}, True
        return sized(self.tuning.shape(role, spread=self.tuning.spread and spread_ok(spec))), False

    def _mv(self, spec: LinearSpec, role: str, wg: int = 0) -> Any:
        shape, int8 = self.matvec_shape(spec, role, wg)
        half = self.tuning.f16_decode and not int8 and f16_weights(spec) and half_usable(self.gpu)
        self.mv_paths[role] = "int8" if int8 else "f16" if half else "f32"
        return matvec_kernel(spec, subgroups=self.gpu.subgroups_wgsl(), shared_bytes=self.shared_bytes,
                             int8=int8, blocks=self.tuning.row_blocks(role), spread=self.tuning.spread,
                             int8_direct=self.tuning.int8_direct,
                             early=self.tuning.int8_early if int8 else self.tuning.early, half=half,
                             shuffle=self.tuning.mv_shuffle, at_once=self.tuning.stage_at_once, **shape)

    def _mvg(self, spec: LinearSpec, role: str) -> tuple[int, int, int]:
        shape, _ = self.matvec_shape(spec, role)
        return matvec_grid(spec, shape["wg"], shape["tpr"], self.tuning.row_blocks(role))

    def mm_path(self, spec: LinearSpec) -> str:
        """Where a prompt matmul runs: "int8" (int8 tiles on the matrix units), "f16" (f16
        tiles) or "simt" (the tiled f32 matmul), by Tuning.mma and what the device has."""
        mode = self.tuning.mma.removeprefix("emulate").removeprefix("-") or "auto"
        if mode == "off":
            return "simt"
        # every format on the f16 tiles before the int8 ones: experts with tiles of their own, dense
        # quantized weights with quant_f16 ("f16" takes that path below anyway)
        f16_first = self.tuning.expert_tiles if spec.experts else self.tuning.quant_f16
        if mode == "auto" and f16_first and mma.f16_ok(spec, every_format=True) and self._f16_tiles_run:
            return "f16"
        # experts stay off the real int8 tiles: their kernel is right emulated but not on an H100's
        # tiles (tests/kernels/test_kernels_moe.py::test_moe_ffn_prompt, docs/performance.md)
        emulated_or_dense = not (spec.experts and self.mma_usable)
        if (mode != "f16" and self.int8_tiles and (self.mma_usable or self._emulate) and emulated_or_dense
                and mma.mma_ok(spec)):
            return "int8"
        if mode != "int8" and mma.f16_ok(spec, every_format=mode == "f16") and self._f16_tiles_run:
            return "f16"
        return "simt"

    def _batch_tiles(self, spec: LinearSpec) -> bool:
        """Do a batched step's matmuls of this spec run on the f16 tiles (Tuning.batch_tiles)?"""
        mode = self.tuning.mma.removeprefix("emulate").removeprefix("-") or "auto"
        return (bool(self.tuning.batch_tiles) and mode in ("auto", "f16") and spec.experts is None
                and mma.f16_ok(spec, every_format=True) and self._f16_tiles_run)

    def step_weights(self, thin: int) -> ModelWeights:
        """The weights a step's matmuls read: the model's, or for a batched step of several
        rows with Tuning.batch_f16_weights (and the direct tiles) f16 copies of its quantized
        dense matrices and LM head, made on first use."""
        t = self.tuning
        if thin <= 1 or not (t.batch_f16_weights and t.batch_direct and self._f16_tiles_run):
            return self.weights
        if self._f16_weights is None:
            w, a = self.weights, self.cfg.architecture
            layers = [replace(L, qkv=f16_copy(self.gpu, L.qkv, f"L{i}.qkv"), o=f16_copy(self.gpu, L.o, f"L{i}.o"),
                              **({} if a.experts(i) is not None else
                                 {"gate_up": f16_copy(self.gpu, L.gate_up, f"L{i}.gate_up"),
                                  "down": f16_copy(self.gpu, L.down, f"L{i}.down")}))
                      for i, L in enumerate(w.layers)]
            self._f16_weights = replace(w, layers=layers, lm_head=f16_copy(self.gpu, w.lm_head, "lm_head"))
        return self._f16_weights

    def _batch_direct(self, spec: LinearSpec) -> DirectShape | None:
        """The direct f16 tiles' workgroup for a batched step's matmul of f16 weights
        (Tuning.batch_direct), its x chunk cut to the device's workgroup memory; None where the
        tuning or the matmul leaves it to the staged tiles."""
        if not self.tuning.batch_direct:
            return None
        shape = DirectShape(*self.tuning.batch_direct)
        if direct_ok(spec, shape):
            return None
        return shape.fit(spec, self.gpu.limits["max-compute-workgroup-storage-size"])

    @property
    def _emulate(self) -> bool:
        """Tuning.mma asks for the tiles emulated where the device has no matrix units."""
        return self.tuning.mma.startswith("emulate")

    @property
    def _f16_tiles_run(self) -> bool:
        """The f16 tiles run here, on the matrix units or emulated (which needs shader-f16)."""
        return self.f16_tiles_usable or (self._emulate and self.gpu.has_f16)

    def attention_tiles(self, spec: att.AttentionSpec) -> at.AttnTiles | None:
        """The f16-tile shape of the prompt attention (kernels/attention_tiles.py), or None for
        the f32 kernel: where Tuning.attn_tiles asks for them, the KV cache is f16 already and
        the f16 tiles run (or are emulated)."""
        if not (self.tuning.attn_tiles and self.kv_f16 and at.tiles_ok(spec) and self._f16_tiles_run):
            return None
        tiles = at.attn_tiles(spec, self.gpu.limits["max-compute-workgroup-storage-size"])
        return replace(tiles, prefetch=self.tuning.attn_prefetch)

    def _int8_units(self) -> dict[str, Any]:
        """The buffers of a matrix-unit matmul's input as int8 units, made on first use."""
        if self.xq8 is None:
            c, T = self.cfg, self.batch
            m = c.architecture.moe
            widest = max(c.hidden, c.q_dim, c.intermediate, m.used * m.ffn if m else 0)
            self.xq8 = self.gpu.buffer(T * widest, "int8_units")
            self.xs8 = self.gpu.buffer(T * (widest // 32) * 8, "int8_unit_scales")
        return {"xq": self.xq8, "xs": self.xs8}

    def _quantize(self, prog: Program, k: int, x: Any, count: Callable[[Any], int] | None = None,
                  per_token: int = 1) -> None:
        """x (the batch's rows of k values, `per_token` rows a token) as int8 units, for the
        matmuls on the matrix units."""
        prog.add(mma.quantize_kernel(k, per_token), {"st": self.buf.st, "x": x, **self._int8_units()},
                 _counted(mma.quantize_grid(k, per_token), count))

    def _add_mm(self, prog: Program, spec: LinearSpec, role: str, bindings: dict[str, Any],
                quantized: bool = False, count: Callable[[Any], int] | None = None, thin: int = 0,
                record: bool = True) -> None:
        """A prompt matmul on bindings["x"]; on the matrix units, after x is quantized (unless
        `quantized`: an earlier dispatch did it). `count` maps the Program's n to this
        matmul's rows where n is not the row count itself (a batched step's n). `thin`: a
        thin matmul of that many tokens a pass instead (a batched decode step's few rows),
        with the role's mat-vec shape; 1: the role's mat-vec (a step of one row). `record`: its
        path is the prompt's in mm_paths (not for a mixture's experts in a short prompt's or a
        batched step's layers, which take this path too)."""
        if thin == 1:
            prog.add(self._mv(spec, role), bindings, self._mvg(spec, role))
            return
        if thin and self._batch_tiles(spec):  # (mm_paths: the prompt matmuls' paths, not these)
            if (direct := self._batch_direct(spec)) is not None:
                prog.add(direct_matmul_kernel(spec, direct, emulate=not self.f16_tiles_usable), bindings,
                         _counted(direct_matmul_grid(spec, direct), count))
                return
            self._add_f16(prog, spec, bindings, count, self._fit_tiles(self.tuning.batch_tile_shape(role)))
            return
        if thin:
            shape = self.tuning.shape(role)
            prog.add(thin_matmul_kernel(spec, thin, shape["wg"], shape["tpr"], self.gpu.subgroups_wgsl()), bindings,
                     _counted(thin_matmul_grid(spec, thin, shape["wg"], shape["tpr"]), count))
            return
        path = self.mm_path(spec)
        if record:
            self.mm_paths[role] = path + (", x f16" if spec.x_f16 else "")
            self.mm_tiles.pop(role, None)  # (set again below where the f16 tiles take it)
        if path == "simt":
            prog.add(matmul_kernel(spec, self.tuning.tm(role), self.tuning.prefetch), bindings,
                     _counted(matmul_grid(spec, self.tuning.tm(role)), count))
            return
        if path == "f16":
            shape = self._prompt_tiles(spec, role)
            self._add_f16(prog, spec, bindings, count, shape)
            if record:
                self.mm_tiles[role] = shape.label
            return
        if not quantized:  # an MoE down projection's input: a row a (token, slot) pair
            per = spec.experts.used if spec.experts and spec.experts.x_per_slot else 1
            self._quantize(prog, spec.k, bindings["x"], count, per)
        prog.add(mma.mma_matmul_kernel(spec, emulate=not self.mma_usable, tokens_first=self.tuning.tokens_first),
                 {**bindings, **self._int8_units()},
                 _counted(mma.mma_matmul_grid(spec), count))

    def _add_f16(self, prog: Program, spec: LinearSpec, bindings: dict[str, Any], count: Callable[[Any], int] | None,
                 shape: mma.TileShape) -> None:
        """An f16-tile matmul in `shape` (one that fits the device: _fit_tiles)."""
        prog.add(mma.f16_matmul_kernel(spec, shape, emulate=not self.f16_tiles_usable), bindings,
                 _counted(mma.f16_matmul_grid(spec, shape), count))

    def _prompt_tiles(self, spec: LinearSpec, role: str) -> mma.TileShape:
        """The f16 tiles' workgroup a prompt matmul of `role` takes: the tuning's (the experts',
        the role's or the float weights' where they have their own), fitted to the device."""
        floats = all(seg.fmt in mma.F16_FORMATS for seg in spec.segments)
        return self._fit_tiles(self.tuning.tile_shape(spec.experts is not None, floats, role))

    def _fit_tiles(self, shape: mma.TileShape) -> mma.TileShape:
        """`shape`, or the nearest f16-tile workgroup that fits the device."""
        limit = self.gpu.limits["max-compute-workgroup-storage-size"]
        if shape.shared_bytes > limit:  # one unit, one buffer
            shape = replace(shape, double=False, ku=1)
        if shape.shared_bytes > limit and shape.tn > 4:  # then at most 4 x 4 fragments a subgroup (4x2x4x8 -> 4x2x4x4)
            shape = replace(shape, tn=4)
        while shape.shared_bytes > limit and shape.tm > 1:  # then fewer token tiles a subgroup
            shape = replace(shape, tm=shape.tm // 2)
        if shape.acc16 and self.f16_tiles_usable and not mma.has_f16_mma(self.gpu.subgroup_matrix_configs, sums="f16"):
            # f16 sums only where the device lists such tiles; a subgroup's f32 sums at most 4 x 4
            # fragments (the registers that f16 sums halve)
            shape = replace(shape, acc16=False, tm=min(shape.tm, 4), tn=min(shape.tn, 4))
        return shape

    def _prompt_splits(self, tokens: int) -> dict[str, Split]:
        """K splits of each role's prompt matmul: Tuning.splits, or where Tuning.sms is set and
        the role takes f16 tiles that go by waves (waves.by_waves), the split that fills the
        GPU's waves best at `tokens` tokens (engine/waves.py: QKV and gate/up may split only
        their last wave's row blocks; a mixture's QKV, gate/up and down stay whole, as
        prompt_layers has them, and so does the tail of a QKV whose partials a per-head norm
        sums)."""
        t, a, L = self.tuning, self.cfg.architecture, self.weights.layers[0]
        splits = {role: Split(t.split(role)) for role in ("qkv", "o", "gate_up", "down")}
        if not t.sms:
            return splits
        specs = {"qkv": self.qkv_spec(L, self.qkv_shape()), "o": self.o_spec(L),
                 "gate_up": self.spec(L.gate_up, epilogue=self.act), "down": self.spec(L.down)}
        for role, spec in specs.items():
            if (role != "o" and a.moe is not None) or self.mm_path(spec) != "f16":
                continue
            if not by_waves(shape := self._prompt_tiles(spec, role)):
                continue
            tails = role == "gate_up" or (role == "qkv" and not a.qk_norm)
            plan = plan_split(spec.rows, spec.pairs, spec.kp, tokens, shape, t.sms, SPLIT_MAX, epilogue_dispatch=tails)
            # (only where its partial sums fit one binding: QKV's and gate/up's share a buffer)
            rows = max(specs["qkv"].rows, specs["gate_up"].rows) if role in ("qkv", "gate_up") else spec.rows
            if tokens * max(plan.ways, plan.tail_ways) * rows * 4 <= self.gpu.max_binding:
                splits[role] = plan
        return splits

    # -- programs --------------------------------------------------------------------------
    def rebuild(self, tuning: Tuning | None = None, fused: bool | None = None) -> None:
        """Build the Programs anew with other kernel shapes or fusion (weights and caches stay)."""
        (tuning or self.tuning).check()
        self.tuning = tuning or self.tuning
        self.fused = self.fused if fused is None else fused
        self.persist_note = ""
        self._build()

    def _split_sums(self, rows: int, splits: int, tokens: int) -> Any:
        """The partial sums of a split QKV or gate/up: `rows` values of each of `splits` splits
        of each of `tokens` tokens (one buffer for every layer and Program, as large as the
        largest asks)."""
        size = tokens * splits * rows * 4
        if self._sums is None or self._sums.size < size:
            self._sums = self.gpu.buffer(size, "split_k_sums")
        return self._sums

    def _attn_parts(self, splits: int) -> dict[str, Any]:
        """The prompt attention's key splits' partials (AttnTiles.splits): O and (max, sum) of
        each split of each (row, head) of a prompt batch, one pair of buffers for every layer."""
        c = self.cfg
        size = self.batch * c.n_heads * splits * c.head_dim * 4
        if self._tparts is None or self._tparts["pacc"].size < size:
            self._tparts = {"pacc": self.gpu.buffer(size, "attn_split_acc"),
                            "pml": self.gpu.buffer(self.batch * c.n_heads * splits * 8, "attn_split_ml")}
        return self._tparts

    def prompt_program(self, thin: int = 0, short: bool = False) -> Program:
        """The prompt layers as a prefill Program: the tiled matmuls (with `short`, their K
        splits as planned for batches of SHORT_PREFILL tokens), or with `thin` as a batched
        step of that many rows takes them (thin matmuls of `thin` tokens a pass, or the f16
        tiles of Tuning.batch_tiles)."""
        prog = Program(self.gpu, "prefill")
        self.prompt_layers(prog, self._base(), self.buf.kv, thin=thin, short=short)
        return prog

    def prefill_for(self, n: int) -> Program:
        """The prefill Program for a batch of n tokens: up to Tuning.thin_rows, where the
        batched steps' f16 tiles run, those: the prompt tiles' 64-128 token workgroups leave a
        short prompt's mostly empty (the 1.5B f16's first token of a 64-token prompt 16.4 ->
        11.3 ms on an H100); else `tiled_for(n)`."""
        return self._prefill_few if self._prefill_few is not None and n <= self.tuning.thin_rows else self.tiled_for(n)

    def tiled_for(self, n: int) -> Program:
        """The tiled prefill Program for n tokens: the one whose K splits were planned for
        batches of SHORT_PREFILL tokens where n is no more and it has one, else `prefill`."""
        return self._prefill_short if self._prefill_short is not None and n <= SHORT_PREFILL else self.prefill

    @property
    def prefills(self) -> list[Program]:
        """Every prefill Program a prompt may take (to build their pipelines ahead)."""
        return [p for p in (self.prefill, self._prefill_short, self._prefill_few) if p is not None]

    def _base(self) -> dict[str, Any]:
        return {"st": self.buf.st, "tokens": self.buf.tokens}

    def _layer_bindings(self, i: int, L: LayerWeights) -> dict[str, Any]:
        return {**self._base(), "pv": L.params, "kv": self.buf.kv[i]}

    def fit_partials(self) -> None:
        """Plan the prompt matmuls' K splits for the tuning, for the whole batch
        (`prompt_splits`) and, in a batch longer than SHORT_PREFILL, for batches of that many
        tokens where that plan differs (`short_splits`: a plan for 2048 tokens splits less
        than one for 512); and size the split-K partials of O and down (`buf.kpart`) for them:
        a row each of a planned batch's rows, times their splits, of a batched step's up to
        thin_rows rows, times theirs (Tuning.batch_splits), and of one of up to few_rows rows,
        times its own (batch_splits_few); grown, never shrunk, so a rebuild with other splits
        keeps working."""
        t, rows = self.tuning, self.batch
        self.prompt_splits = self._prompt_splits(rows)
        self.short_splits: dict[str, Split] | None = None
        plans = [(rows, self.prompt_splits)]
        if rows > SHORT_PREFILL and (short := self._prompt_splits(SHORT_PREFILL)) != self.prompt_splits:
            self.short_splits = short
            plans.append((SHORT_PREFILL, short))
        most = max(*(n * max(p["o"].ways, p["down"].ways) for n, p in plans),
                   min(rows, t.thin_rows) * max(t.split("o", batched=True), t.split("down", batched=True)),
                   min(rows, t.few_rows) * max(t.split("o", True, True), t.split("down", True, True)))
        size = most * self.cfg.hidden * 4
        if self.buf.kpart.size < size:
            self.buf.kpart = self.gpu.buffer(size, "split_k_partials")

    def _build(self) -> None:
        g, c, b, w = self.gpu, self.cfg, self.buf, self.weights
        self.shared_bytes = g.limits["max-compute-workgroup-storage-size"]
        self.fit_partials()
        base = self._base()

        # prefill (n tokens)
        emb = w.embedding
        embed_spec = LinearSpec(k=c.hidden, segments=emb.segments)
        self.embed = Program(g, "embed")
        self.embed.add(embed_kernel(embed_spec, scale=c.architecture.embed_scale), {**base, **emb.bindings(), "x": b.h},
                       lambda n: (n, 1, 1))
        self.prefill = self.prompt_program()
        self._prefill_short = self.prompt_program(short=True) if self.short_splits else None
        # built with the rest, so that a first short prompt does not wait for its shaders; on a
        # CPU adapter its thin matmuls' work follows the rows, where the prompt matmul's tiles
        # cost a whole batch (SmolLM2 on llvmpipe: 2.2 s for a 3-token prompt; not where tests
        # emulate the matrix tiles to run their paths)
        cpu_thin = g.is_cpu and not self.tuning.mma.startswith("emulate")
        self._prefill_few = (self.prompt_program(self.tuning.thin_tokens)
                             if self._batch_tiles(self.spec(w.layers[0].down)) or cpu_thin else None)
        norm_first = rmsnorm_kernel(c.hidden, c.rms_eps, 0)
        rows = lambda n: (n, 1, 1)  # noqa: E731

        # decode (one token); the persistent layers only where they build (Session checks them)
        self.decode: Program | None = None
        if self.fused and self.tuning.persist and not c.architecture.plain:
            self.no_persist(f"the persistent decode layers do not cover {c.arch}'s per-head or output norms or experts")
        elif self.fused and self.tuning.persist:
            try:
                self.decode = self.decode_program("persistent")
            except (GpuError, ValueError) as e:  # e.g. the stages' workgroup memory over the limit
                self.no_persist(f"the persistent decode kernel did not build ({str(e).splitlines()[0]})")
        if self.decode is None:
            self.decode = self.decode_program("fused" if self.fused else "unfused")

        # head: final norm + LM head on the batch's last token
        self.head = Program(g, "head")
        s_head = self.spec(w.lm_head, prologue="rmsnorm", last_row=True, softcap=c.architecture.final_softcap)
        self.head.add(self._mv(s_head, "head"),
                      {**base, **w.lm_head.bindings(), "x": b.h, "pv": w.output_norm, "y": b.logits},
                      self._mvg(s_head, "head"))

        # samplers
        self.samplers: dict[tuple[bool, bool], Program] = {}
        for filtered in (False, True):
            for penalty in (False, True):
                sp = Program(g, "sampler")
                sb = {**base, "logits": b.logits, "part": b.part, "cand": b.cand, "stats": b.stats}
                if penalty:
                    sp.add(sampling.penalty_kernel(c.vocab), sb, (1, 1, 1))
                sp.add(sampling.scan_kernel(c.vocab, filtered), sb, (sampling.scan_workgroups(c.vocab), 1, 1))
                sp.add(sampling.pick_kernel(c.vocab, filtered), sb, (1, 1, 1))
                self.samplers[(filtered, penalty)] = sp

        # scoring: final norm of every token, then LM head + NLL per chunk of score_rows tokens
        self.score_norm = Program(g, "score_norm")
        self.score_norm.add(norm_first, {**base, "pv": w.output_norm, "x": b.h, "y": b.xn}, rows)
        head_on_mma = self.mm_path(self.spec(w.lm_head)) == "int8"
        if head_on_mma:  # every chunk's LM head reads the same int8 units: made once, here
            self._quantize(self.score_norm, c.hidden, b.xn)
        self.score_chunks: list[Program] = []
        for t0 in range(0, self.batch, b.score_rows):
            pr = Program(g, f"score_{t0}")
            s = self.spec(w.lm_head, t0=t0, tmax=b.score_rows, softcap=c.architecture.final_softcap)
            self._add_mm(pr, s, "head", {**base, **w.lm_head.bindings(), "x": b.xn, "y": b.logits},
                         quantized=head_on_mma)
            pr.add(nll_kernel(c.vocab, t0), {**base, "logits": b.logits, "nll": b.nll}, (b.score_rows, 1, 1))
            self.score_chunks.append(pr)

    def prompt_layers(self, prog: Program, base: dict[str, Any], kv: list[Any], slots: Slots | None = None,
                      rows_of: Callable[[Any], int] | None = None, blocks_of: Callable[[Any], int] | None = None,
                      tables: dict[str, Any] | None = None, thin: int = 0, decode_only: bool = False,
                      few: bool = False, short: bool = False) -> None:
        """Every layer over the rows of a prompt batch (n tokens of one sequence), or with
        `slots` over a batched step's rows (`rows_of(n)` of them, of several sequences, the
        attention's query blocks `blocks_of(n)`; `tables` binds rows and blocks); `thin`:
        the linear layers as thin matmuls of that many tokens a pass (a few rows), or with 1
        (one row) the one-sequence decode's kernels: mat-vecs with the RMSNorms in their
        prologues, split-K attention merged by O; `decode_only`: a batched step's blocks are
        all one row, so that with Tuning.batch_split_keys the prompt attention is left out;
        `few`: a batched step of at most Tuning.few_rows rows (its splits: batch_splits_few);
        `short`: the prompt's K splits as planned for batches of SHORT_PREFILL tokens
        (`short_splits`, which must exist), else the whole batch's (`prompt_splits`)."""
        c, b, w = self.cfg, self.buf, self.step_weights(thin)
        plan, tokens = self.prompt_splits, self.batch
        if short:
            assert self.short_splits is not None, "no plan of its own for short batches"
            plan, tokens = self.short_splits, SHORT_PREFILL
        a, lay = c.architecture, w.layout
        qkv_shape = self.qkv_shape()
        full = self.attention_spec(0)
        # O and down may split K over workgroups (Tuning.splits): their residual add then
        # moves into the next row kernel, which sums the partials into h before its RMSNorm;
        # a batched step's few rows split too where they run on the f16 tiles (Tuning.batch_tiles),
        # as Tuning.batch_splits says: 128-row workgroups leave a narrow model's matmuls a dozen
        def splits(role: str) -> int:
            if not thin:
                return plan[role].ways
            tiled = thin > 1 and all(self._batch_tiles(self.spec(getattr(L, role))) for i, L in enumerate(w.layers)
                                     if role in ("o", "qkv") or a.experts(i) is None)
            return self.tuning.split(role, batched=True, few=few) if tiled else 1

        so, sd = splits("o"), splits("down")
        # QKV and gate/up split K in a prompt and in a batched step of several rows, their
        # epilogues then applied to the sums by a kernel of their own (linear.epilogue_kernel),
        # the partials in one buffer (per-head q/k norms: the norm kernel sums QKV's partials itself)
        sq, sg = (splits("qkv"), splits("gate_up")) if thin != 1 else (1, 1)
        if a.moe is not None:  # (not done: the experts)
            sq, sg = 1, 1
        # (Tuning.sms) QKV's or gate/up's last wave of row blocks in a dispatch of its own, split
        tails = {r: plan[r] for r in ("qkv", "gate_up") if not thin and plan[r].tail_ways > 1}
        if (most := max(sq, sg, *(tl.tail_ways for tl in tails.values()))) > 1:
            sums = self._split_sums(max(self.spec(m).rows for L in w.layers for m in (L.qkv, L.gate_up)), most,
                                    min(self.batch, self.tuning.thin_rows) if thin else tokens)

        def mm(spec: LinearSpec, role: str, s: int, ins: dict[str, Any], outs: dict[str, Any], bind: dict[str, Any],
               finish: bool = True) -> None:
            """A matmul of `role` with `s` K splits: partial sums, then (unless not `finish`: a
            later kernel takes all of them) its epilogue on them; or with a tail (`tails`), its
            first pairs whole and the rest split, their epilogue after."""
            if finish and (tail := tails.get(role)) is not None:
                self._add_mm(prog, replace(spec, npairs=tail.pair0), role, {**bind, **ins, **outs}, count=rows_of)
                self._add_mm(prog, replace(spec, epilogue="partial", splits=tail.tail_ways, bias=False, y_f16=False,
                                           gated_pairs=spec.split_pairs, pair0=tail.pair0),
                             role, {**bind, **ins, "y": sums}, count=rows_of, record=False)
                rest = replace(spec, pair0=tail.pair0)
                prog.add(epilogue_kernel(rest, tail.tail_ways, "part"), {**bind, **outs, "part": sums},
                         _counted(epilogue_grid(rest), rows_of))
                return
            if s == 1:
                self._add_mm(prog, spec, role, {**bind, **ins, **outs}, count=rows_of, thin=thin)
                return
            self._add_mm(prog, replace(spec, epilogue="partial", splits=s, bias=False, y_f16=False), role,
                         {**bind, **ins, "y": sums}, count=rows_of, thin=thin)
            if finish:
                prog.add(epilogue_kernel(spec, s, "part"), {**bind, **outs, "part": sums},
                         _counted(epilogue_grid(spec), rows_of))
        if a.o_bias:  # each K split would add the bias
            so = 1
        if a.moe is not None:  # the experts' sum lands in h itself: no down partials for the next norm
            sd = 1
        if max(so, sd) > SPLIT_MAX:
            raise ValueError(f"at most {SPLIT_MAX} K splits per prompt matmul")
        if not thin and slots is None and not short:  # (bench's JSON: how the prompt's matmuls split K)
            self.mm_splits = {"qkv": sq, "o": so, "gate_up": sg, "down": sd,
                              **{f"{r} tail": tl.tail_ways for r, tl in tails.items()}}
        rows = _counted(lambda n: (n, 1, 1), rows_of)
        post = a.post_norms
        half = self._half_rows(thin, slots)
        half_qkv, half_ffn, half_act, half_att = half.qkv, half.ffn, half.act, half.att
        # the row kernels before attention (the first layer's has no partials to add) and FFN
        norm_first = rmsnorm_kernel(c.hidden, c.rms_eps, 0, y_f16=half_qkv)
        norm_attn = rmsnorm_kernel(c.hidden, c.rms_eps, 0, partials=sd if sd > 1 else 0, y_f16=half_qkv)
        norm_ffn = rmsnorm_kernel(c.hidden, c.rms_eps, lay.ffn, partials=so if so > 1 else 0, y_f16=half_ffn,
                                  also_f16=half.expert_in)
        attn_kernels: dict[int, Any] = {}  # by window
        tiles = self.attention_tiles(full)
        if tiles is None:
            attn_grid = (att.prompt_attention_grid(full) if slots is None
                         else _counted(lambda n: (c.n_heads, n, 1), blocks_of))
        else:
            if slots is None and self.tuning.attn_splits > 1:
                tiles = replace(tiles, splits=self.tuning.attn_splits)
            x = at.prompt_attention_tiles_grid(full, tiles)(1)[0]
            attn_grid = (at.prompt_attention_tiles_grid(full, tiles) if slots is None
                         else _counted(lambda n: (x, n, 1), blocks_of))
        half_att = half_att and tiles is not None and tiles.splits == 1  # (the tiles kernel writes them)
        # Gemma's output norms: O and down store their rows (or split partials) for the
        # post-norm kernel, which adds them to h (after O, also the pre-FFN norm into xn)
        split = lambda n: {"epilogue": "partial", "splits": n} if n > 1 else ({} if post else {"epilogue": "add"})  # noqa: E731
        # one row on the mat-vecs: the RMSNorms in the QKV and gate/up mat-vecs' prologues, as
        # the one-sequence decode has them (Gemma's output norms keep their kernels)
        fuse = thin == 1 and not post
        # one row of a batched step: the decode's split-K attention over its sequence's pages
        # (many workgroups a head, where the prompt kernel walks every key in one), merged by O
        split_keys = thin == 1 and slots is not None
        # (Tuning.batch_split_keys) a step of more rows: its one-row blocks (decoding streams)
        # so too, merged into their rows by a combine kernel, the prompt kernel taking the rest
        block_split = slots is not None and thin != 1 and self.tuning.batch_split_keys
        # (Tuning.batch_fold_qkv) ... and with every row decoding, QKV's split sums taken by it
        fold_qkv = block_split and decode_only and sq > 1 and self.tuning.batch_fold_qkv
        t = tables or {}
        for i, L in enumerate(w.layers):
            p = {**base, "pv": L.params, "kv": kv[i], **t}
            dense = a.experts(i) is None
            s_qkv = self.qkv_spec(L, qkv_shape, slots=slots, x_f16=half_qkv,
                                  **({"prologue": "rmsnorm", "nw_off": 0} if fuse else {}))
            s_o = self.o_spec(L, x_f16=half_att, **split(so))
            s_gu = self.spec(L.gate_up, epilogue=self.act, x_f16=half_ffn, y_f16=half_act,
                             **({"prologue": "rmsnorm", "nw_off": lay.ffn} if fuse and dense else {}))
            s_dn = self.spec(L.down, x_f16=half_act, **split(sd))
            x_qkv, x_gu = (b.h if fuse else b.xn), (b.h if fuse and dense else b.xn)
            win = self.window(i)
            if win not in attn_kernels and not split_keys:
                attn_kernels[win] = (att.prompt_attention_kernel(self.attention_spec(i), slots, block_split,
                                                                 self.tuning.pack_heads)
                                     if tiles is None else
                                     at.prompt_attention_tiles_kernel(self.attention_spec(i), tiles, slots,
                                                                      emulate=not self.f16_tiles_usable,
                                                                      skip_single=block_split, out_f16=half_att))
            if not fuse:
                prog.add(norm_attn if i > 0 and not post else norm_first,  # adds the previous layer's down partials
                         {**p, "x": b.h, "part": b.kpart, "y": b.xn}, rows)
            if fold_qkv:  # the partial sums alone: the attention kernel finishes them
                mm(s_qkv, "qkv", sq, {**L.qkv.bindings(), "x": x_qkv}, {}, p, finish=False)
            elif a.qk_norm:
                raw = b.qkv if sq == 1 else sums
                self._add_mm(prog, s_qkv if sq == 1 else replace(s_qkv, epilogue="partial", splits=sq), "qkv",
                             {**p, **L.qkv.bindings(), "x": x_qkv, "y": raw}, count=rows_of, thin=thin)
                prog.add(self.qk_norm(qkv_shape, slots, sq), {**p, "x": raw, "q": b.q},
                         _counted(qk_norm_grid(qkv_shape), rows_of))
            else:
                mm(s_qkv, "qkv", sq, {**L.qkv.bindings(), "x": x_qkv}, {"q": b.q}, p)
            o_out = {"y": b.kpart if so > 1 or post else b.h}
            parts = {"ml": b.ml, "acc": b.acc}  # split-K attention's partials
            if split_keys:
                sa, ashape = self.split_attention(i)
                prog.add(att.attention_kernel(sa, self.gpu.subgroups_wgsl(), slots=slots), {**p, "q": b.q, **parts},
                         att.attention_grid(sa))
                s_o = self.o_spec(L, prologue="attn", attn=ashape, **split(so))
                self._add_mm(prog, s_o, "o", {**p, **L.o.bindings(), **parts, **o_out}, thin=thin)
            elif block_split:
                sa, ashape = self.split_attention(i, batched=True)
                groups = -(-c.n_heads * c.head_dim // 4 // ew.WG)
                fold = None if not fold_qkv else att.QkvFold(
                    qkv_shape, lay.rope, splits=sq, bias_off=lay.bias if c.qkv_bias else -1,
                    **({"eps": c.rms_eps, "q_off": lay.q_norm, "k_off": lay.k_norm} if a.qk_norm else {}))
                prog.add(att.attention_kernel(sa, self.gpu.subgroups_wgsl(), slots=slots, per_block=True, qkn=fold),
                         {**p, "q": b.q, **parts, **({"x": sums} if fold_qkv else {})},
                         _counted(lambda n, sa=sa: (c.n_heads, sa.max_splits, n), blocks_of))
                if not decode_only:  # (a step of decoding rows alone has no block for it)
                    prog.add(attn_kernels[win], {**p, "q": b.q, "out": b.att}, attn_grid)
                prog.add(ew.combine_kernel(ashape, per_block=True), {**p, **parts, "y": b.att},
                         _counted(lambda n, g=groups: (g, n, 1), blocks_of))
            elif tiles is not None and tiles.splits > 1:  # partials of the keys' parts, then merged
                tparts = self._attn_parts(tiles.splits)
                prog.add(attn_kernels[win], {**p, "q": b.q, **tparts}, attn_grid)
                prog.add(at.prompt_attention_combine_kernel(self.attention_spec(i), tiles), {**p, **tparts, "out": b.att},
                         at.prompt_attention_combine_grid(full))
            else:
                prog.add(attn_kernels[win], {**p, "q": b.q, "out": b.att}, attn_grid)
            if not split_keys:
                self._add_mm(prog, s_o, "o", {**p, **L.o.bindings(), "x": b.att, **o_out}, count=rows_of, thin=thin)
            if post:
                prog.add(post_norm_kernel(c.hidden, c.rms_eps, lay.attn_post, so, next_off=lay.ffn, y_f16=half_ffn),
                         {**p, "x": b.h, "part": b.kpart, "y": b.xn}, rows)
            elif not (fuse and dense):  # (fused: in gate/up's prologue)
                y16 = {"y16": b.experts.xn16} if half.expert_in and b.experts else {}
                prog.add(norm_ffn, {**p, "x": b.h, "part": b.kpart, "y": b.xn, **y16}, rows)
            if (m := a.experts(i)) is not None:
                self._experts_prompt(prog, L, p, m, rows_of, half, record=not thin and slots is None, listed=not thin)
                continue
            mm(s_gu, "gate_up", sg, {**L.gate_up.bindings(), "x": x_gu}, {"y": b.act}, p)
            self._add_mm(prog, s_dn, "down", {**p, **L.down.bindings(), "x": b.act, "y": b.kpart if sd > 1 or post else b.h},
                         count=rows_of, thin=thin)
            if post:
                prog.add(post_norm_kernel(c.hidden, c.rms_eps, lay.ffn_post, sd), {**p, "x": b.h, "part": b.kpart}, rows)
        if sd > 1 and not post:  # the last layer's down partials
            prog.add(rmsnorm_kernel(c.hidden, c.rms_eps, partials=sd, norm=False),
                     {**base, "x": b.h, "part": b.kpart}, rows)

    def _half_rows(self, thin: int, slots: Any) -> HalfRows:
        """Tuning.x_f16 for a prompt's layers (HalfRows), each where every reader of those rows
        takes the f16 tiles; Tuning.batch_x_f16 likewise for a batched step of several rows
        (xn for QKV and gate/up, gate/up's outputs for down: its attention's rows and a
        mixture's stay f32)."""
        w, a = self.weights, self.cfg.architecture
        batched = slots is not None and thin != 1
        if not (self.tuning.batch_x_f16 if batched else self.tuning.x_f16 and not thin and slots is None):
            return HalfRows()
        if batched and thin:  # (the thin matmuls off the tiles read f32 rows alone)
            tiled = lambda spec: spec.k % 8 == 0 and self._batch_tiles(spec)  # noqa: E731
        else:
            tiled = lambda spec: spec.k % 8 == 0 and self.mm_path(spec) == "f16"  # noqa: E731
        gate_up = a.moe is None and all(tiled(self.spec(L.gate_up, epilogue=self.act)) for L in w.layers)
        if batched:
            return HalfRows(qkv=all(tiled(self.qkv_spec(L, self.qkv_shape())) for L in w.layers), ffn=gate_up,
                            act=gate_up and all(tiled(self.spec(L.down)) for L in w.layers))
        experts = [self._expert_specs(L, m) for i, L in enumerate(w.layers) if (m := a.experts(i)) is not None]
        return HalfRows(qkv=all(tiled(self.qkv_spec(L, self.qkv_shape())) for L in w.layers), ffn=gate_up,
                        act=gate_up and all(tiled(self.spec(L.down)) for L in w.layers),
                        att=all(tiled(self.o_spec(L)) for L in w.layers),
                        expert_in=bool(experts) and all(tiled(gu) for gu, _ in experts),
                        expert_act=bool(experts) and all(tiled(gu) and tiled(dn) for gu, dn in experts))

    def _expert_specs(self, L: LayerWeights, m: Moe, half: HalfRows | None = None,
                      listed: bool = False) -> tuple[LinearSpec, LinearSpec]:
        """A mixture's prompt expert gate/up and down over the batch's (row, slot) pairs, with
        `half`'s f16 rows (gate/up reading xn's, writing its outputs so for down); `listed`:
        where Tuning.expert_list asks and both take the f16 tiles, their grid the tile list of
        each expert's blocks (Experts.tiles) that the group kernel writes."""
        pairs, half, loop = self.batch * m.used, half or HalfRows(), self.tuning.expert_loop
        specs = (self.spec(L.gate_up, epilogue=self.act, experts=Experts(m.count, m.used, rows=pairs, loop=loop),
                           x_f16=half.expert_in, y_f16=half.expert_act, **self._bias(m, "gate_up")),
                 self.spec(L.down, experts=Experts(m.count, m.used, x_per_slot=True, rows=pairs, loop=loop),
                           x_f16=half.expert_act, **self._bias(m, "down")))
        if not (listed and self.tuning.expert_list and all(self.mm_path(s) == "f16" for s in specs)):
            return specs
        # (the token blocks _add_mm's tiles will take: one list serves both where they agree)
        bms = {self._prompt_tiles(s, role).bm for s, role in zip(specs, ("gate_up", "down"))}
        if len(bms) > 1:
            return specs
        bm = bms.pop()
        gu, dn = (replace(s, experts=replace(s.experts, loop=False, tiles=bm)) for s in specs if s.experts)
        return gu, dn

    def _bias(self, m: Moe, part: str) -> dict[str, Any]:
        """A mixture's router or experts' bias (gpt-oss), as linear-spec settings."""
        if not m.bias:
            return {}
        return {"bias": True, "bias_off": getattr(self.weights.layout, f"{part}_bias")}

    def _experts_prompt(self, prog: Program, L: LayerWeights, p: dict[str, Any], m: Moe,
                        rows_of: Callable[[Any], int] | None = None, half: HalfRows | None = None,
                        record: bool = True, listed: bool = True) -> None:
        """A mixture of experts over the prompt's rows (their normed rows in xn; a batched
        step's rows, `rows_of(n)` of them, alike: each row's FFN is its own): the router, each
        row's chosen experts, the (row, slot) pairs grouped by expert, each expert's gate/up
        and down over the pairs routed to it, and the weighted sums into h."""
        b, e = self.buf, self.buf.experts
        assert e is not None and L.router is not None
        pairs = self.batch * m.used
        tables = {"route": e.route, "groups": e.groups}
        s_r = self.spec(L.router, **self._bias(m, "router"))
        splits = self.tuning.router_splits if not m.bias else 1  # (a bias is added once: not to partial sums)
        if splits > 1:
            s_r = replace(s_r, epilogue="partial", splits=splits)
        self._add_mm(prog, s_r, "router", {**p, **L.router.bindings(), "x": b.xn, "y": e.logits}, count=rows_of,
                     record=record)
        prog.add(self._route(self._router(m, splits)), {**p, "x": e.logits, **tables},
                 _counted(lambda n: (n, 1, 1), rows_of))
        s_gu, s_dn = self._expert_specs(L, m, half, listed)
        assert s_gu.experts is not None
        prog.add(moe.group_kernel(m.count, m.used, pairs, s_gu.experts.tiles), {**p, **tables}, (1, 1, 1))
        x = e.xn16 if s_gu.x_f16 else b.xn
        self._add_mm(prog, s_gu, "gate_up", {**p, **L.gate_up.bindings(), **tables, "x": x, "y": e.act}, count=rows_of,
                     record=record)
        self._add_mm(prog, s_dn, "down", {**p, **L.down.bindings(), **tables, "x": e.act, "y": e.y}, count=rows_of,
                     record=record)
        prog.add(moe.combine_kernel(self.cfg.hidden, m.used, m.count, pairs), {**p, **tables, "y": e.y, "h": b.h},
                 _counted(moe.combine_grid(self.cfg.hidden), rows_of))

    def _router(self, m: Moe, splits: int = 1) -> moe.Router:
        """A mixture's choice of experts (by subgroup operations where Tuning.route_subgroups
        asks), from `splits` rows of partial logits a token."""
        return moe.Router(m.count, m.used, m.normalize, subgroups=self.tuning.route_subgroups, splits=splits)

    def _route(self, router: moe.Router) -> Any:
        return moe.route_kernel(router, self.gpu.subgroups_wgsl())

    def _experts_decode(self, d: Program, L: LayerWeights, p: dict[str, Any], m: Moe) -> None:
        """A mixture of experts for one token: the router's mat-vec and choice, then mat-vecs
        of the chosen experts' rows only (their ids read from the route table on the GPU),
        and their weighted sum into h (by its own kernel, or with `fold_combine` by down's)."""
        b, e, lay = self.buf, self.buf.experts, self.weights.layout
        assert e is not None and L.router is not None
        s_r = self.spec(L.router, prologue="rmsnorm", nw_off=lay.ffn, **self._bias(m, "router"))
        d.add(self._mv(s_r, "router"), {**p, **L.router.bindings(), "x": b.h, "y": e.logits}, self._mvg(s_r, "router"))
        router = self._router(m)
        if not self.tuning.fold_route:
            d.add(self._route(router), {**p, "x": e.logits, "route": e.route}, (1, 1, 1))
        s_gu = self.spec(L.gate_up, epilogue=self.act, prologue="rmsnorm", nw_off=lay.ffn,
                         experts=Experts(m.count, m.used, router=router if self.tuning.fold_route else None),
                         **self._bias(m, "gate_up"))
        d.add(self._mv(s_gu, "gate_up"), {**p, **L.gate_up.bindings(), "route": e.route, "rl": e.logits, "x": b.h,
                                          "y": e.act}, self._mvg(s_gu, "gate_up"))
        combine = self.tuning.fold_combine and self.tuning.row_blocks("down") == 1
        s_dn = self.spec(L.down, epilogue="add" if combine else "store",
                         experts=Experts(m.count, m.used, x_per_slot=True, combine=combine), **self._bias(m, "down"))
        d.add(self._mv(s_dn, "down"), {**p, **L.down.bindings(), "route": e.route, "x": e.act,
                                       "y": b.h if combine else e.y}, self._mvg(s_dn, "down"))
        if not combine:
            d.add(moe.combine_kernel(self.cfg.hidden, m.used), {**p, "route": e.route, "y": e.y, "h": b.h},
                  moe.combine_grid(self.cfg.hidden)(1))

    def no_persist(self, why: str) -> None:
        """Give up the persistent decode layers (saying why): one dispatch per kernel."""
        self.tuning = replace(self.tuning, persist=0)
        self.persist_note = why + ": one dispatch per kernel instead"
        self.decode = self.decode_program("fused")

    def decode_program(self, kind: str) -> Program:
        """Embedding, then each layer as `kind` says: "fused" (5 dispatches), "unfused" (13),
        "persistent" (one), or "stages" (the persistent layer's stages, a dispatch each: what
        it must compute, bit for bit)."""
        layer: Callable[..., None] = {"fused": self._decode_layer_fused, "unfused": self._decode_layer_unfused,
                                      "persistent": self._decode_layer_persistent,
                                      "stages": self._decode_layer_stages}[kind]
        g, c, b = self.gpu, self.cfg, self.buf
        base = self._base()
        d = Program(g, "decode")
        emb = self.weights.embedding
        d.add(embed_kernel(LinearSpec(k=c.hidden, segments=emb.segments), scale=c.architecture.embed_scale),
              {**base, **emb.bindings(), "x": b.h}, (1, 1, 1))
        qkv_shape = self.qkv_shape()
        layers = self.weights.layers
        # Gemma's output norms folded into the next mat-vec's prologue (Tuning.fold_post_norm)
        fold = kind == "fused" and c.architecture.post_norms and self.tuning.fold_post_norm
        for i, L in enumerate(layers):
            split, ashape = self.split_attention(i)
            extra = {"post_in": layers[i - 1].params if i > 0 else None, "post_ffn": i < len(layers) - 1} if fold else {}
            layer(d, L, {**self._layer_bindings(i, L), "ml": b.ml, "acc": b.acc}, qkv_shape, split, ashape, **extra)
        return d

    def _decode_layer_fused(self, d: Program, L: LayerWeights, p: dict[str, Any], qkv_shape: QkvShape,
                            split: att.AttentionSpec, ashape: AttnShape, post_in: Any = None,
                            post_ffn: bool = False) -> None:
        """`post_in` (output norms folded): the previous layer's parameters, whose down output
        norm QKV's prologue applies, the residual then in h2, written back to h; `post_ffn`:
        gate/up's prologue applies O's output norm, h to h2 (the next QKV takes it back)."""
        c, b, lay = self.cfg, self.buf, self.weights.layout
        a, one = c.architecture, (1, 1, 1)
        x_qkv: dict[str, Any] = {"x": b.h}
        if post_in is None:
            s_qkv = self.qkv_spec(L, qkv_shape, prologue="rmsnorm", nw_off=0)
        else:
            s_qkv = self.qkv_spec(L, qkv_shape, prologue="post", nw_off=0, post_off=lay.ffn_post)
            x_qkv = {"x": b.h2, "part": b.kpart, "ppv": post_in, "hout": b.h}
        if a.qk_norm:  # raw rows, then the per-head norms, RoPE and the KV append ...
            d.add(self._mv(s_qkv, "qkv"), {**p, **L.qkv.bindings(), **x_qkv, "y": b.qkv}, self._mvg(s_qkv, "qkv"))
        else:
            d.add(self._mv(s_qkv, "qkv"), {**p, **L.qkv.bindings(), **x_qkv, "q": b.q}, self._mvg(s_qkv, "qkv"))
        if a.qk_norm and self.tuning.fold_qk_norm:  # ... in the attention kernel itself
            qkn = att.QkvFold(qkv_shape, lay.rope, eps=c.rms_eps, q_off=lay.q_norm, k_off=lay.k_norm)
            d.add(att.attention_kernel(split, self.gpu.subgroups_wgsl(), qkn=qkn), {**p, "x": b.qkv},
                  att.attention_grid(split))
        else:
            if a.qk_norm:  # ... in a kernel of their own
                d.add(self.qk_norm(qkv_shape), {**p, "x": b.qkv, "q": b.q}, qk_norm_grid(qkv_shape)(1))
            d.add(att.attention_kernel(split, self.gpu.subgroups_wgsl()), {**p, "q": b.q}, att.attention_grid(split))
        # O's input: the attention's partials merged in its prologue, or (Tuning.merge_apart) once
        # by the combine kernel into att
        merged: dict[str, Any] = {"prologue": "attn", "attn": ashape}
        x_o: dict[str, Any] = {}
        if self.tuning.merge_apart:
            d.add(ew.combine_kernel(ashape), {**p, "y": b.att}, ew.grid(c.q_dim // 4))
            merged, x_o = {}, {"x": b.att}
        if a.post_norms:  # O's row, then its norm added to h
            s_o = self.o_spec(L, **merged)
            d.add(self._mv(s_o, "o"), {**p, **L.o.bindings(), **x_o, "y": b.kpart}, self._mvg(s_o, "o"))
            if not post_ffn:
                d.add(post_norm_kernel(c.hidden, c.rms_eps, lay.attn_post), {**p, "x": b.h, "part": b.kpart}, one)
        else:
            s_o = self.o_spec(L, epilogue="add", **merged)
            d.add(self._mv(s_o, "o"), {**p, **L.o.bindings(), **x_o, "y": b.h}, self._mvg(s_o, "o"))
        if L.router is not None and a.moe is not None:
            self._experts_decode(d, L, p, a.moe)
            return
        if post_ffn:
            s_gu = self.spec(L.gate_up, epilogue=self.act, prologue="post", nw_off=lay.ffn, post_off=lay.attn_post)
            x_gu = {"x": b.h, "part": b.kpart, "ppv": L.params, "hout": b.h2}
        else:
            s_gu = self.spec(L.gate_up, epilogue=self.act, prologue="rmsnorm", nw_off=lay.ffn)
            x_gu = {"x": b.h}
        d.add(self._mv(s_gu, "gate_up"), {**p, **L.gate_up.bindings(), **x_gu, "y": b.act}, self._mvg(s_gu, "gate_up"))
        if a.post_norms:
            s_dn = self.spec(L.down)
            d.add(self._mv(s_dn, "down"), {**p, **L.down.bindings(), "x": b.act, "y": b.kpart}, self._mvg(s_dn, "down"))
            if not post_ffn:  # (folded: the next layer's QKV applies it)
                d.add(post_norm_kernel(c.hidden, c.rms_eps, lay.ffn_post), {**p, "x": b.h, "part": b.kpart}, one)
        else:
            s_dn = self.spec(L.down, epilogue="add")
            d.add(self._mv(s_dn, "down"), {**p, **L.down.bindings(), "x": b.act, "y": b.h}, self._mvg(s_dn, "down"))

    def _layer_stages(self, L: LayerWeights, p: dict[str, Any], qkv_shape: QkvShape, split: att.AttentionSpec,
                      ashape: AttnShape) -> list[Stage]:
        """The fused layer's 5 kernels at PERSIST_WG threads, as the stages of a persistent kernel.

        Every hand-off goes to memory that no workgroup reads earlier in the dispatch: the
        residual after O goes to `h2` (not added into `h`, which QKV read), the one after
        down back to `h` (read again only by the next layer's dispatch)."""
        c, b, lay, wg = self.cfg, self.buf, self.weights.layout, PERSIST_WG
        if not c.architecture.plain:
            raise ValueError(f"the persistent decode layers do not cover {c.arch}'s per-head or output norms or experts")

        def mv(spec: LinearSpec, role: str, bufs: dict[str, Any]) -> Stage:
            shape, _ = self.matvec_shape(spec, role, wg)
            n = matvec_groups(spec, wg, shape["tpr"], self.tuning.row_blocks(role))
            return Stage(self._mv(spec, role, wg), bufs, f"{n}u", grid=grid_2d(n))

        s_qkv = self.qkv_spec(L, qkv_shape, prologue="rmsnorm", nw_off=0)
        s_o = self.o_spec(L, epilogue="add", prologue="attn", attn=ashape, residual=True)
        s_gu = self.spec(L.gate_up, epilogue=self.act, prologue="rmsnorm", nw_off=lay.ffn)
        s_dn = self.spec(L.down, epilogue="add", residual=True)
        span = split.span("st.pos")
        attention = att.attention_kernel(split, self.gpu.subgroups_wgsl(), wg)
        return [
            mv(s_qkv, "qkv", {**p, **L.qkv.bindings(), "x": b.h, "q": b.q}),
            Stage(attention, {**p, "q": b.q}, f"{c.n_heads}u * ((st.pos + {span}) / {span})", width=c.n_heads,
                  grid=att.attention_grid(split)),
            mv(s_o, "o", {**p, **L.o.bindings(), "res": b.h, "y": b.h2}),
            mv(s_gu, "gate_up", {**p, **L.gate_up.bindings(), "x": b.h2, "y": b.act}),
            mv(s_dn, "down", {**p, **L.down.bindings(), "x": b.act, "res": b.h2, "y": b.h}),
        ]

    def _decode_layer_persistent(self, d: Program, L: LayerWeights, p: dict[str, Any], qkv_shape: QkvShape,
                                 split: att.AttentionSpec, ashape: AttnShape) -> None:
        """The layer as one dispatch (kernels/persistent.py)."""
        kernel, bufs = persistent_kernel("decode_layer", self._layer_stages(L, p, qkv_shape, split, ashape),
                                         self.tuning.persist, PERSIST_WG, self.gpu.subgroups_wgsl())
        d.add(kernel, [*bufs, self.buf.sync], (self.tuning.persist, 1, 1))

    def _decode_layer_stages(self, d: Program, L: LayerWeights, p: dict[str, Any], qkv_shape: QkvShape,
                             split: att.AttentionSpec, ashape: AttnShape) -> None:
        for stg in self._layer_stages(L, p, qkv_shape, split, ashape):
            d.add(stg.kernel, stg.buffers, stg.grid)

    def _decode_layer_unfused(self, d: Program, L: LayerWeights, p: dict[str, Any], qkv_shape: QkvShape,
                              split: att.AttentionSpec, ashape: AttnShape) -> None:
        """The same layer as one kernel per operation (the pattern of eager frameworks)."""
        c, b, lay = self.cfg, self.buf, self.weights.layout
        one = (1, 1, 1)
        tmp = b.tmp

        def linear(m: GpuMatrix, x: Any, y: Any, role: str) -> None:
            s = self.o_spec(L) if m is L.o else self.spec(m)
            d.add(self._mv(s, role), {**p, **m.bindings(), "x": x, "y": y}, self._mvg(s, role))

        a = c.architecture

        def residual(x: Any, post_off: int) -> None:  # h += x, or Gemma's h += rmsnorm(x) * w
            if a.post_norms:
                d.add(post_norm_kernel(c.hidden, c.rms_eps, post_off), {**p, "x": b.h, "part": x}, one)
            else:
                d.add(ew.residual_kernel(c.hidden), {**p, "x": x, "y": b.h}, ew.grid(c.hidden // 2))

        d.add(rmsnorm_kernel(c.hidden, c.rms_eps, 0), {**p, "x": b.h, "y": b.xn}, one)
        linear(L.qkv, b.xn, tmp, "qkv")
        rows = c.q_dim + 2 * c.kv_dim
        if a.qk_norm:
            d.add(self.qk_norm(qkv_shape), {**p, "x": tmp, "q": b.q}, qk_norm_grid(qkv_shape)(1))
        else:
            d.add(ew.rope_append_kernel(qkv_shape, lay.rope, lay.bias, c.qkv_bias),
                  {**p, "x": tmp, "q": b.q}, ew.grid(rows // 2))
        d.add(att.attention_kernel(split, self.gpu.subgroups_wgsl()), {**p, "q": b.q}, att.attention_grid(split))
        d.add(ew.combine_kernel(ashape), {**p, "y": b.att}, ew.grid(c.q_dim // 4))
        linear(L.o, b.att, b.xn, "o")
        residual(b.xn, lay.attn_post)
        if L.router is not None and a.moe is not None:  # its dispatches are one an operation already
            self._experts_decode(d, L, p, a.moe)
            return
        d.add(rmsnorm_kernel(c.hidden, c.rms_eps, lay.ffn), {**p, "x": b.h, "y": b.xn}, one)
        linear(L.gate_up, b.xn, tmp, "gate_up")
        act = ew.gelu_mul_kernel if self.act == "gelu_mul" else ew.silu_mul_kernel
        d.add(act(c.intermediate), {**p, "x": tmp, "y": b.act}, ew.grid(c.intermediate))
        linear(L.down, b.act, b.xn, "down")
        residual(b.xn, lay.ffn_post)


def _counted(grid: Any, count: Callable[[Any], int] | None) -> Any:
    """`grid` of a Program's n, or of `count(n)` where n is not the row count itself."""
    if count is None:
        return grid
    return lambda n: grid(count(n))
