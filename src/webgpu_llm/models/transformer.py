"""The Llama/Qwen2 decoder on the GPU: weights, KV cache, activations and bound Programs.

Programs built here (each bound once, replayed with one submit):
  prefill  embed + per layer [RMSNorm, QKV matmul (+bias, RoPE, KV append), causal attention,
           O matmul + residual, RMSNorm, gate/up matmul + SiLU·mul, down matmul + residual];
           a function of the token count n (grids scale with n)
  decode   per layer, 5 fused dispatches: RMSNorm+QKV mat-vec(+bias, RoPE, KV append),
           split-K attention, combine+O mat-vec+residual, RMSNorm+gate/up mat-vec+SiLU·mul,
           down mat-vec+residual; with `Tuning.persist` the same 5 kernels as the stages of
           one persistent dispatch per layer (kernels/persistent.py); with `fused=False` the
           same math in 13 plain dispatches
  head     final RMSNorm + LM head mat-vec on the batch's last token
  sampler  see kernels/sampling.py
  score    final RMSNorm of every token + LM head matmul + NLL, in chunks of the vocabulary rows
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import GpuError, ModelFileError, UserError
from ..kernels import attention as att
from ..kernels import elementwise as ew
from ..kernels import mma, sampling
from ..kernels.common import STATE_FIELDS, STATE_WORDS
from ..kernels.linear import (
    AttnShape,
    LinearSpec,
    QkvShape,
    grid_2d,
    int8_ok,
    matmul_grid,
    matmul_kernel,
    matvec_grid,
    matvec_groups,
    matvec_kernel,
    spread_ok,
)
from ..kernels.loss import nll_kernel
from ..kernels.persistent import GIVE_UP, SYNC_WORDS, Stage, persistent_kernel
from ..kernels.rows import embed_kernel, rmsnorm_kernel
from ..runtime.gpu import Gpu
from ..runtime.program import Program
from .config import ModelConfig
from .weights import GpuMatrix, Part, Tensor, rope_pair_perm, upload_matrix, vector

ROLES = ("qkv", "o", "gate_up", "down", "head")


@dataclass(frozen=True)
class Tuning:
    """Kernel shapes per device kind; bench/sweep_decode.py measures the alternatives.

    `mv` maps a matrix role to (workgroup size, threads per row pair, units in flight per
    thread) of its mat-vec; `attn_chunk` is the number of keys per split-K decode attention
    workgroup; `mm` maps a role to the tokens per thread of its prompt matmul (default 4);
    `int8` quantizes the activations of mat-vecs with quantized weights to int8 for `dot4I8Packed`;
    `splits` maps "o"/"down" to the K splits of their prompt matmul (default 1); `prefetch`
    keeps the prompt matmul's next loads in flight during the multiply; `blocks` maps a role
    to the row blocks each mat-vec workgroup takes (default 1; one prologue serves them all).
    """

    mv: tuple[tuple[str, int, int, int], ...]
    attn_chunk: int = 64
    mm: tuple[tuple[str, int], ...] = ()
    int8: bool = False
    splits: tuple[tuple[str, int], ...] = ()
    prefetch: bool = True
    blocks: tuple[tuple[str, int], ...] = ()
    mv_int8: tuple[tuple[str, int, int, int], ...] = ()  # `mv` entries for mat-vecs on the int8 path
    spread: bool = False  # float weights: a row group's threads read adjacent words (matvec_kernel)
    mv_spread: tuple[tuple[str, int, int, int], ...] = ()  # `mv` entries for mat-vecs that spread
    attn_spread: bool = False  # decode attention reads its keys by adjacent words (AttentionSpec.spread)
    int8_direct: bool = False  # int8 mat-vecs with a plain input quantize x from memory (no staging)
    early: int = 0  # float mat-vecs request their first `early` units' weights before the prologue
    # decode layers as one persistent dispatch each on this many resident workgroups of
    # PERSIST_WG threads (all must fit on the GPU at once), 0: one dispatch per kernel
    persist: int = 0
    # prompt matmuls whose weights have int8 units (formats.MMA_FORMATS) on the GPU's matrix
    # units (kernels/mma.py): "auto" where the device has int8 subgroup matrices, "off", or
    # "emulate" (the same kernel with dot4I8Packed tiles, on any device: for tests)
    mma: str = "auto"

    def tm(self, role: str) -> int:
        return dict(self.mm).get(role, 4)

    def split(self, role: str) -> int:
        return dict(self.splits).get(role, 1)

    def row_blocks(self, role: str) -> int:
        return dict(self.blocks).get(role, 1)

    def shape(self, role: str, int8: bool = False, spread: bool = False) -> dict[str, int]:
        for r, wg, tpr, ilp in (*(self.mv_int8 if int8 else ()), *(self.mv_spread if spread else ()), *self.mv):
            if r == role:
                return {"wg": wg, "tpr": tpr, "ilp": ilp}
        raise KeyError(role)

    @staticmethod
    def default(gpu: Gpu, hidden: int = 0, head_dim: int = 0) -> Tuning:
        """The measured shapes for this adapter kind; `hidden` (the model width) picks the
        wide-model variant at 1536 and up, `head_dim` the decode attention's keys per split."""
        if gpu.is_cpu:  # one SIMD lane per row pair: no cross-lane reduction
            # (no prefetch in the prompt matmul: pp64 of SmolLM2 on llvmpipe 9 -> 13 tok/s)
            return Tuning(tuple((r, 64, 1, 1) for r in ROLES), attn_chunk=64, prefetch=False,
                          persist=_persist_setting(gpu))
        # from bench/sweep_decode.py on an H200 (Qwen2.5-0.5B shapes, both backends, f16 and
        # q4_0; bench/NOTES.md): wide workgroups, row groups sized to the input length
        # (round 8: loads issued 2-4 units at a time moved nothing; the prompt matmul's tm=8
        # is 3 % faster for gate/up only; int8 activations decode q8_0/q4_0 13-17 % faster;
        # K split 2 / 4 ways for the prompt's O / down saves 7-8 %; rounds 8, 11, 13, 15 in
        # bench/NOTES.md)
        # (round 27: row groups wider than a subgroup reduce in one barrier, which made 64 and
        # 128 threads per row pair the fastest for the O and down projections -- but not on the
        # int8 path, whose prologue quantizes x per workgroup: fewer, wider workgroups there)
        # (round 28: the int8 LM head is 1-2 % faster at 256 threads, 8 per row pair; the float
        # one 1 % slower there)
        # (round 39: float weights read by adjacent words, `spread`: step -10 to -22 %; the
        # down projection then takes 256 threads per row pair on both models and backends --
        # only where it spreads: the 1.5B q8_0/q4_0 down (float path) lost 3-5 % at 256;
        # round 40: the decode attention's keys read the same way, step -3 to -4 %)
        # (round 42: swept on the 1.5B, a wider model's gate/up wants 8 threads per row pair
        # with 2 units in flight on every weight type, and its int8 QKV and O 64 threads:
        # 1.5B q8_0 step -12 %, q4_0 -15 %, f16 -2 %; the 0.5B keeps its shapes)
        # (round 45: int8 mat-vecs with a plain input quantize x from memory, unstaged: the
        # 1.5B's down then fits the int8 path: 1.5B q8_0/q4_0 -6 %, 0.5B -2 % a step; rounds
        # 46-47: every quantized format has the int8 path)
        # (round 51: float mat-vecs that request their first unit's weights before the
        # prologue, `early`: 0.5B step -2 % f16, -6 % f32 on Dawn, but +4 % on wgpu-native and
        # +7 % on the 1.5B f16: Dawn and narrow models only)
        # (round 53: heads of 128 dimensions take 64 keys per split: 1.5B step -2 to -3 % on
        # both backends; 64-dimension heads keep 32)
        # (round 60: the decode layers as persistent dispatches on two workgroups per SM, Dawn:
        # 0.5B f16 +11 %, q8_0 +5 %, q4_0 +6 % tok/s; wgpu-native +4 / 0 / -2 %; one per SM
        # is slower than none; round 62: a 1.5B layer fits only one per SM, so the build's check
        # falls back there; round 68: an H100 +13 / +10 / +9 % at 228; round 69: SmolLM2's
        # shape +14 / +24 % (f16 / q4_1), Llama-3.2-1B's f16 +11 %, its q4_1 falls back)
        # Off by default all the same: rounds 72-73 caught rare wrong steps (about 1 in 100 of
        # the load check's runs under stress), a race that WGSL cannot close (no device-scope
        # fence). WEBGPU_LLM_PERSIST=N or =auto (PERSIST_GROUPS) turns it on.
        wide = hidden >= 1536
        gate_up = ("gate_up", 256, 8, 2) if wide else ("gate_up", 128, 16, 1)
        wide_int8 = (("qkv", 256, 64, 1), ("o", 256, 64, 2)) if wide else (("o", 256, 32, 1),)
        return Tuning((("qkv", 256, 32, 1), ("o", 256, 64, 1), gate_up, ("down", 128, 128, 1),
                       ("head", 128, 16, 1)), attn_chunk=64 if head_dim >= 128 else 32, mm=(("gate_up", 8),), int8=True,
                      splits=(("o", 2), ("down", 4)),
                      mv_int8=(*wide_int8, ("down", 256, 64, 1), ("head", 256, 8, 1)), spread=True,
                      mv_spread=(("down", 256, 256, 1),), attn_spread=True, int8_direct=True,
                      early=int(gpu.backend == "dawn" and not wide), persist=_persist_setting(gpu))


