"""What a model load can be told, as one typed object, and the measured kernel shapes.

`Settings` is what the front ends fill (the CLI from its options and `environment.py`, the
Python API from its arguments) and pass down; `Tuning` holds the kernel shapes the Programs
are built with. The defaults below were measured on an NVIDIA H200 over both backends and on
llvmpipe; docs/performance.md says what each choice gained and what was tried instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..kernels.attention_tiles import PREFETCH_VEC4
from ..kernels.direct_tiles import DirectShape
from ..kernels.mma import TileShape
from ..runtime.gpu import GpuOptions

if TYPE_CHECKING:
    from ..runtime.gpu import Gpu

ROLES = ("qkv", "o", "gate_up", "down", "head")
MMA_MODES = ("auto", "int8", "f16", "off", "emulate", "emulate-f16")
KV_TYPES = ("auto", "f16", "f32")


SPLIT_MAX = 16  # most K splits of a matmul (the partial-sum buffers follow the tuning's)
ROUTER_SPLITS_MAX = 8  # most K splits of a mixture's prompt router (its logits buffer holds them)
ATTN_SPLITS_MAX = 32  # most parts of a prompt attention block's keys (Tuning.attn_splits)


@dataclass(frozen=True)
class Tuning:
    """Kernel shapes of a model's Programs (bench/sweep_decode.py measures alternatives).

    `mv` maps a matrix role to (workgroup size, threads per row pair, units in flight per
    thread) of its mat-vec; `attn_chunk` is the number of keys per split-K decode attention
    workgroup, `attn_wg` its threads; `mm` maps a role to the tokens per thread of its prompt matmul (default 4);
    `int8` quantizes the activations of mat-vecs with quantized weights to int8 for `dot4I8Packed`;
    `splits` maps "o"/"down"/"qkv"/"gate_up" to the K splits of their prompt matmul (default 1;
    QKV's and gate/up's epilogues then run on the sums in a kernel of their own), and
    `batch_splits` to theirs in the batched steps' f16 tiles (`batch_tiles`); not a mixture's
    QKV, gate/up or experts; at most SPLIT_MAX (16); `prefetch`
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
    attn_wg: int = 0  # threads a decode attention workgroup (AttentionSpec.wg; 0: as few as the chunk and head need)
    # the split-K decode attention requests its first chunk's keys and values before its q/k-norm
    # prologue and its scores (AttentionSpec.preload): one round trip of loads for a split of
    # one chunk, where the prologue's, the keys' and the values' came one after another. Off
    # until timed
    attn_preload: bool = False
    # O's merge of the split-K attention partials (its staged `attn` prologue) in one pass
    # over the splits for all of a thread's words at once (AttnShape.at_once): their loads in
    # one round trip a pass, where each word took two passes one word after another (the
    # 30B's O: 4 words a thread, 8 round trips before its first weight); the combine kernel's
    # merge (merge_apart's, a batched step's) in one pass too. Off until timed
    merge_at_once: bool = False
    # ... and the mat-vecs' staged plain and RMSNorm inputs likewise: a thread's words of x (2
    # for a hidden size of 2048 in 256 threads) requested together, where a loop took them a
    # round trip each before the norm's reduction (linear.input_wgsl at_once). Off until timed
    stage_at_once: bool = False
    # splits' partials the merge of the split-K attention loads in one pass (AttnShape.unroll):
    # a long context's 16-60 splits a head were ~0.4-0.5 µs each a layer one after another
    # (GPU_TUNING: COMBINE_UNROLL)
    combine_unroll: int = 1
    # split-K decode attention workgroups a head at most, one sequence's step and a batched
    # step's (0: one a chunk of the context, ctx / attn_chunk): past that many chunks of keys a
    # split takes several, so that a long context's grid (mostly empty workgroups early in a
    # sequence) and the merge of its partials stay this size (GPU_TUNING: DECODE_SPLITS)
    decode_splits: int = 0
    batch_decode_splits: int = 0
    int8_direct: bool = False  # int8 mat-vecs with a plain input quantize x from memory (no staging)
    early: int = 0  # float mat-vecs request their first `early` units' weights before the prologue
    # decode layers as one persistent dispatch each on this many resident workgroups of
    # PERSIST_WG threads (all must fit on the GPU at once), 0: one dispatch per kernel
    persist: int = 0
    # prompt matmuls on the GPU's matrix units (kernels/mma.py): "auto" takes the int8 tiles for
    # weights with int8 units (formats.MMA_FORMATS; with quant_f16 the f16 tiles first) and the
    # f16 tiles for f16/bf16 weights where the device has them; "int8" or "f16" only those tiles
    # ("f16": every format but f32, dequantized while staging); "off"; "emulate" and
    # "emulate-f16": as auto and f16, the tiles computed without matrix units where the device
    # has none (for tests)
    mma: str = "auto"
    # "auto" for quantized dense weights: dequantized into the f16 tiles where those run, before
    # the int8 tiles (pp512 on an H100: the 1.5B q4_0/q8_0 23-26 % faster, the 0.5B's 5-10 %; on
    # for GPUs, GPU_TUNING)
    quant_f16: bool = False
    tiles: tuple[int, int, int, int] = (2, 2, 2, 2)  # the f16 tiles' workgroup (mma.TileShape)
    # ... for float weights (f16, bf16); (): `tiles` (GPU_TUNING: FLOAT_TILES)
    float_tiles: tuple[int, ...] = ()
    # ... by matrix role ("qkv", "o", "gate_up", "down": (sm, sn, tm, tn)), before both: a 1.5B
    # QKV of 2048 rows in 128 x 128 tiles is 64 workgroups for 512 tokens, half an H200's SMs
    role_tiles: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    # ... by role for float weights only, before `role_tiles` (default_tuning: WIDE_FLOAT_ROLE_TILES)
    float_role_tiles: tuple[tuple[str, tuple[int, int, int, int]], ...] = ()
    # a mixture's prompt expert matmuls on the f16 tiles in workgroups of this shape (every
    # format dequantized while staging), where the f16 tiles run and mma is not "int8"/"off":
    # the experts' own workgroup shape (Qwen3-30B-A3B: 32 rows an expert on average in a
    # 512-token chunk); (): as the other matmuls; GPU_TUNING takes (2, 4, 2, 2): 64 tokens a
    # workgroup (EXPERT_TILES)
    expert_tiles: tuple[int, ...] = ()
    # ... with this many steps' loads in flight (mma.TileShape.depth; 2 is straight): the dense
    # tiles' stage_depth 2 (pp512 of the quantized 1.5B +10 %) was never given to them; untimed
    expert_depth: int = 1
    # ... and this many units of 32 inputs staged a step (mma.TileShape.ku): half the steps, each
    # a load round trip and two barriers, for an expert's few tokens; untimed
    expert_units: int = 1
    # ... on a grid of the token blocks an expert gets on average and one more, each workgroup
    # looping over its expert's further blocks (linear.Experts.loop), not of every token's block
    # for each expert (most of them empty); off until timed
    expert_loop: bool = False
    # ... or a grid of the (expert, token block) tiles there are, listed by the group kernel
    # (linear.Experts.tiles): none empty and none looping (GPU_TUNING: EXPERT_LIST)
    expert_list: bool = False
    # ... and on the int8 path (q4_0, q8_0: linear.early_ok), before x is quantized; off until timed
    int8_early: int = 0
    # the int8 mat-vecs issue the loads of their shape's `ilp` units at once (else one unit at
    # a time: the shapes' ilp was measured on the float path); on for mixtures (MOE_TUNING),
    # mixed (+-2 %) on dense models
    int8_ilp: bool = False
    # mat-vecs whose row groups are narrower than a subgroup sum them by subgroup shuffles, not
    # through workgroup memory (GPU_TUNING: MV_SHUFFLE)
    mv_shuffle: bool = False
    # units in flight of a mixture's expert mat-vecs (0: their role's shape's): Qwen3-30B-A3B's
    # expert gate/up walks 64 units in row groups of 16 lanes, four loads one after another
    expert_ilp: int = 0
    # threads a row pair of a mixture's expert mat-vecs (0: their role's): the experts' rows are
    # short (Qwen3-30B-A3B's down: 768 inputs, 24 units, for the 64-128 lanes tuned for dense down);
    # GPU_TUNING takes 16
    expert_tpr: int = 0
    # a mixture's decode router mat-vec (f32 weights of a few rows with the FFN norm) as (wg,
    # tpr, ilp), in one row block; (): O's shape and blocks (Qwen3-30B-A3B's 128 rows make 16
    # workgroups there, each walking 64 KB of weights: ~4 µs a layer for 1 MB); MOE_TUNING's
    router_mv: tuple[int, ...] = ()
    # the tile matmuls' workgroups by weight block, each block's token blocks in turn (L2 reuse
    # of the weights; mma._block_order), instead of by token block (no faster on the H200)
    tokens_first: bool = False
    # the f16 tiles' staging double-buffered (mma.TileShape.double): one barrier a step, not
    # two, for twice the workgroup memory (slower on the H200: fewer workgroups a multiprocessor)
    double_staging: bool = False
    # ... for float weights' tiles only (GPU_TUNING: on): H100, pp512 of the 1.5B f16 +4 % (twice),
    # the 0.5B f16 +5.5 %, where the quantized ones' tiles ran 12 % (1.5B q4_0) and more slower
    float_double: bool = False
    # units of 32 inputs the f16 tiles stage a step (mma.TileShape.ku): more multiply-adds
    # between two barriers, more workgroup memory (where it does not fit: 1, one buffer)
    stage_units: int = 1
    # the f16 tiles' next loads without a branch around them (mma.TileShape.straight; the
    # batched steps' shape takes it as batch_tiles' eighth field); off until timed
    straight_staging: bool = False
    # ... and the steps whose loads are in flight at once (mma.TileShape.depth: 1 or 2;
    # batch_tiles' ninth field; GPU_TUNING takes 2)
    stage_depth: int = 1
    # ... and f16 weight rows staged by several threads each where the workgroup has more
    # threads than weight rows (mma.TileShape.spread; 4x2x2x4 and 2x2x2x2: two a row); untimed
    spread_staging: bool = False
    # the prompt matmuls of these roles ("qkv", "o", "gate_up", "down") with f16 sums on the
    # f16 tiles (mma.TileShape.acc16; where the device lists f16 -> f16 tiles): half the
    # accumulators' registers, for sums rounded to f16 (its range: a role whose outputs can pass
    # 65504, as some models' down projections, must keep f32); a mixture's expert matmuls too.
    # H100, 1.5B f16 pp512 +1 %: off
    acc_f16: tuple[str, ...] = ()
    # ... and these roles' for float weights only (default_tuning: WIDE_FLOAT_ACC_F16)
    float_acc_f16: tuple[str, ...] = ()
    # the f16 tiles stage f16 words through bitcast<vec2<f16>> (mma.TileShape.bitcast), not
    # unpack2x16float's f32s converted back (H100, 1.5B f16 pp512 +1 %: off)
    stage_bitcast: bool = False
    # a prompt's norms write their rows as f16s for QKV and gate/up, gate/up its outputs for
    # down and the attention on its tiles its rows for O, where those matmuls take the f16 tiles
    # (LinearSpec.x_f16): each of a matmul's row blocks stages x from half the bytes, without
    # converting it (GPU_TUNING: on)
    x_f16: bool = False
    # prompt attention on the f16 tiles (kernels/attention_tiles.py) where the KV cache is f16
    # and the f16 tiles run (default for heads of 64 and more: LONG_HEAD_TILES)
    attn_tiles: bool = False
    # ... one sequence's prompt blocks' keys in this many parts, each a workgroup's, merged by a
    # combine kernel (attention_tiles.AttnTiles.splits): more warps for the GPU where a prompt
    # has few heads x blocks; off (1) until timed
    attn_splits: int = 1  # (1 to ATTN_SPLITS_MAX)
    # ... a chunk's keys and values loaded a chunk ahead where a thread holds at most this many
    # vec4s of each (attention_tiles.AttnTiles.prefetch; 0: never)
    attn_prefetch: int = PREFETCH_VEC4
    # the GPU's multiprocessors: where > 0, each prompt matmul on the f16 tiles splits K as
    # many ways as engine/waves.py's model of the waves its workgroups make says (QKV and
    # gate/up too), in place of `splits`; 0: `splits` as given (default_tuning: ADAPTER_SMS)
    sms: int = 0
    # decode of per-head q/k-norm models (Qwen3, Gemma 3): the norms, RoPE and KV append in the
    # attention kernel (attention.QkvFold), a dispatch less a layer (GPU_TUNING: FOLD_NORMS)
    fold_qk_norm: bool = False
    # the fused decode's split-K attention merged by a kernel of its own into one row that O
    # reads, not in each O workgroup's prologue: a dispatch more a layer for a merge done once,
    # where every O workgroup merged every head's partials before its first weight (Qwen3-30B-A3B:
    # 32 heads of 128, O ~12.6 µs a layer for 4.7 MB of weights); off until timed
    merge_apart: bool = False
    # a batched step of decoding rows alone with QKV split over K: the split-K attention sums
    # each row's QKV partials itself, with the bias, the q/k norms, RoPE and the KV append
    # (attention.QkvFold), where a split_finish kernel did (a dispatch less a layer); off until timed
    batch_fold_qkv: bool = False
    # a mixture's decode: each expert gate/up workgroup chooses the experts itself from the
    # router's logits (moe.route_wgsl), a dispatch less a layer; off until measured
    fold_route: bool = False
    # a mixture's decode: the down mat-vec adds each row's gate-weighted experts into h itself
    # (linear.Experts.combine: a row group for each chosen expert), a dispatch less a layer;
    # H100, Qwen3-30B-A3B tg128 327.1 / 327.6 -> 326.1 / 326.3: off
    fold_combine: bool = False
    # a mixture's choice of experts by subgroup operations (moe.route_subgroup_wgsl), not by
    # ranking each expert against all the others in workgroup memory (GPU_TUNING: on)
    route_subgroups: bool = False
    # a mixture's prompt router matmul (f32 weights of a few rows: Qwen3-30B-A3B's 128 make 16
    # workgroups at 512 tokens, each walking K = 2048) split K this many ways, the route kernel
    # summing the parts (1 to ROUTER_SPLITS_MAX; not where the router has a bias; GPU_TUNING: 8)
    router_splits: int = 1
    # batched steps (engine/batch.py thin_level): up to `thin_rows` rows on thin matmuls of
    # `thin_tokens` rows a pass over the weights, more on the prompt matmuls
    thin_rows: int = 32
    thin_tokens: int = 8
    # ... and on the f16 tiles in workgroups of this shape (mma.TileShape; every format but f32
    # dequantized while staging; O and down split K as `splits` says) where those run and mma
    # is not "int8"/"off", the steps past thin_rows too; (): the thin and prompt matmuls as
    # above (GPU_TUNING: BATCH_TILES)
    batch_tiles: tuple[int, ...] = ()
    # ... and the LM head's shape there ((): batch_tiles'): its vocabulary of rows fills the GPU
    # with any shape, and 16 tokens a workgroup read its weights again for each 16 rows (the
    # 1.5B f16's head 0.47 ms at 32 rows, 0.91 at 64: weight traffic); off until timed
    batch_head_tiles: tuple[int, ...] = ()
    # ... and f16 weights there on the direct f16 tiles in workgroups of this shape
    # (direct_tiles.DirectShape: tm, tn, sn, sk, kc, ahead): each weight fragment loaded from
    # the weight buffer itself, several steps ahead with no barrier between, where the staged
    # tiles walk K a round trip and two barriers every 32 inputs; (): the staged tiles. Off
    # until timed
    batch_direct: tuple[int, ...] = ()
    # ... and with them, a quantized model's dense matrices (and LM head) copied as f16 weights
    # for those steps (on the GPU, once; ~3.6x a q4_0 model's bytes more), so that its batched
    # steps take the direct tiles too: more bytes a step, without the staged tiles' round trips.
    # Off until timed
    batch_f16_weights: bool = False
    # ... and a batched step's norms write xn as f16s for QKV and gate/up, gate/up its outputs
    # as f16s for down, where those take the tiles (as x_f16 does for prompts, +20-28 % there:
    # half the bytes staged, no conversion while staging). Off until timed
    batch_x_f16: bool = False
    # ... and their K splits by role (o, down, qkv, gate_up): a few rows leave a narrow model's
    # matmuls a dozen 128-row workgroups, each walking all of K (GPU_TUNING: BATCH_SPLITS)
    batch_splits: tuple[tuple[str, int], ...] = ()
    # ... and those of steps of at most `few_rows` rows, where more splits pay ((): batch_splits)
    batch_splits_few: tuple[tuple[str, int], ...] = ()
    few_rows: int = 32
    # a batched step of one row (one stream decoding) on the one-sequence decode's kernels
    # (mat-vecs, split-K attention), not on the thin matmuls; on by reasoning and llvmpipe,
    # not yet timed on a GPU (off gives the earlier path, for the comparison)
    batch_one_row: bool = True
    # the batched prompt attention packs the heads of a KV head into a workgroup for short
    # blocks (a decoding stream's one row); as batch_one_row, on before a GPU timed it
    pack_heads: bool = True
    # batched steps of several rows: their one-row query blocks (decoding streams) on the
    # split-K decode attention over their pages, merged by a combine kernel; the prompt kernel
    # walks every key of a row in one workgroup, slow at long contexts (on in GPU_TUNING; the
    # f16-tile prompt attention leaves them to it too)
    batch_split_keys: bool = False
    # decode of models with output norms (Gemma 2/3): each norm and residual add in the next
    # mat-vec's prologue (linear.input_wgsl "post"), two dispatches less a layer (GPU_TUNING: FOLD_NORMS)
    fold_post_norm: bool = False
    # batched steps in flight before the engine thread waits for the oldest's tokens: more
    # keeps the GPU fed through the server's pauses, and runs further past a stop
    batch_inflight: int = 3
    # decode steps of the batched engine encoded in one submit while only running streams decode
    # (a kernel moves the step's tables one position on between them; one plan, one write of
    # the tables and one read-back for all): the host's work a token divided; 1: off until timed
    batch_steps: int = 1
    # one stream's decode (Session.stream): read-backs in flight before it waits for the oldest,
    # and the tokens one read-back takes at most (a group is ~20 ms of tokens, up to this many)
    stream_readbacks: int = 3
    stream_group: int = 16
    # a server's GIL hand-over interval in seconds (sys.setswitchinterval; 0: Python's 5 ms):
    # the engine thread waits at most this long for the event loop between two steps
    gil_switch_s: float = 0.0
    # decode mat-vecs of f16 weights multiply in f16 (linear.matvec_kernel's `half`) where the
    # device passes its check (linear.half_usable); off: 2-10 % slower than f32 arithmetic (H100)
    f16_decode: bool = False

    def tm(self, role: str) -> int:
        return dict(self.mm).get(role, 4)

    def split(self, role: str, batched: bool = False, few: bool = False) -> int:
        """K splits of a role's prompt matmul, or with `batched` of its batched-step f16 tiles
        (with `few`, a step of at most few_rows rows)."""
        table = ((few and self.batch_splits_few) or self.batch_splits) if batched else self.splits
        return dict(table).get(role, 1)

    def _mv_role(self, role: str) -> str:
        """The role whose mat-vec shape and blocks `role` takes: a mixture's router takes O's
        unless it has a shape of its own (router_mv)."""
        return "o" if role == "router" and not self.router_mv else role

    def row_blocks(self, role: str) -> int:
        return dict(self.blocks).get(self._mv_role(role), 1)

    def tile_shape(self, experts: bool = False, float_weights: bool = False, role: str = "") -> TileShape:
        """The f16 tiles' workgroup of the prompt matmuls (of the experts', a role's and the
        float weights' where they have their own)."""
        if experts and self.expert_tiles:
            return TileShape(*self.expert_tiles, depth=self.expert_depth, ku=self.expert_units, acc16=role in self.acc_f16)
        tiles = ((dict(self.float_role_tiles).get(role) if float_weights else None) or dict(self.role_tiles).get(role)
                 or (self.float_tiles if float_weights and self.float_tiles else self.tiles))
        double = self.double_staging or (float_weights and self.float_double)
        acc16 = role in self.acc_f16 or (float_weights and role in self.float_acc_f16)
        return TileShape(*tiles, tokens_first=self.tokens_first, double=double, ku=self.stage_units,
                         straight=self.straight_staging, depth=self.stage_depth, spread=self.spread_staging,
                         acc16=acc16, bitcast=self.stage_bitcast)

    def batch_tile_shape(self, role: str) -> TileShape:
        """The f16 tiles' workgroup of a batched step's matmuls (the LM head's where it has its
        own)."""
        tiles = self.batch_head_tiles if role == "head" and self.batch_head_tiles else self.batch_tiles
        return TileShape(*tiles)

    def shape(self, role: str, int8: bool = False, spread: bool = False) -> dict[str, int]:
        role = self._mv_role(role)
        if role == "router":  # (its own shape; f32 weights: never int8 or spread)
            wg, tpr, ilp = self.router_mv
            return {"wg": wg, "tpr": tpr, "ilp": ilp}
        for r, wg, tpr, ilp in (*(self.mv_int8 if int8 else ()), *(self.mv_spread if spread else ()), *self.mv):
            if r == role:
                return {"wg": wg, "tpr": tpr, "ilp": ilp}
        raise KeyError(role)

    def check(self) -> None:
        if self.mma not in MMA_MODES:
            raise ValueError(f"Tuning.mma must be one of {', '.join(MMA_MODES)}, not {self.mma!r}")
        for name, least in (("batch_inflight", 1), ("batch_steps", 1), ("stream_readbacks", 1), ("stream_group", 1),
                            ("attn_splits", 1), ("attn_prefetch", 0), ("sms", 0), ("decode_splits", 0),
                            ("batch_decode_splits", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < least:
                raise ValueError(f"Tuning.{name} must be a whole number of at least {least}, not {getattr(self, name)!r}")
        if self.router_mv and (len(self.router_mv) != 3 or not all(isinstance(v, int) and v > 0 for v in self.router_mv)):
            raise ValueError(f"Tuning.router_mv: (threads a workgroup, threads a row pair, units in flight), not {self.router_mv!r}")
        if not isinstance(self.router_splits, int) or not 1 <= self.router_splits <= ROUTER_SPLITS_MAX:
            raise ValueError(f"Tuning.router_splits: 1 to {ROUTER_SPLITS_MAX}, not {self.router_splits!r}")
        if self.attn_splits > ATTN_SPLITS_MAX:
            raise ValueError(f"Tuning.attn_splits: at most {ATTN_SPLITS_MAX}, not {self.attn_splits}")
        for name in ("tiles", "float_tiles", "expert_tiles", "batch_tiles", "batch_head_tiles"):
            fields = getattr(self, name)
            if not fields:
                continue  # (): another shape's
            try:
                (TileShape(*fields) if "batch" in name else
                 self.tile_shape(experts=name == "expert_tiles", float_weights=name == "float_tiles")).check()
            except (TypeError, ValueError) as e:
                raise ValueError(f"Tuning.{name}: {e}") from None
        if self.batch_direct:
            try:
                DirectShape(*self.batch_direct).check()
            except (TypeError, ValueError) as e:
                raise ValueError(f"Tuning.batch_direct: {e}") from None
        tiled = tuple(r for r in ROLES if r != "head")  # a layer's prompt matmuls
        for name in ("acc_f16", "float_acc_f16"):
            roles = getattr(self, name)
            if not isinstance(roles, tuple) or any(r not in tiled for r in roles):
                raise ValueError(f"Tuning.{name}: a tuple of roles (qkv, o, gate_up, down), not {roles!r}")
        for name in ("role_tiles", "float_role_tiles"):
            for entry in getattr(self, name):
                try:
                    role, fields = entry
                    if role not in tiled or len(fields) != 4:
                        raise ValueError("a role (qkv, o, gate_up or down) and (sm, sn, tm, tn)")
                    self.tile_shape(float_weights=name == "float_role_tiles", role=role).check()
                except (TypeError, ValueError) as e:
                    raise ValueError(f"Tuning.{name}: {entry!r}: {e}") from None
        for name in ("splits", "batch_splits", "batch_splits_few"):
            for role, n in getattr(self, name):
                if role not in tiled or not isinstance(n, int) or not 1 <= n <= SPLIT_MAX:
                    raise ValueError(f"Tuning.{name}: ({role!r}, {n!r}) must name {', '.join(tiled)} and split "
                                     f"1 to {SPLIT_MAX} ways")


# A CPU adapter (llvmpipe): one SIMD lane per row pair, so no cross-lane reduction; no
# prefetch in the prompt matmul (SmolLM2's pp64 went from 9 to 13 tok/s without it).
CPU_TUNING = Tuning(mv=tuple((r, 64, 1, 1) for r in ROLES), attn_chunk=64, prefetch=False)

# Float weights take 128 x 128 output tiles over 8 subgroups (4x2x2x4) at every width: H200, one
# call, pp512 with f16 rows of x (Tuning.x_f16) against today's tiles: 0.5B f16 57.4k -> 62.6k
# (2x2x2x2 before), Qwen3-1.7B 24.2k -> 25.6k, Gemma-3-1B 24.6k -> 27.3k, Qwen3-0.6B 36.0k ->
# 36.4k, the 1.5B 27.0k -> 26.8k (2x2x4x4 before, the same output tile). Quantized weights were
# mixed (Qwen3-0.6B q4_0 +8 %, Gemma +5 %, the 1.5B and Qwen3-1.7B -5 %) and keep theirs.
FLOAT_TILES = (4, 2, 2, 4)
# gate/up (the prompt's widest matmul) on 256 x 128 output tiles, each subgroup 64 x 64: each
# fragment loaded from workgroup memory feeds four products, not two or three, and each staged
# weight row 256 tokens. H100, the 1.5B's gate/up alone (17920 x 1536, 512 tokens, f16 rows of
# x): 256.0 -> 231.4 us; pp512 (same machine) 1.5B f16 28.0k -> 29.3k, with f16 sums 29.9k
# (Tuning.acc_f16, not a default); with f16 sums against the defaults in one call: 1.5B q4_0
# -0.3 %, 0.5B f16 +1.5 %, q4_0 +2.4 %. Single-buffered (double does not fit 48 KB).
ROLE_TILES = (("gate_up", (4, 2, 4, 4)),)

# A GPU: wide workgroups with row groups sized to the input length (a group wider than a
# subgroup reduces in one barrier, which O and down want at 64-128 threads a row pair); int8
# activations for quantized weights (decode 13-17 % faster); float weights and the attention's
# keys read by adjacent words (a step 10-22 % faster); the prompt's O and down split K 2 and 4
# ways (7-8 %); gate/up's prompt matmul 8 tokens a thread; the int8 paths take fewer, wider
# workgroups, since their prologue quantizes x once per workgroup.
# Mixtures: expert mat-vecs in row groups of 16 lanes (Qwen3-30B-A3B decode 11 % faster on an
# H100; gpt-oss-20b unchanged) and expert prompt matmuls on f16 tiles (pp512 +45 % and +28 %
# against the int8 tiles' 64 tokens, on 32-token tiles when every expert's token blocks were
# launched). On the tile list (EXPERT_LIST, no empty workgroups), 64 tokens a workgroup: H100,
# Qwen3-30B-A3B q4_0 pp512 8393 / 8330 -> 11066 / 10975 (two alternations in one call; llama.cpp
# CUDA 11396 in it), decode unchanged.
EXPERT_TPR = 16
EXPERT_TILES = (2, 4, 2, 2)
# The expert prompt matmuls' grid is the group kernel's list of (expert, token block) tiles.
# H100, pp512 against the grid of every token block for each expert, one call: Qwen3-30B-A3B
# q4_0 7712 -> 8006 (+3.8 %), gpt-oss-20b MXFP4 4709 -> 4805 (+2.0 %); tiles of 256 rows on the
# list were slower: (1, 8, 2, 2) 8052 -> 7594, (2, 4, 1, 4) -> 7522.
EXPERT_LIST = True
# Batched steps (the server's streams): up to 64 rows on the f16 tiles in workgroups of 16 tokens
# x 128 weight rows, and the decoding rows' attention split-K over their pages. On an H200, 32 /
# 64 streams of the 0.5B q4_0: 2587 / 6491 -> 7953 / 13136 tok/s in one process (bench
# --streams, O and down split 2 and 4); the 1.5B f16: 885 / 3023 -> 3196 / 4257. Without the
# splits the tiles gave 4794 / 8586 (0.5B), and (1, 2, 1, 2) 6936 / 12390 (0.5B), 3303 / 4491.
# Each workgroup's walk over K is a chain of latency-bound steps, so splitting K more pays:
# O, down and QKV 8 ways, gate/up 4 took an H100's 16 / 32 / 64-row step from 3.39 / 3.60 / 4.08
# to 2.12 / 2.57 / 3.81 ms (0.5B q4_0) and 6.80 / 7.59 / 10.18 to 4.30 / 5.31 / 8.32 ms (1.5B
# f16). O 4, down 8, QKV 4, gate/up 4: 2.32 / 2.77 / 3.99 and 4.60 / 5.60 / 8.23; all 8 ways:
# 2.21 / 2.65 / 3.91 and 4.26 / 5.55 / 8.75; O 2, down 4, QKV 4, gate/up 2: 2.92 / 3.18 / 3.95
# and 5.64 / 7.05 / 9.16. 64-row workgroups (1, 2, 1, 2), 32-row ones (1, 1, 1, 2) or 64 inputs
# a step (ku 2), each with the splits: 3-40 % slower.
BATCH_TILES = (1, 4, 1, 2)
# The prompt tiles keep two steps' loads in flight: pp512 on an H100 (two calls, each against
# depth 1 in the same call) 0.5B f16 +6 %, q8_0 and q4_0 +2 %; 1.5B f16 +3 %, q8_0 +10 %,
# q4_0 +10-11 %. The batched steps' tiles stay at 1 (their 16-64 rows: 1-3 % slower at 2).
PROMPT_STAGE_DEPTH = 2
BATCH_SPLITS = (("o", 8), ("down", 8), ("qkv", 8), ("gate_up", 4))
# Steps of up to 32 rows split down 16 ways (its 4864-9728 inputs are the longest walk): H100,
# one call, step GPU ms at 16 / 32 / 64 rows, 0.5B q4_0 2.17 / 2.57 / 3.75 -> 1.96 / 2.54 /
# 4.12, 1.5B f16 4.28 / 5.36 / 8.28 -> 3.98 / 5.04 / 8.44: so 16 ways below 33 rows only.
BATCH_SPLITS_FEW = (("o", 8), ("down", 16), ("qkv", 8), ("gate_up", 4))
# The split-K decode attention in workgroups of 128 threads: a key's dot product shared by
# 128/chunk threads and the values' weighted sum by 128/(head_dim/4) groups of keys, where a
# thread took a key (or a word of each key) and a value column over all the chunk's keys.
# H100, tg64 against that kernel (one call): 0.5B q4_0 1260 -> 1301; 64 threads were slower.
ATTN_WG = 128
# Decode folds the per-head q/k norms into the attention and Gemma's output norms into the next
# mat-vec (Tuning.fold_qk_norm, fold_post_norm). H100, tg64 in one process against neither, with
# the wider attention workgroups: Gemma-3-1B q4_0 680 -> 817, f16 562 -> 650; Qwen3-1.7B f16 485
# -> 498; Qwen3-0.6B q4_0 946 -> 1025. (With the 64-thread attention, Gemma ran them slower.)
FOLD_NORMS = True
# The split-K merge (O's prologue, the batched combine) loads 4 splits' partials a pass. H100,
# one call, step GPU µs at 116 / 1000 keys: Qwen2.5-0.5B q4_0 743 / 970 -> 743 / 831, Qwen3-0.6B
# q4_0 990 / 1245 -> 966 / 1087 (tg64 unchanged); next call, the 0.5B q4_0's tg128 after a
# 1000-token prompt 977 -> 1148 tok/s.
COMBINE_UNROLL = 4
# Row groups narrower than a subgroup (16 lanes: the experts, narrow models' gate/up) sum by
# log2(16) subgroup shuffles, not a tree of barriers through workgroup memory. H100, tg128
# against the tree in one call: Qwen3-30B-A3B q4_0 327.1 / 327.6 -> 329.5 / 329.5, 0.5B q4_0
# 1337 -> 1362, Gemma-3-1B q4_0 878 -> 889, f16 690 -> 696, Qwen3-0.6B q4_0 1068 / 1075 / 1071
# -> 1061 / 1078 / 1078, Qwen3-1.7B f16 547 / 548 -> 550 / 549, the 1.5B q4_0 and q8_0 within 0.2 %.
MV_SHUFFLE = True
# A mixture's prompt router (Qwen3-30B-A3B: 128 f32 rows, 16 workgroups walking K = 2048) split
# K 8 ways. H100, pp512 against 7937 / 7734 in one call: 8380 / 8432 (the choice of experts by
# subgroup operations beside it: 7768 / 7743, its decode +3.7 %: GPU_TUNING takes both).
ROUTER_SPLITS = 8
# Split-K decode attention's workgroups a head at most: a grid of ctx / attn_chunk splits (the
# default --ctx 4096: 128 a head at 32 keys a split, 32768: 1024) launched every step, all but
# the first few returning at once early in a sequence, and a long context's merge walking all
# of its partials. The caps leave every context timed so far as it was (one sequence up to
# 2048 keys at 32 a split, a batched step's rows up to 512), where each split takes one chunk;
# a batched step's rows are its workgroups' other dimension, so it takes fewer. Untimed past
# those contexts (bench --ctx).
DECODE_SPLITS = 64
BATCH_DECODE_SPLITS = 16
GPU_TUNING = Tuning(
    mv=(("qkv", 256, 32, 1), ("o", 256, 64, 1), ("gate_up", 128, 16, 1), ("down", 128, 128, 1),
        ("head", 128, 16, 1)),
    attn_chunk=32, mm=(("gate_up", 8),), int8=True, splits=(("o", 2), ("down", 4)),
    mv_int8=(("o", 256, 32, 1), ("down", 256, 64, 1), ("head", 256, 8, 1)), spread=True,
    mv_spread=(("down", 256, 256, 1),), attn_wg=ATTN_WG, int8_direct=True, expert_tpr=EXPERT_TPR,
    expert_tiles=EXPERT_TILES, expert_list=EXPERT_LIST, batch_tiles=BATCH_TILES, batch_splits=BATCH_SPLITS, batch_splits_few=BATCH_SPLITS_FEW, thin_rows=64,
    batch_split_keys=True, stage_depth=PROMPT_STAGE_DEPTH, fold_qk_norm=FOLD_NORMS, fold_post_norm=FOLD_NORMS,
    combine_unroll=COMBINE_UNROLL, quant_f16=True, float_tiles=FLOAT_TILES, float_double=True, x_f16=True,
    role_tiles=ROLE_TILES, mv_shuffle=MV_SHUFFLE, route_subgroups=True, router_splits=ROUTER_SPLITS,
    decode_splits=DECODE_SPLITS, batch_decode_splits=BATCH_DECODE_SPLITS)

# A mixture's decode: O's split-K merge serves two row blocks (one merge of 32 heads' partials,
# not two), the int8 mat-vecs issue their units' loads at once. H100, Qwen3-30B-A3B q4_0 tg128,
# two alternations in one call against 335.1 / 335.3: O's blocks 341.4 / 342.0, int8_ilp
# 337.6 / 339.2; with route_subgroups (347.3 / 347.9 alone) and router_splits 355.1 / 355.1,
# and all four 356.1 (llama.cpp CUDA 239.0 in the same call). The router's mat-vec in a shape
# of its own, a row a workgroup of 64 threads (Tuning.router_mv), not O's 8 rows in two blocks:
# 359.4 / 360.8 -> 365.7 / 365.4 (one call, two alternations); 4 rows a workgroup 361.9 / 361.7.
MOE_TUNING = {"blocks": (("o", 2),), "int8_ilp": True, "router_mv": (64, 64, 1)}

# Models 1536 wide and wider: gate/up takes 8 threads a row pair with 2 units in flight, and
# the int8 QKV and O 64 threads (the 1.5B's step 12-15 % faster for q8_0/q4_0, 2 % for f16).
WIDE_FROM = 1536
WIDE_MV = {"gate_up": ("gate_up", 256, 8, 2)}
WIDE_MV_INT8 = (("qkv", 256, 64, 1), ("o", 256, 64, 2), ("down", 256, 64, 1), ("head", 256, 8, 1))
# ... and their float weights' gate/up on 256 x 256 tiles (each subgroup 64 x 128) with f16
# sums, as llama.cpp CUDA's cuBLAS sums f16 weights (its registers only hold f16 sums; 45 KB of
# workgroup memory). H100, two alternations each against the defaults in one call: the 1.5B
# f16's pp512 32.8k / 32.0k -> 33.4k / 34.0k, pp2048 37.9k / 38.0k -> 40.1k / 40.3k (first token
# of 2048 53.7 / 54.5 -> 51.6 / 50.9 ms), Qwen3-1.7B f16 pp512 30.1k / 28.4k -> 30.2k / 30.6k.
# Narrower models are left out: Gemma-3-1B f16 (1152 wide) 39.6k -> 31.6k, while the 0.5B f16
# gained (69.2k -> 73.0k, one run).
WIDE_FLOAT_ROLE_TILES = (("gate_up", (4, 2, 4, 8)),)
WIDE_FLOAT_ACC_F16 = ("gate_up",)
# Models 1024 wide and wider take the f16 tiles 2x2x4x4 for prompts (pp512 of the 1.5B f16 +10 %
# on an H200, +7 % on an H100; the 0.5B f16, 896 wide, 5 % slower), quantized weights
# dequantized into them. H100, pp512 against the int8 tiles and 2x2x2x2, two calls: Gemma-3-1B
# (1152 wide) q4_0 15.4k / 15.6k -> 19.4k, then 15.2k -> 19.7k, f16 19.1k -> 19.6k; Qwen3-0.6B
# (1024) q4_0 21.5k -> 23.7k, f16 24.6k on 2x2x2x2 and 24.5k on 2x2x4x4. Narrower models'
# quantized weights on the f16 tiles 2x2x2x2 (Tuning.quant_f16): the 0.5B's pp512 on an H100,
# one call, q8_0 34.7k -> 38.0k, q4_0 37.0k -> 38.9k (another call: 35.6k -> 38.0k).
WIDE_TILES_FROM = 1024
WIDE_TILES = (2, 2, 4, 4)
# Heads of 128 dimensions take 64 keys per split-K workgroup (a 1.5B step 2-3 % faster) in 256
# threads; heads of 256 (Gemma 3's four) 32 keys, so that a short context still fills a few
# dozen workgroups. H100, tg64 against the kernel before ATTN_WG (one call): Gemma-3-1B f16
# 508 -> 568, q4_0 598 -> 688, Qwen3-1.7B f16 472 -> 484; Qwen2.5-1.5B f16 and Qwen3-0.6B q4_0
# within 1 %, also with 1000 keys in the cache (where 32 keys a split were 10-20 % slower for
# heads of 128: more partials for the O projection to merge).
LONG_HEAD_CHUNK = (128, 64)
LONG_HEAD_WG = 256
WIDE_HEAD_CHUNK = (256, 32)
# Heads of 64 dimensions and more take the prompt attention on the f16 tiles. H100, one call,
# against the f32 kernel: the 0.5B (heads of 64) f16 pp512 50.1k / 50.4k -> 55.4k / 55.5k, its
# first token of a 2048-token prompt 54.6 / 53.9 -> 39.5 / 39.3 ms; q4_0 46.2k -> 49.7k,
# 57.2 -> 42.5 ms. (Before two lanes took each row's keys, heads of 64 were 4 % slower.)
LONG_HEAD_TILES = 64
# Float mat-vecs that request their first unit's weights before the prologue: 2-6 % faster
# on Dawn for narrow models, slower on wgpu-native and on wide models.
EARLY_BACKENDS = ("dawn",)

# Prompt tokens a prefill batch takes at most. A GPU's: fewer, longer batches fill more of its
# waves and pay fewer dispatches; H100, the 1.5B f16's first token of a 2048-token prompt in
# batches of 512 / 1024 / 2048 tokens, one call: 66.6 / 57.9 / 53.5 ms (llama.cpp CUDA 49.0).
# A prompt's last batch of up to SHORT_PREFILL tokens takes K splits planned for that many
# (Programs.short_splits: a plan for 2048 tokens splits less; pp512 as with batches of 512).
# llvmpipe's rate is flat from 64 to 256 (SmolLM2: 32 tok/s on 2 cores), where a 64-token batch
# takes ~2 s, as long as a stop (Ctrl-C) may have to wait there, since a CPU adapter runs a
# submit to its end.
GPU_BATCH = 2048
SHORT_PREFILL = 512
CPU_BATCH = 64
# A batched step's rows at most (the server's steps): a step of a new prompt's rows holds up
# every decoding stream for its length, so its prompt chunks stay at most 512 tokens (longer
# steps are untimed there).
STEP_ROWS = 512

# Persistent decode layers (kernels/persistent.py): threads a workgroup (512 and 1024 were
# slower), and resident workgroups by adapter for `persist="auto"` (two a SM fit, three do not;
# 228 of an H200's or H100's 264 places run 0.5-2 % faster than all of them). Off by default:
# its hand-offs between workgroups rely on ordering that WGSL does not promise.
PERSIST_WG = 256
PERSIST_GROUPS = (("H200", 228), ("H100", 228))
# The GPU's multiprocessors for Tuning.sms (engine/waves.py), by adapter name, the first that
# the name contains (WebGPU does not report them; 0: Tuning.splits as given). H100 SXM, pp512
# against Tuning.splits, one call: Qwen2.5-1.5B f16 30.1k -> 33.8k, q8_0 29.2k -> 30.5k, q4_0
# 28.1k -> 31.8k, 0.5B f16 61.3k -> 69.6k, Qwen3-0.6B / 1.7B and Gemma-3-1B +2-9 % but the 1.7B
# q4_0 -2 %, the mixtures unchanged; tg128 unchanged. The PCIe H100 (114 of them) is left
# out: the model's constants are the SXM's, untried there.
ADAPTER_SMS = (("H100 PCIe", 0), ("H100", 132), ("H200", 132))


def by_adapter(table: tuple[tuple[str, int], ...], gpu: Gpu) -> int:
    """The figure of the first name in `table` that the adapter's name contains, else 0."""
    device = str(gpu.info.get("device", ""))
    return next((n for name, n in table if name in device), 0)


def default_tuning(gpu: Gpu, hidden: int = 0, head_dim: int = 0, experts: bool = False) -> Tuning:
    """The measured shapes for this adapter kind and model width (`hidden`), head size and
    whether it is a mixture of `experts`."""
    if gpu.is_cpu:
        return CPU_TUNING
    wide = hidden >= WIDE_FROM
    chunk, attn_wg = GPU_TUNING.attn_chunk, GPU_TUNING.attn_wg
    if head_dim >= LONG_HEAD_CHUNK[0]:
        chunk, attn_wg = LONG_HEAD_CHUNK[1], LONG_HEAD_WG
    if head_dim >= WIDE_HEAD_CHUNK[0]:
        chunk = WIDE_HEAD_CHUNK[1]
    t = replace(GPU_TUNING, attn_chunk=chunk, attn_wg=attn_wg, sms=by_adapter(ADAPTER_SMS, gpu),
                early=int(gpu.backend in EARLY_BACKENDS and not wide), attn_tiles=head_dim >= LONG_HEAD_TILES)
    if wide:
        t = replace(t, mv=tuple(WIDE_MV.get(r[0], r) for r in t.mv), mv_int8=WIDE_MV_INT8,
                    float_role_tiles=WIDE_FLOAT_ROLE_TILES, float_acc_f16=WIDE_FLOAT_ACC_F16)
    if hidden >= WIDE_TILES_FROM:
        t = replace(t, tiles=WIDE_TILES)
    if experts:
        t = replace(t, **MOE_TUNING)
    return t


def tuning_overrides(text: str) -> tuple[tuple[str, Any], ...]:
    """Parse "field=value;field=value" (Python literals) into Tuning overrides, checking the names."""
    import ast

    names = {f.name for f in fields(Tuning)}
    out = []
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip()
        if not eq or name not in names:
            raise UserError(f"tuning override {part!r}: write field=value with a field of {', '.join(sorted(names))}")
        try:
            out.append((name, ast.literal_eval(value.strip())))
        except (ValueError, SyntaxError):
            raise UserError(f"tuning override {part!r}: the value must be a Python literal (1, True, (2, 2))") from None
    return tuple(out)


def persist_groups(persist: int | str, gpu: Gpu) -> int:
    """Workgroups of the persistent decode layers for a setting (a count, 0 = off, or
    "auto": PERSIST_GROUPS' figure for this adapter, off if it has none)."""
    if persist == "auto":
        return by_adapter(PERSIST_GROUPS, gpu)
    if isinstance(persist, str) and not persist.isdigit():
        raise UserError(f"persistent decode: a number of workgroups (0 = off) or auto, not {persist!r}")
    return int(persist)


@dataclass(frozen=True)
class Settings:
    """Everything a model load can be told; the front ends fill it and pass it down."""

    gpu: GpuOptions = field(default_factory=GpuOptions)
    ctx: int | None = 4096  # context tokens (None: the model's maximum; larger values are capped to it)
    batch: int | None = None  # prompt tokens a prefill batch takes at most; None: GPU_BATCH or CPU_BATCH
    fused: bool = True  # decode layers as 5 fused dispatches (False: one kernel per operation)
    tuning: Tuning | None = None  # kernel shapes; None: default_tuning for the adapter and model
    persist: int | str | None = None  # persistent decode layers: workgroups, "auto", 0 (off); None: the tuning's
    mma: str | None = None  # prompt matmuls on the matrix units: Tuning.mma's modes; None: the tuning's
    kv: str = "auto"  # the KV cache's type: f16, f32, or auto (f16 unless every weight is f32)
    attn_tiles: bool | None = None  # prompt attention on the f16 tiles (Tuning.attn_tiles); None: the tuning's
    overrides: tuple[tuple[str, Any], ...] = ()  # (Tuning field, value) pairs set last (WEBGPU_LLM_TUNING)

    def kv_f16(self, f32_weights: bool) -> bool:
        """Whether the KV cache holds f16s (half the memory and attention reads of f32s)."""
        if self.kv not in KV_TYPES:
            raise UserError(f"unknown KV cache type {self.kv!r}: choose one of {', '.join(KV_TYPES)}")
        return self.kv == "f16" or (self.kv == "auto" and not f32_weights)

    def prompt_batch(self, gpu: Gpu) -> int:
        return self.batch or (CPU_BATCH if gpu.is_cpu else GPU_BATCH)

    def step_rows(self, gpu: Gpu) -> int:
        """A batched step's rows at most: the prompt batch, up to STEP_ROWS."""
        return min(self.prompt_batch(gpu), STEP_ROWS)

    def tuning_for(self, gpu: Gpu, hidden: int, head_dim: int, experts: bool = False) -> Tuning:
        """The tuning a model of this width and head size (a mixture of `experts` or not) is
        built with on `gpu`."""
        t = self.tuning or default_tuning(gpu, hidden, head_dim, experts)
        if self.persist is not None:
            t = replace(t, persist=persist_groups(self.persist, gpu))
        if self.mma is not None:
            t = replace(t, mma=self.mma)
        if self.attn_tiles is not None:
            t = replace(t, attn_tiles=self.attn_tiles)
        if self.overrides:
            t = replace(t, **dict(self.overrides))
        try:
            t.check()
        except ValueError as e:  # a value the user gave (WEBGPU_LLM_TUNING): one line, exit 2
            raise UserError(f"{e} (set by WEBGPU_LLM_TUNING or the Settings given)") from None
        return t
