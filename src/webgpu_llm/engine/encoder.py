"""An embedding model (models/encoder.py: bert, nomic-bert) on the GPU, and `Encoder.embed`.

A call's texts are *packed*: their tokens follow one another as the rows of one batch, with
no padding, and tables say where each text starts (`Packing`). Padding every text to the
longest would make the matmuls, which are nearly all of the work, run over rows that carry
nothing (a batch of sentences of 5 to 40 tokens is mostly padding); packed, they run over
exactly the batch's tokens, and only the attention needs to know the texts apart: each of
its query blocks (16 rows of one text) attends to the rows of its own text.

One run is one submit of the encoder Program (its n is (rows, query blocks, texts)):

  embed     the token embedding rows (rows.embed_kernel), then the position embedding rows
            (bert; with the token type 0 row folded in) or the type 0 row (nomic-bert) added
            and LayerNorm (2 dispatches)
  a layer   7 dispatches: QKV matmul (+ bias) to rows of [q | k | v]; bidirectional attention
            (kernels/encoder.py; RoPE applied there for nomic-bert); O matmul + bias +
            residual; LayerNorm; up matmul + bias + GELU (bert) or gate/up matmul + SiLU·mul
            (nomic-bert); down matmul + bias + residual; LayerNorm (post-norm, as BERT)
  pool      a workgroup a text: the mean of its rows (or its first or last row), L2-normalized
            where the model says so; only these vectors are read back

Pooling runs on the GPU: it is one dispatch, and the read-back is then one vector a text
rather than every token's row (64 sentences of ~12 tokens: 0.1 MiB instead of 1.1 MiB).
A call with more tokens than a run takes is cut into several runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelFileError, UserError
from ..kernels.encoder import BQ, EncoderAttentionSpec, Packing, encoder_attention_kernel, pool_kernel
from ..kernels.linear import LinearSpec, matmul_grid, matmul_kernel
from ..kernels.rows import embed_kernel, layernorm_kernel
from ..models.encoder import EncoderConfig
from ..runtime.gpu import Gpu
from ..runtime.program import Program
from .scheduler import WorkQueue
from .session import check_token_ids
from .settings import Settings, Tuning
from .weights import GpuMatrix, Part, Tensor, required, rope_pair_perm, upload_matrix, vector

# Rows (tokens of all the texts) a run takes at most, where Settings.batch does not say: a GPU's
# matmuls fill up with a few thousand rows; on a CPU adapter a run of 512 takes seconds
# (all-MiniLM-L6-v2 on llvmpipe: ~6 s on 2 busy cores), as long as Ctrl-C may have to wait.
GPU_ROWS = 4096
CPU_ROWS = 512


def _a4(n: int) -> int:
    return -(-n // 4) * 4


@dataclass(frozen=True)
class EncoderLayout:
    """Float offsets in a layer's parameter buffer: the two LayerNorms' weights and biases,
    then the biases of QKV, O, up and down (bert), each padded to 4 floats."""

    norm1_w: int
    norm1_b: int
    norm2_w: int
    norm2_b: int
    qkv_b: int
    o_b: int
    up_b: int
    down_b: int
    size: int

    @classmethod
    def of(cls, c: EncoderConfig) -> EncoderLayout:
        h, offs = _a4(c.hidden), [0]
        sizes = [h, h, h, h] + ([_a4(3 * c.hidden), h, _a4(c.intermediate), h] if c.bias else [0, 0, 0, 0])
        for s in sizes:
            offs.append(offs[-1] + s)
        return cls(*offs)


@dataclass
class EncoderLayer:
    qkv: GpuMatrix
    o: GpuMatrix
    up: GpuMatrix  # bert: up; nomic-bert: gate then up (SiLU·mul pairs them)
    down: GpuMatrix
    params: Any  # EncoderLayout


@dataclass
class EncoderWeights:
    embedding: GpuMatrix
    positions: Any  # f32 rows added to the token rows: position (+ token type 0) rows, or the type 0 row
    embed_norm: Any  # the embeddings' LayerNorm: [weight | bias]
    rope: Any  # (cos, sin, cos, sin) of each position and vec4 of a head (nomic-bert), else None
    layers: list[EncoderLayer]
    layout: EncoderLayout


def rope_table(c: EncoderConfig, n: int) -> np.ndarray:
    """(n, head_dim/4, 4): cos and sin of the pairs 2i and 2i+1 of each vec4 i (rows permuted
    so that rotate-half partners are adjacent) at positions 0..n-1; the angle is formed in
    f32 as transformers forms it, its cos and sin taken exactly."""
    ang = np.arange(n, dtype=np.float32)[:, None] * c.inv_freq()[None, :]  # (n, d/2), f32
    cs = np.stack([np.cos(ang.astype(np.float64)), np.sin(ang.astype(np.float64))], -1)  # (n, d/2, 2)
    return cs.reshape(n, c.head_dim // 4, 4).astype(np.float32)


def upload_encoder(gpu: Gpu, c: EncoderConfig, get: Callable[[str], Tensor | None],
                   progress: Callable[[int], None] | None = None) -> EncoderWeights:
    """An encoder's tensors (GGUF names) in their own formats; Q and K rows reordered so that
    RoPE's rotate-half partners lie side by side (nomic-bert), the token type 0 row folded
    into the position rows (bert)."""

    need = required(get)

    h = c.hidden
    lay = EncoderLayout.of(c)
    embedding = upload_matrix(gpu, [Part(need("token_embd.weight"))], "token_embd", progress)
    type0 = _float_rows(need("token_types.weight"), h)[0]
    if c.arch == "bert":
        pos = need("position_embd.weight")
        if pos.shape[-1] != h:
            raise ModelFileError(f"position embeddings of width {pos.shape[-1]}, the hidden size is {h}")
        rows = _float_rows(pos, h)[: c.max_tokens] + type0[None, :]
    else:
        rows = type0[None, :]
    positions = gpu.upload(np.ascontiguousarray(rows, np.float32), "positions")
    norm = np.zeros(2 * _a4(h), np.float32)
    norm[:h], norm[_a4(h): _a4(h) + h] = vector(need("token_embd_norm.weight")), vector(need("token_embd_norm.bias"))
    embed_norm = gpu.upload(norm, "token_embd_norm")
    rope = gpu.upload(rope_table(c, c.max_tokens), "rope") if c.rope else None
    one = rope_pair_perm(c.n_heads, c.head_dim) if c.rope else None  # Q's and K's rows
    layers: list[EncoderLayer] = []
    for i in range(c.n_layers):
        b = f"blk.{i}."
        if get(b + "attn_qkv.weight") is not None:  # fused (nomic-bert GGUF)
            perm = None if one is None else np.concatenate([one, c.q_dim + one, 2 * c.q_dim + np.arange(c.q_dim)])
            qkv = upload_matrix(gpu, [Part(need(b + "attn_qkv.weight"), perm)], b + "qkv", progress)
        else:
            q, k, v = (need(b + f"attn_{x}.weight") for x in "qkv")
            qkv = upload_matrix(gpu, [Part(q, one), Part(k, one), Part(v)], b + "qkv", progress)
        ffn = [Part(need(b + "ffn_gate.weight")), Part(need(b + "ffn_up.weight"))] if c.gated \
            else [Part(need(b + "ffn_up.weight"))]
        pv = np.zeros(lay.size, np.float32)
        for off, name in ((lay.norm1_w, "attn_output_norm.weight"), (lay.norm1_b, "attn_output_norm.bias"),
                          (lay.norm2_w, "layer_output_norm.weight"), (lay.norm2_b, "layer_output_norm.bias")):
            pv[off: off + h] = vector(need(b + name))
        if c.bias:
            bias = [vector(need(b + f"attn_{x}.bias")) for x in "qkv"]
            pv[lay.qkv_b: lay.qkv_b + 3 * h] = np.concatenate(bias)
            pv[lay.o_b: lay.o_b + h] = vector(need(b + "attn_output.bias"))
            pv[lay.up_b: lay.up_b + c.intermediate] = vector(need(b + "ffn_up.bias"))
            pv[lay.down_b: lay.down_b + h] = vector(need(b + "ffn_down.bias"))
        layers.append(EncoderLayer(
            qkv=qkv,
            o=upload_matrix(gpu, [Part(need(b + "attn_output.weight"))], b + "o", progress),
            up=upload_matrix(gpu, ffn, b + "ffn_up", progress),
            down=upload_matrix(gpu, [Part(need(b + "ffn_down.weight"))], b + "down", progress),
            params=gpu.upload(pv, b + "params"),
        ))
    w = EncoderWeights(embedding, positions, embed_norm, rope, layers, lay)
    _check_shapes(c, w)
    return w


def _float_rows(t: Tensor, k: int) -> np.ndarray:
    if t.fmt in ("f32", "f16"):
        return np.asarray(t.data(), np.float32).reshape(-1, k)
    if t.fmt == "bf16":
        return (np.asarray(t.data(), np.uint32) << 16).view(np.float32).reshape(-1, k)
    raise ModelFileError(f"tensor {t.name!r} has type {t.type_name}; position embeddings must be F32, F16 or BF16")


def _check_shapes(c: EncoderConfig, w: EncoderWeights) -> None:
    L = w.layers[0]
    ffn = 2 * c.intermediate if c.gated else c.intermediate
    want = {"qkv": (3 * c.hidden, c.hidden), "o": (c.hidden, c.q_dim), "up": (ffn, c.hidden),
            "down": (c.hidden, c.intermediate)}
    for name, (rows, k) in want.items():
        m: GpuMatrix = getattr(L, name)
        if (m.rows, m.k) != (rows, k):
            raise ModelFileError(f"layer 0 {name} weights are {m.rows}x{m.k}, the config says {rows}x{k}")
    if w.embedding.k != c.hidden:
        raise ModelFileError("embedding width does not match the hidden size")


@dataclass
class EncoderBuffers:
    st: Any  # the state (kernels/common.py): st.n = the run's rows, st.pos = 0
    tokens: Any  # a token id per row
    rows: Any  # (position, text) per row
    blocks: Any  # the attention's query blocks
    texts: Any  # (first row, rows) per text
    h: Any  # the hidden rows
    qkv: Any  # rows of [q | k | v]
    att: Any  # attention output rows
    act: Any  # the FFN's activations
    out: Any  # a vector per text

    @classmethod
    def alloc(cls, g: Gpu, c: EncoderConfig, rows: int, texts: int) -> EncoderBuffers:
        from ..kernels.common import STATE_WORDS

        blocks = rows // BQ + texts
        return cls(
            st=g.buffer(STATE_WORDS * 4, "state"),
            tokens=g.buffer(rows * 4, "tokens"),
            rows=g.buffer(rows * 8, "row_table"),
            blocks=g.buffer(blocks * 16, "block_table"),
            texts=g.buffer(texts * 8, "text_table"),
            h=g.buffer(rows * c.hidden * 4, "hidden"),
            qkv=g.buffer(rows * 3 * c.hidden * 4, "qkv"),
            att=g.buffer(rows * c.q_dim * 4, "attn_out"),
            act=g.buffer(rows * c.intermediate * 4, "ffn_act"),
            out=g.buffer(texts * c.hidden * 4, "embeddings"),
        )


class EncoderPrograms:
    """An encoder's weights, buffers and its one bound Program, for runs of at most `rows`
    rows and `texts` texts."""

    def __init__(self, gpu: Gpu, cfg: EncoderConfig, weights: EncoderWeights, rows: int, texts: int,
                 tuning: Tuning) -> None:
        self.gpu, self.cfg, self.weights, self.tuning = gpu, cfg, weights, tuning
        self.rows, self.texts = rows, texts
        self.buf = EncoderBuffers.alloc(gpu, cfg, rows, texts)
        self.program = self._build()

    def _mm(self, prog: Program, m: GpuMatrix, role: str, bindings: dict[str, Any], **kw: Any) -> None:
        spec = LinearSpec(k=m.k, segments=m.segments, **kw)
        tm = self.tuning.tm(role)
        prog.add(matmul_kernel(spec, tm, self.tuning.prefetch), {**bindings, **m.bindings()},
                 lambda n: matmul_grid(spec, tm)(n[0]))

    def _build(self) -> Program:
        g, c, b, w = self.gpu, self.cfg, self.buf, self.weights
        lay = w.layout
        prog = Program(g, "encoder")
        rows = lambda n: (n[0], 1, 1)  # noqa: E731
        emb = w.embedding
        prog.add(embed_kernel(LinearSpec(k=c.hidden, segments=emb.segments)),
                 {"st": b.st, "tokens": b.tokens, **emb.bindings(), "x": b.h}, rows)
        prog.add(layernorm_kernel(c.hidden, c.norm_eps, 0, _a4(c.hidden), add="first" if c.rope else "row"),
                 {"st": b.st, "rows": b.rows, "a": w.positions, "x": b.h, "pv": w.embed_norm}, rows)
        attention = encoder_attention_kernel(EncoderAttentionSpec(c.n_heads, c.n_kv_heads, c.head_dim, c.rope))
        norm1 = layernorm_kernel(c.hidden, c.norm_eps, lay.norm1_w, lay.norm1_b)
        norm2 = layernorm_kernel(c.hidden, c.norm_eps, lay.norm2_w, lay.norm2_b)
        for L in w.layers:
            p = {"st": b.st, "pv": L.params}
            self._mm(prog, L.qkv, "qkv", {**p, "x": b.h, "y": b.qkv}, bias=c.bias, bias_off=lay.qkv_b)
            prog.add(attention, {"blocks": b.blocks, "qkv": b.qkv, "out": b.att, **({"rope": w.rope} if c.rope else {})},
                     lambda n: (c.n_heads, n[1], 1))
            self._mm(prog, L.o, "o", {**p, "x": b.att, "y": b.h}, epilogue="add", bias=c.bias, bias_off=lay.o_b)
            prog.add(norm1, {**p, "x": b.h}, rows)
            self._mm(prog, L.up, "gate_up", {**p, "x": b.h, "y": b.act},
                     epilogue="silu_mul" if c.gated else "gelu", bias=c.bias, bias_off=lay.up_b)
            self._mm(prog, L.down, "down", {**p, "x": b.act, "y": b.h}, epilogue="add", bias=c.bias,
                     bias_off=lay.down_b)
            prog.add(norm2, {**p, "x": b.h}, rows)
        prog.add(pool_kernel(c.hidden, c.pooling, c.normalize), {"seqs": b.texts, "x": b.h, "out": b.out},
                 lambda n: (n[2], 1, 1))
        return prog


@dataclass
class EmbedStats:
    texts: int = 0
    tokens: int = 0
    runs: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"texts": self.texts, "tokens": self.tokens, "runs": self.runs, "seconds": round(self.seconds, 6),
                "tokens_per_s": round(self.tokens_per_s, 2)}


@dataclass
class Encoder:
    """Runs an embedding model's Program: token ids of texts in, a vector per text out. The
    only code that writes the encoder's tables and runs its Program."""

    programs: EncoderPrograms
    max_tokens: int  # tokens a text may have
    stats: EmbedStats = field(default_factory=EmbedStats)

    @classmethod
    def build(cls, gpu: Gpu, cfg: EncoderConfig, get: Callable[[str], Tensor | None], settings: Settings,
              max_tokens: int, progress: Callable[[int], None] | None = None) -> Encoder:
        weights = upload_encoder(gpu, cfg, get, progress)
        rows = max(settings.batch or (CPU_ROWS if gpu.is_cpu else GPU_ROWS), max_tokens)
        widest = max(3 * cfg.hidden, cfg.intermediate) * 4
        rows = max(max_tokens, min(rows, (gpu.max_binding - 4096) // widest))
        if rows * widest > gpu.max_binding:
            raise UserError(f"a text of {max_tokens} tokens does not fit this adapter's buffers: use a smaller --ctx")
        tuning = settings.tuning_for(gpu, cfg.hidden, cfg.head_dim)
        return cls(EncoderPrograms(gpu, cfg, weights, rows, max(1, rows // 2), tuning), max_tokens)

    @property
    def cfg(self) -> EncoderConfig:
        return self.programs.cfg

    @property
    def gpu(self) -> Gpu:
        return self.programs.gpu

    def check(self, ids: Sequence[Sequence[int]]) -> None:
        """Every text has 1..max_tokens ids of the vocabulary (UserError naming the first that has not)."""
        vocab = self.cfg.vocab
        for i, t in enumerate(ids):
            if not t:
                raise UserError(f"text {i} has no tokens")
            if len(t) > self.max_tokens:
                raise UserError(f"text {i} has {len(t)} tokens, more than the {self.max_tokens} this model takes "
                                "(truncate it)")
            check_token_ids(t, vocab, f"text {i}")

    def runs(self, lengths: Sequence[int]) -> list[list[int]]:
        """The texts (indices, in order) of each run: as many as fit its rows and texts."""
        out: list[list[int]] = []
        rows = 0
        for i, n in enumerate(lengths):
            if not out or rows + n > self.programs.rows or len(out[-1]) >= self.programs.texts:
                out.append([])
                rows = 0
            out[-1].append(i)
            rows += n
        return out

    def embed(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """A vector per text (float32, (texts, hidden)) for texts given as token ids."""
        self.check(ids)
        t = time.perf_counter()
        out = np.zeros((len(ids), self.cfg.hidden), np.float32)
        runs = self.runs([len(x) for x in ids])
        for run in runs:
            out[run] = self._run([ids[i] for i in run])
        self.stats.runs += len(runs)
        self.stats.texts += len(ids)
        self.stats.tokens += sum(len(x) for x in ids)
        self.stats.seconds += time.perf_counter() - t
        return out

    def _run(self, ids: list[Sequence[int]]) -> np.ndarray:
        from ..kernels.common import pack_state

        g, b = self.gpu, self.programs.buf
        pk = Packing(tuple(len(x) for x in ids))
        g.write(b.st, pack_state(pos=0, n=pk.rows))
        g.write(b.tokens, np.concatenate([np.asarray(x, np.uint32) for x in ids]))
        g.write(b.rows, pk.row_table())
        g.write(b.blocks, pk.block_table())
        g.write(b.texts, pk.text_table())
        self.programs.program.run(pk.n)
        return g.read_array(b.out, np.float32, len(ids) * self.cfg.hidden).reshape(len(ids), self.cfg.hidden)

    def warm_up(self) -> None:
        """Run the Program once on a text of 2 tokens, so that drivers that compile at first
        use do it here."""
        self._run([[0, 0]])


class EmbedQueue(WorkQueue[tuple[list[list[int]], Future[np.ndarray]]]):
    """Embedding requests of many callers (the server's) served by one engine thread: the
    texts of the requests waiting when the thread takes work (as many as fill a run) go
    through the GPU as one batch, and each request's future gets its own vectors. It has a
    Scheduler's face for the server (stats, queue_depth, active, parallel, ctx, close)."""

    def __init__(self, encoder: Encoder, max_queue: int = 256) -> None:
        super().__init__(max_queue)
        self.encoder = encoder
        self.ctx = encoder.max_tokens
        self.parallel = 1
        self._active = 0
        self._start("webgpu-llm embeddings")

    @property
    def active(self) -> int:
        return self._active

    @property
    def kv_tokens(self) -> tuple[int, int]:
        """An encoder keeps no KV cache (the /metrics gauges read 0 of 0)."""
        return 0, 0

    def submit(self, ids: Sequence[Sequence[int]]) -> Future[np.ndarray]:
        """Queue texts (token ids); their vectors come in the future. UserError for a text the
        model cannot take, QueueFull (ShuttingDown) where the queue is full (closing)."""
        texts = [list(map(int, t)) for t in ids]
        self.encoder.check(texts)
        fut: Future[np.ndarray] = Future()
        self._enqueue((texts, fut))
        return fut

    def _cancel_all(self) -> None:
        for _, fut in self._waiting:
            fut.cancel()

    def _take(self) -> list[tuple[list[list[int]], Future[np.ndarray]]] | None:
        """The next batch: the first waiting request, and those after it while a run holds them."""
        with self._cv:
            if not self._wait_for_work():
                return None
            batch, rows = [], 0
            while self._waiting:
                n = sum(len(t) for t in self._waiting[0][0])
                if batch and rows + n > self.encoder.programs.rows:
                    break
                batch.append(self._waiting.popleft())
                rows += n
            self._active = len(batch)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [(t, f) for t, f in batch if f.set_running_or_notify_cancel()]
            try:
                if live:
                    vectors = self.encoder.embed([x for t, _ in live for x in t])
                    at = 0
                    for t, f in live:
                        f.set_result(vectors[at: at + len(t)])
                        at += len(t)
            except Exception as e:  # the requests fail, the engine goes on
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
            finally:
                with self._cv:
                    self._active = 0
                    self.stats.finished += len(batch)
                    self.stats.prompt_tokens += sum(len(x) for t, _ in live for x in t)