PERSIST_WG = 256  # threads of a persistent workgroup (512 and 1024 were slower: NOTES round 55)
# WEBGPU_LLM_PERSIST=auto by adapter, as measured (bench/NOTES.md rounds 60-62, 68, 71):
# up to two workgroups per SM fit (three do not); 228 of the 132 SMs' 264 places are 0.5-2 %
# faster than all 264 on both
PERSIST_GROUPS = {"H200": 228, "H100": 228}


def _persist_setting(gpu: Gpu) -> int:
    """`WEBGPU_LLM_PERSIST`: workgroups of the persistent decode layers (unset or 0: off;
    `auto`: PERSIST_GROUPS' figure for this adapter, off if it has none). The build checks
    whatever is asked for and falls back."""
    env = os.environ.get("WEBGPU_LLM_PERSIST", "").strip()
    if not env:
        return 0
    if env == "auto":
        device = str(gpu.info.get("device", ""))
        return next((n for name, n in PERSIST_GROUPS.items() if name in device), 0)
    if not env.isdigit():
        raise UserError(f"WEBGPU_LLM_PERSIST must be a number of workgroups (0 = off) or auto, not {env!r}")
    return int(env)


SPLIT_MAX = 4  # most K splits of a prompt matmul (sizes the partial-sum buffer)
SCORE_ROWS = 64  # tokens per LM-head matmul when every position's logits are needed


def _a4(n: int) -> int:
    return -(-n // 4) * 4


@dataclass
class Layer:
    qkv: GpuMatrix
    o: GpuMatrix
    gate_up: GpuMatrix
    down: GpuMatrix
    pv: Any  # [attn_norm | ffn_norm | qkv bias | rope inv_freq]
    kv: Any  # K cache then V cache, each (kv_heads, ctx, head_dim) f32


class Transformer:
    def __init__(self, gpu: Gpu, cfg: ModelConfig, get: Callable[[str], Tensor | None], ctx: int,
                 batch: int = 512, fused: bool = True, tuning: Tuning | None = None,
                 progress: Callable[[int], None] | None = None) -> None:
        self.gpu, self.cfg, self.ctx, self.fused = gpu, cfg, ctx, fused
        self.tuning = tuning or Tuning.default(gpu, cfg.hidden, cfg.head_dim)
        self.batch = max(1, min(batch, ctx))
        c = cfg
        self.off_ffn = _a4(c.hidden)
        self.off_bias = self.off_ffn + _a4(c.hidden)
        self.off_rope = self.off_bias + (_a4(c.q_dim + 2 * c.kv_dim) if c.qkv_bias else 0)
        self.pv_size = self.off_rope + _a4(c.head_dim // 2)

        def need(name: str) -> Tensor:
            t = get(name)
            if t is None:
                raise ModelFileError(f"the model has no tensor {name!r}; the file is incomplete or of another architecture")
            return t

        qperm = rope_pair_perm(c.n_heads, c.head_dim) if c.rope_neox else None
        kperm = rope_pair_perm(c.n_kv_heads, c.head_dim) if c.rope_neox else None
        inv_freq = c.inv_freq()
        self.embedding = upload_matrix(gpu, [Part(need("token_embd.weight"))], "token_embd", progress)
        out = None if c.tie_embeddings else get("output.weight")
        self.lm_head = self.embedding if out is None else upload_matrix(gpu, [Part(out)], "output", progress)
        self.pv_out = gpu.upload(self._pad(vector(need("output_norm.weight")), _a4(c.hidden)), "output_norm")
        self.layers: list[Layer] = []
        for i in range(c.n_layers):
            b = f"blk.{i}."
            qkv = upload_matrix(gpu, [Part(need(b + "attn_q.weight"), qperm), Part(need(b + "attn_k.weight"), kperm),
                                      Part(need(b + "attn_v.weight"))], b + "qkv", progress)
            pv = np.zeros(self.pv_size, np.float32)
            pv[: c.hidden] = vector(need(b + "attn_norm.weight"))
            pv[self.off_ffn: self.off_ffn + c.hidden] = vector(need(b + "ffn_norm.weight"))
            if c.qkv_bias:
                bq, bk = vector(need(b + "attn_q.bias")), vector(need(b + "attn_k.bias"))
                if qperm is not None and kperm is not None:
                    bq, bk = bq[qperm], bk[kperm]
                pv[self.off_bias: self.off_bias + c.q_dim + 2 * c.kv_dim] = np.concatenate(
                    [bq, bk, vector(need(b + "attn_v.bias"))])
            pv[self.off_rope: self.off_rope + c.head_dim // 2] = inv_freq
            self.layers.append(Layer(
                qkv=qkv,
                o=upload_matrix(gpu, [Part(need(b + "attn_output.weight"))], b + "o", progress),
                gate_up=upload_matrix(gpu, [Part(need(b + "ffn_gate.weight")), Part(need(b + "ffn_up.weight"))],
                                      b + "gate_up", progress),
                down=upload_matrix(gpu, [Part(need(b + "ffn_down.weight"))], b + "down", progress),
                pv=gpu.upload(pv, b + "params"),
                kv=gpu.buffer(2 * c.kv_dim * ctx * 4, b + "kv_cache"),
            ))
        self._check_shapes()
        self._alloc()
        self._build()

    @staticmethod
    def _pad(a: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        out[: len(a)] = a
        return out

    def _check_shapes(self) -> None:
        c, L = self.cfg, self.layers[0]
        want = {"qkv": (c.q_dim + 2 * c.kv_dim, c.hidden), "o": (c.hidden, c.q_dim),
                "gate_up": (2 * c.intermediate, c.hidden), "down": (c.hidden, c.intermediate)}
        for name, (rows, k) in want.items():
            m: GpuMatrix = getattr(L, name)
            if (m.rows, m.k) != (rows, k):
                raise ModelFileError(f"layer 0 {name} weights are {m.rows}x{m.k}, the config says {rows}x{k}")
        if self.embedding.k != c.hidden or self.lm_head.k != c.hidden:
            raise ModelFileError("embedding width does not match the hidden size")

    # -- buffers ---------------------------------------------------------------------------
    def _alloc(self) -> None:
        g, c, T = self.gpu, self.cfg, self.batch
        self.st = g.buffer(STATE_WORDS * 4, "state")
        self.tokens = g.buffer((self.ctx + 8) * 4, "tokens")
        self.h = g.buffer(T * c.hidden * 4, "residual")
        self.h2 = g.buffer(c.hidden * 4, "residual_mid")  # a persistent layer's residual after O
        self.sync = g.buffer(SYNC_WORDS * 4, "persistent_sync")
        self.xn = g.buffer(T * max(c.hidden, c.q_dim) * 4, "normed")
        self.q = g.buffer(T * c.q_dim * 4, "q")
        self.att = g.buffer(T * c.q_dim * 4, "attn_out")
        self.act = g.buffer(T * c.intermediate * 4, "ffn_act")
        self.score_rows = min(SCORE_ROWS, T)
        self.logits = g.buffer(self.score_rows * c.vocab * 4, "logits")
        # split-K partials sized for the smallest chunk any tuning may use
        most_splits = -(-self.ctx // 16)
        self.ml = g.buffer(c.n_heads * most_splits * 8, "attn_ml")
        self.acc = g.buffer(c.n_heads * most_splits * c.head_dim * 4, "attn_acc")
        nwg = sampling.scan_workgroups(c.vocab)
        self.part = g.buffer(nwg * 8, "sample_part")
        self.cand = g.buffer(nwg * sampling.CAND * 8, "sample_cand")
        self.stats = g.buffer(nwg * 8, "sample_stats")
        self.nll = g.buffer(T * 4, "nll")
        self.kpart = g.buffer(T * SPLIT_MAX * c.hidden * 4, "split_k_partials")
        self.tmp = g.buffer(max(c.q_dim + 2 * c.kv_dim, 2 * c.intermediate) * 4, "unfused_tmp")
        # a prompt matmul's input as int8 units, for the matrix units (kernels/mma.py; `_add_mm`)
        self.mma_usable = mma.usable(g)
        self.xq8: Any = None
        self.xs8: Any = None

    # -- programs --------------------------------------------------------------------------
    def _spec(self, m: GpuMatrix, **kw: Any) -> LinearSpec:
        return LinearSpec(k=m.k, segments=m.segments, eps=self.cfg.rms_eps, **kw)

    def _mv_shape(self, spec: LinearSpec, role: str, wg: int = 0) -> tuple[dict[str, int], bool]:
        """The mat-vec's shape for `role` (with `wg` threads a workgroup if given), and whether
        it takes the int8 path."""
        def sized(shape: dict[str, int]) -> dict[str, int]:
            return {**shape, "wg": wg} if wg else shape

        shape = sized(self.tuning.shape(role, int8=True))
        if self.tuning.int8 and int8_ok(spec, shape["wg"], self.shared_bytes, self.tuning.int8_direct):
            return shape, True
        return sized(self.tuning.shape(role, spread=self.tuning.spread and spread_ok(spec))), False

    def _mv(self, spec: LinearSpec, role: str, wg: int = 0) -> Any:
        shape, int8 = self._mv_shape(spec, role, wg)
        return matvec_kernel(spec, subgroups=self.gpu.subgroups_wgsl(), shared_bytes=self.shared_bytes,
                             int8=int8, blocks=self.tuning.row_blocks(role), spread=self.tuning.spread,
                             int8_direct=self.tuning.int8_direct, early=self.tuning.early, **shape)

    def _mvg(self, spec: LinearSpec, role: str) -> tuple[int, int, int]:
        shape, _ = self._mv_shape(spec, role)
        return matvec_grid(spec, shape["wg"], shape["tpr"], self.tuning.row_blocks(role))

    def _on_mma(self, spec: LinearSpec) -> bool:
        mode = self.tuning.mma
        if mode not in ("auto", "off", "emulate"):
            raise ValueError(f"Tuning.mma must be auto, off or emulate, not {mode!r}")
        return mode != "off" and (self.mma_usable or mode == "emulate") and mma.mma_ok(spec)

    def _int8_units(self) -> dict[str, Any]:
        """The buffers of a matrix-unit matmul's input as int8 units, made on first use."""
        if self.xq8 is None:
            c, T = self.cfg, self.batch
            widest = max(c.hidden, c.q_dim, c.intermediate)
            self.xq8 = self.gpu.buffer(T * widest, "int8_units")
            self.xs8 = self.gpu.buffer(T * (widest // 32) * 8, "int8_unit_scales")
        return {"xq": self.xq8, "xs": self.xs8}

    def _quantize(self, prog: Program, k: int, x: Any) -> None:
        """x (the batch's rows of k values) as int8 units, for the matmuls on the matrix units."""
        prog.add(mma.quantize_kernel(k), {"st": self.st, "x": x, **self._int8_units()}, mma.quantize_grid(k))

    def _add_mm(self, prog: Program, spec: LinearSpec, role: str, bindings: dict[str, Any],
                quantized: bool = False) -> None:
        """A prompt matmul on bindings["x"]; on the matrix units, after x is quantized (unless
        `quantized`: an earlier dispatch did it)."""
        if not self._on_mma(spec):
            prog.add(matmul_kernel(spec, self.tuning.tm(role), self.tuning.prefetch), bindings,
                     matmul_grid(spec, self.tuning.tm(role)))
            return
        if not quantized:
            self._quantize(prog, spec.k, bindings["x"])
        prog.add(mma.mma_matmul_kernel(spec, emulate=not self.mma_usable), {**bindings, **self._int8_units()},
                 mma.mma_matmul_grid(spec))

    def rebuild(self, tuning: Tuning | None = None, fused: bool | None = None) -> None:
        """Rebuild the Programs with other kernel shapes or fusion (weights and caches stay)."""
        self.tuning = tuning or self.tuning
        self.fused = self.fused if fused is None else fused
        self._build()

    def _build(self) -> None:
        g, c = self.gpu, self.cfg
        self.shared_bytes = g.limits["max-compute-workgroup-storage-size"]
        qkv_shape = QkvShape(c.q_dim, c.kv_dim, c.head_dim, self.ctx)
        base = {"st": self.st, "tokens": self.tokens}

        # prefill (n tokens)
        emb = self.embedding
        embed_spec = LinearSpec(k=c.hidden, segments=emb.segments)
        self.embed = Program(g, "embed")
        self.embed.add(embed_kernel(embed_spec), {**base, **emb.bindings(), "x": self.h}, lambda n: (n, 1, 1))
        self.prefill = Program(g, "prefill")
        full = att.AttentionSpec(c.n_heads, c.n_kv_heads, c.head_dim, self.ctx)
        # O and down may split K over workgroups (Tuning.splits): their residual add then
        # moves into the next row kernel, which sums the partials into h before its RMSNorm
        so, sd = self.tuning.split("o"), self.tuning.split("down")
        if max(so, sd) > SPLIT_MAX:
            raise ValueError(f"at most {SPLIT_MAX} K splits per prompt matmul")
        rows = lambda n: (n, 1, 1)  # noqa: E731
        # the row kernels before attention (the first layer's has no partials to add) and FFN
        norm_first = rmsnorm_kernel(c.hidden, c.rms_eps, 0)
        norm_attn = rmsnorm_kernel(c.hidden, c.rms_eps, 0, partials=sd if sd > 1 else 0)
        norm_ffn = rmsnorm_kernel(c.hidden, c.rms_eps, self.off_ffn, partials=so if so > 1 else 0)
        prompt_attn = att.prompt_attention_kernel(full)

        for i, L in enumerate(self.layers):
            p = {**base, "pv": L.pv, "kv": L.kv}
            s_qkv = self._spec(L.qkv, epilogue="qkv", bias=c.qkv_bias, qkv=qkv_shape,
                               bias_off=self.off_bias, rope_off=self.off_rope)
            s_o = self._spec(L.o, **({"epilogue": "partial", "splits": so} if so > 1 else {"epilogue": "add"}))
            s_gu = self._spec(L.gate_up, epilogue="silu_mul")
            s_dn = self._spec(L.down, **({"epilogue": "partial", "splits": sd} if sd > 1 else {"epilogue": "add"}))
            self.prefill.add(norm_attn if i > 0 else norm_first,  # adds the previous layer's down partials
                             {**p, "x": self.h, "part": self.kpart, "y": self.xn}, rows)
            self._add_mm(self.prefill, s_qkv, "qkv", {**p, **L.qkv.bindings(), "x": self.xn, "q": self.q})
            self.prefill.add(prompt_attn, {**p, "q": self.q, "out": self.att}, att.prompt_attention_grid(full))
            self._add_mm(self.prefill, s_o, "o", {**p, **L.o.bindings(), "x": self.att,
                                                 "y": self.kpart if so > 1 else self.h})
            self.prefill.add(norm_ffn, {**p, "x": self.h, "part": self.kpart, "y": self.xn}, rows)
            self._add_mm(self.prefill, s_gu, "gate_up", {**p, **L.gate_up.bindings(), "x": self.xn, "y": self.act})
            self._add_mm(self.prefill, s_dn, "down", {**p, **L.down.bindings(), "x": self.act,
                                                      "y": self.kpart if sd > 1 else self.h})
        if sd > 1:  # the last layer's down partials
            self.prefill.add(rmsnorm_kernel(c.hidden, c.rms_eps, partials=sd, norm=False),
                             {**base, "x": self.h, "part": self.kpart}, rows)

        # decode (one token)
        self.persist_note = ""
        if self.fused and self.tuning.persist:
            try:
                self.decode = self._decode_program(self._decode_layer_persistent)
            except GpuError as e:  # e.g. the persistent stages' workgroup memory over the limit
                why = f"the persistent decode kernel did not build ({str(e).splitlines()[0]})"
            else:
                why = self._persistent_check()
            if why:  # one dispatch per kernel (the rest of the Programs do not depend on it)
                self.tuning = replace(self.tuning, persist=0)
                self.persist_note = why + ": one dispatch per kernel instead"
        if not (self.fused and self.tuning.persist):
            self.decode = self._decode_program(self._decode_layer_fused if self.fused else self._decode_layer_unfused)

        # head: final norm + LM head on the batch's last token
        self.head = Program(g, "head")
        s_head = self._spec(self.lm_head, prologue="rmsnorm", last_row=True)
        self.head.add(self._mv(s_head, "head"),
                      {**base, **self.lm_head.bindings(), "x": self.h, "pv": self.pv_out, "y": self.logits},
                      self._mvg(s_head, "head"))

        # samplers
        self.samplers: dict[tuple[bool, bool], Program] = {}
        for filtered in (False, True):
            for penalty in (False, True):
                sp = Program(g, "sampler")
                sb = {**base, "logits": self.logits, "part": self.part, "cand": self.cand, "stats": self.stats}
                if penalty:
                    sp.add(sampling.penalty_kernel(c.vocab), sb, (1, 1, 1))
                sp.add(sampling.scan_kernel(c.vocab, filtered), sb, (sampling.scan_workgroups(c.vocab), 1, 1))
                sp.add(sampling.pick_kernel(c.vocab, filtered), sb, (1, 1, 1))
                self.samplers[(filtered, penalty)] = sp

        # scoring: final norm of every token, then LM head + NLL per chunk of SCORE_ROWS tokens
        self.score_norm = Program(g, "score_norm")
        self.score_norm.add(norm_first, {**base, "pv": self.pv_out, "x": self.h, "y": self.xn}, rows)
        head_on_mma = self._on_mma(self._spec(self.lm_head))
        if head_on_mma:  # every chunk's LM head reads the same int8 units: made once, here
            self._quantize(self.score_norm, c.hidden, self.xn)
        self.score_chunks: list[Program] = []
        for t0 in range(0, self.batch, self.score_rows):
            pr = Program(g, f"score_{t0}")
            s = self._spec(self.lm_head, t0=t0, tmax=self.score_rows)
            self._add_mm(pr, s, "head", {**base, **self.lm_head.bindings(), "x": self.xn, "y": self.logits},
                         quantized=head_on_mma)
            pr.add(nll_kernel(c.vocab, t0), {**base, "logits": self.logits, "nll": self.nll},
                   (self.score_rows, 1, 1))
            self.score_chunks.append(pr)

    def _decode_program(self, layer: Callable[..., None]) -> Program:
        """Embedding, then each layer as `layer` adds it (one of the `_decode_layer_*`)."""
        g, c = self.gpu, self.cfg
        base = {"st": self.st, "tokens": self.tokens}
        d = Program(g, "decode")
        emb = self.embedding
        d.add(embed_kernel(LinearSpec(k=c.hidden, segments=emb.segments)), {**base, **emb.bindings(), "x": self.h},
              (1, 1, 1))
        chunk = self.tuning.attn_chunk
        split = att.AttentionSpec(c.n_heads, c.n_kv_heads, c.head_dim, self.ctx, chunk, self.tuning.attn_spread)
        ashape = AttnShape(c.n_heads, c.head_dim, chunk, split.max_splits)
        qkv_shape = QkvShape(c.q_dim, c.kv_dim, c.head_dim, self.ctx)
        for L in self.layers:
            layer(d, L, {**base, "pv": L.pv, "kv": L.kv, "ml": self.ml, "acc": self.acc}, qkv_shape, split, ashape)
        return d

    def _decode_layer_fused(self, d: Program, L: Layer, p: dict[str, Any], qkv_shape: QkvShape,
                            split: att.AttentionSpec, ashape: AttnShape) -> None:
        c = self.cfg
        s_qkv = self._spec(L.qkv, epilogue="qkv", prologue="rmsnorm", bias=c.qkv_bias, qkv=qkv_shape,
                           nw_off=0, bias_off=self.off_bias, rope_off=self.off_rope)
        d.add(self._mv(s_qkv, "qkv"), {**p, **L.qkv.bindings(), "x": self.h, "q": self.q},
              self._mvg(s_qkv, "qkv"))
        d.add(att.attention_kernel(split, self.gpu.subgroups_wgsl()), {**p, "q": self.q}, att.attention_grid(split))
        s_o = self._spec(L.o, epilogue="add", prologue="attn", attn=ashape)
        d.add(self._mv(s_o, "o"), {**p, **L.o.bindings(), "y": self.h}, self._mvg(s_o, "o"))
        s_gu = self._spec(L.gate_up, epilogue="silu_mul", prologue="rmsnorm", nw_off=self.off_ffn)
        d.add(self._mv(s_gu, "gate_up"), {**p, **L.gate_up.bindings(), "x": self.h, "y": self.act},
              self._mvg(s_gu, "gate_up"))
        s_dn = self._spec(L.down, epilogue="add")
        d.add(self._mv(s_dn, "down"), {**p, **L.down.bindings(), "x": self.act, "y": self.h},
              self._mvg(s_dn, "down"))

    def _layer_stages(self, L: Layer, p: dict[str, Any], qkv_shape: QkvShape, split: att.AttentionSpec,
                      ashape: AttnShape) -> list[Stage]:
        """The fused layer's 5 kernels at PERSIST_WG threads, as the stages of a persistent kernel.

        Every hand-off goes to memory that no workgroup reads earlier in the dispatch: the
        residual after O goes to `h2` (not added into `h`, which QKV read), the one after
        down back to `h` (read again only by the next layer's dispatch)."""
        c, wg = self.cfg, PERSIST_WG

        def mv(spec: LinearSpec, role: str, bufs: dict[str, Any]) -> Stage:
            shape, _ = self._mv_shape(spec, role, wg)
            n = matvec_groups(spec, wg, shape["tpr"], self.tuning.row_blocks(role))
            return Stage(self._mv(spec, role, wg), bufs, f"{n}u", grid=grid_2d(n))

        s_qkv = self._spec(L.qkv, epilogue="qkv", prologue="rmsnorm", bias=c.qkv_bias, qkv=qkv_shape,
                           nw_off=0, bias_off=self.off_bias, rope_off=self.off_rope)
        s_o = self._spec(L.o, epilogue="add", prologue="attn", attn=ashape, residual=True)
        s_gu = self._spec(L.gate_up, epilogue="silu_mul", prologue="rmsnorm", nw_off=self.off_ffn)
        s_dn = self._spec(L.down, epilogue="add", residual=True)
        ch = split.chunk
        attention = att.attention_kernel(split, self.gpu.subgroups_wgsl(), wg)
        return [
            mv(s_qkv, "qkv", {**p, **L.qkv.bindings(), "x": self.h, "q": self.q}),
            Stage(attention, {**p, "q": self.q}, f"{c.n_heads}u * ((st.pos + {ch}u) / {ch}u)", width=c.n_heads,
                  grid=att.attention_grid(split)),
            mv(s_o, "o", {**p, **L.o.bindings(), "res": self.h, "y": self.h2}),
            mv(s_gu, "gate_up", {**p, **L.gate_up.bindings(), "x": self.h2, "y": self.act}),
            mv(s_dn, "down", {**p, **L.down.bindings(), "x": self.act, "res": self.h2, "y": self.h}),
        ]

    def _decode_layer_persistent(self, d: Program, L: Layer, p: dict[str, Any], qkv_shape: QkvShape,
                                 split: att.AttentionSpec, ashape: AttnShape) -> None:
        """The layer as one dispatch (kernels/persistent.py)."""
        kernel, bufs = persistent_kernel("decode_layer", self._layer_stages(L, p, qkv_shape, split, ashape),
                                         self.tuning.persist, PERSIST_WG, self.gpu.subgroups_wgsl())
        d.add(kernel, [*bufs, self.sync], (self.tuning.persist, 1, 1))

    def _decode_layer_stages(self, d: Program, L: Layer, p: dict[str, Any], qkv_shape: QkvShape,
                             split: att.AttentionSpec, ashape: AttnShape) -> None:
        """The persistent layer's stages, a dispatch each: what it must compute, bit for bit."""
        for stg in self._layer_stages(L, p, qkv_shape, split, ashape):
            d.add(stg.kernel, stg.buffers, stg.grid)

    def _persistent_check(self) -> str:
        """Run the decode layers persistent and as their stages one dispatch each, from the
        same state: why the persistent ones cannot be used here ("" if they can). Their
        barriers must all complete (every workgroup resident), and their residual must be the
        stages' own: the hand-offs between workgroups rely on behaviour that WGSL does not
        promise."""
        g, n = self.gpu, self.cfg.hidden
        # one token at the next position (its KV row is the next to be written anyway); the
        # state is put back after
        saved = g.read_array(self.st, np.uint32, STATE_WORDS)
        one = saved.copy()
        one[[f for f, _ in STATE_FIELDS].index("n")] = 1
        g.write(self.st, one)
        try:
            self.decode.run()
            if int(g.read_array(self.sync, np.uint32, 1, GIVE_UP * 4)[0]):
                return f"the persistent decode's barrier gave up with {self.tuning.persist} workgroups (not all resident)"
            got = g.read_array(self.h, np.float32, n)
            self._decode_program(self._decode_layer_stages).run()
            want = g.read_array(self.h, np.float32, n)
        finally:
            g.write(self.st, saved)
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        if not err < 1e-5:  # the same arithmetic: only a stale hand-off differs (NaN included)
            return f"the persistent decode's layers differ from the per-kernel ones (relative error {err:.1e})"
        return ""

    def _decode_layer_unfused(self, d: Program, L: Layer, p: dict[str, Any], qkv_shape: QkvShape,
                              split: att.AttentionSpec, ashape: AttnShape) -> None:
        """The same layer as one kernel per operation (the pattern of eager frameworks)."""
        c = self.cfg
        one = (1, 1, 1)
        tmp = self.tmp

        def linear(m: GpuMatrix, x: Any, y: Any, role: str) -> None:
            s = self._spec(m)
            d.add(self._mv(s, role), {**p, **m.bindings(), "x": x, "y": y}, self._mvg(s, role))

        d.add(rmsnorm_kernel(c.hidden, c.rms_eps, 0), {**p, "x": self.h, "y": self.xn}, one)
        linear(L.qkv, self.xn, tmp, "qkv")
        rows = c.q_dim + 2 * c.kv_dim
        d.add(ew.rope_append_kernel(qkv_shape, self.off_rope, self.off_bias, c.qkv_bias),
              {**p, "x": tmp, "q": self.q}, ew.grid(rows // 2))
        d.add(att.attention_kernel(split, self.gpu.subgroups_wgsl()), {**p, "q": self.q}, att.attention_grid(split))
        d.add(ew.combine_kernel(ashape), {**p, "y": self.att}, ew.grid(c.q_dim // 4))
        linear(L.o, self.att, self.xn, "o")
        d.add(ew.residual_kernel(c.hidden), {**p, "x": self.xn, "y": self.h}, ew.grid(c.hidden // 2))
        d.add(rmsnorm_kernel(c.hidden, c.rms_eps, self.off_ffn), {**p, "x": self.h, "y": self.xn}, one)
        linear(L.gate_up, self.xn, tmp, "gate_up")
        d.add(ew.silu_mul_kernel(c.intermediate), {**p, "x": tmp, "y": self.act}, ew.grid(c.intermediate))
        linear(L.down, self.act, self.xn, "down")
        d.add(ew.residual_kernel(c.hidden), {**p, "x": self.xn, "y": self.h}, ew.grid(c.hidden // 2))
