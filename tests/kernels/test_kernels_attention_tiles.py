"""Prompt attention on f16 tiles (kernels/attention_tiles.py) against numpy: emulated tile
products everywhere, the matrix units where the adapter has them; one sequence's cache and a
batched step's paged one, f32 and f16 caches, windows, soft-caps and sinks; one sequence's
keys split over workgroups and merged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from kernel_harness import f16_rounded, f16_tile_modes, read, rel_err, run_kernel, tint_check
from test_kernels_archs import attention_ref

from webgpu_llm.kernels import attention as att
from webgpu_llm.kernels.attention_tiles import (
    AttnTiles,
    attn_tiles,
    prompt_attention_combine_grid,
    prompt_attention_combine_kernel,
    prompt_attention_tiles_grid,
    prompt_attention_tiles_kernel,
    tiles_ok,
)
from webgpu_llm.kernels.common import PAGE, Slots

_modes = f16_tile_modes
h = f16_rounded


def _cache(kv: np.ndarray, f16: bool) -> np.ndarray:
    return kv.astype(np.float16) if f16 else kv


CASES = [  # (hq, hkv, d, t, pos0, window, softcap, sinks, kv_f16, shape)
    (4, 2, 32, 37, 5, 0, 0.0, False, False, AttnTiles(2, 32)),  # 3 blocks, the last partial
    (6, 2, 64, 21, 40, 9, 0.0, False, True, AttnTiles(2, 16)),  # a group past 2 subgroups; a window
    (3, 1, 16, 18, 0, 0, 2.0, True, False, AttnTiles(2, 16)),  # 3 heads on 2 subgroups: one idle; sinks
    (2, 2, 48, 33, 3, 20, 0.0, False, False, AttnTiles(1, 32)),
    # a chunk's 64 vec4s over 128 threads: half the threads stage nothing
    (4, 1, 16, 29, 7, 0, 0.0, False, True, AttnTiles(4, 16)),
    # three subgroups (SmolLM2's groups of 3 heads of 64): 96 threads, a chunk's 512 vec4s uneven
    (6, 2, 64, 35, 3, 0, 0.0, False, True, AttnTiles(3, 32)),
    # gpt-oss's layers: heads of 64 with sinks and a sliding window together
    (8, 2, 64, 41, 10, 16, 0.0, True, True, AttnTiles(4, 32)),
    # the loads in the staging loop where a thread holds 12 vec4s, past `prefetch` (the case above
    # with the default loads them a chunk ahead), and none ahead at all
    (2, 2, 48, 33, 3, 20, 0.0, False, True, AttnTiles(1, 32, prefetch=8)),
    (4, 2, 32, 37, 5, 0, 0.0, False, True, AttnTiles(2, 32, prefetch=0)),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}x{c[2]}")
def test_prompt_attention_tiles(gpu, case):
    hq, hkv, d, t, pos0, window, softcap, sinks, kv_f16, shape = case
    rng = np.random.default_rng(31)
    ctx, scale = 96, 0.2
    kv = np.zeros((2, hkv, ctx, d), np.float32)
    kv[:, :, :pos0 + t] = rng.standard_normal((2, hkv, pos0 + t, d))
    q = rng.standard_normal((t, hq, d)).astype(np.float32)
    sk = rng.standard_normal(hq).astype(np.float32) if sinks else None
    spec = att.AttentionSpec(hq, hkv, d, ctx, window=window, softcap=softcap, scale=scale,
                             sinks=0 if sinks else -1, kv_f16=kv_f16)
    assert tiles_ok(spec)
    k_, v_ = (h(kv[i]).transpose(1, 0, 2)[:pos0 + t] for i in (0, 1))
    want = attention_ref(h(q), k_, v_, pos0, window, softcap, scale, sk)
    extra = {"pv": gpu.upload(np.concatenate([sk, np.zeros(-hq % 4, np.float32)]))} if sinks else {}
    cache = gpu.upload(_cache(kv, kv_f16))
    # a batched step: the same rows in slot 1 of 2, its cache in pages listed out of order
    slots = Slots(2, ctx, pages=9)
    table = np.zeros((2, slots.max_pages), np.uint32)
    table[1] = [6, 1, 4, 8, 3, 0]
    pool = np.zeros((9, 2, hkv, PAGE, d), np.float32)
    for i, pg in enumerate(table[1]):
        pool[pg] = kv[:, :, i * PAGE:(i + 1) * PAGE]
    blocks = np.array([(b0, min(16, t - b0), 1, pos0 + b0) for b0 in range(0, t, 16)], np.uint32)
    grid = prompt_attention_tiles_grid(spec, shape)(t)
    tint_check(prompt_attention_tiles_kernel(spec, shape))
    tint_check(prompt_attention_tiles_kernel(spec, shape, out_f16=True))
    tint_check(prompt_attention_tiles_kernel(spec, shape, slots))
    tint_check(prompt_attention_tiles_kernel(spec, shape, slots, skip_single=True))
    three = replace(shape, splits=3)  # a block's keys in three parts, merged by the combine kernel
    tint_check(prompt_attention_tiles_kernel(spec, three))
    # skip_single: the last row as a block of its own (and any other one-row block) is left to the
    # split-K kernel, untouched here
    last = blocks[-1].copy()
    split = np.array([*blocks[:-1], (last[0], last[1] - 1, 1, last[3]), (t - 1, 1, 1, pos0 + t - 1)], np.uint32)
    split = split[split[:, 1] > 0]
    for emulate in _modes(gpu):
        out = gpu.buffer(t * hq * d * 4)
        run_kernel(gpu, prompt_attention_tiles_kernel(spec, shape, emulate=emulate),
                   {"q": gpu.upload(q), "kv": cache, "out": out, **extra}, grid, n=t, pos=pos0)
        assert rel_err(read(gpu, out, (t, hq, d)), want) < 2e-3, emulate
        out16 = gpu.buffer(t * hq * d * 2)  # the same rows as f16s (for an f16-tile O projection)
        run_kernel(gpu, prompt_attention_tiles_kernel(spec, shape, emulate=emulate, out_f16=True),
                   {"q": gpu.upload(q), "kv": cache, "out": out16, **extra}, grid, n=t, pos=pos0)
        assert (read(gpu, out16, (t, hq, d), np.float16) == read(gpu, out, (t, hq, d)).astype(np.float16)).all()
        pacc, pml, out4 = gpu.buffer(t * hq * 3 * d * 4), gpu.buffer(t * hq * 3 * 8), gpu.buffer(t * hq * d * 4)
        run_kernel(gpu, prompt_attention_tiles_kernel(spec, three, emulate=emulate),
                   {"q": gpu.upload(q), "kv": cache, "pacc": pacc, "pml": pml, **extra},
                   prompt_attention_tiles_grid(spec, three)(t), n=t, pos=pos0)
        run_kernel(gpu, prompt_attention_combine_kernel(spec, three), {"pacc": pacc, "pml": pml, "out": out4},
                   prompt_attention_combine_grid(spec)(t), n=t, pos=pos0)
        assert rel_err(read(gpu, out4, (t, hq, d)), want) < 2e-3, emulate
        out2 = gpu.buffer(t * hq * d * 4)
        run_kernel(gpu, prompt_attention_tiles_kernel(spec, shape, slots, emulate),
                   {"q": gpu.upload(q), "kv": gpu.upload(_cache(pool, kv_f16)), "out": out2, "blocks": gpu.upload(blocks),
                    "pages": gpu.upload(table), **extra}, (grid[0], len(blocks), 1), n=t)
        assert rel_err(read(gpu, out2, (t, hq, d)), want) < 2e-3, emulate
        out3 = gpu.buffer(t * hq * d * 4)
        run_kernel(gpu, prompt_attention_tiles_kernel(spec, shape, slots, emulate, skip_single=True),
                   {"q": gpu.upload(q), "kv": gpu.upload(_cache(pool, kv_f16)), "out": out3, "blocks": gpu.upload(split),
                    "pages": gpu.upload(table), **extra}, (grid[0], len(split), 1), n=t)
        got = read(gpu, out3, (t, hq, d))
        single = np.zeros(t, bool)
        single[[b[0] for b in split if b[1] == 1]] = True
        assert rel_err(got[~single], want[~single]) < 2e-3 and not got[single].any(), emulate


def test_attention_tile_shapes():
    """The widest shape within the workgroup memory; heads must be a multiple of 16 wide."""
    a = att.AttentionSpec(14, 2, 64, 128)
    assert attn_tiles(a, 32768) == AttnTiles(4, 32)
    assert attn_tiles(att.AttentionSpec(14, 2, 128, 128), 32768) == AttnTiles(2, 32)
    assert attn_tiles(att.AttentionSpec(4, 1, 256, 128), 32768) == AttnTiles(1, 16)
    assert attn_tiles(att.AttentionSpec(2, 2, 64, 128), 32768) == AttnTiles(1, 32)
    assert not tiles_ok(att.AttentionSpec(4, 2, 72, 128))
    assert all(attn_tiles(x, 32768).shared_bytes(x.head_dim) <= 32768 for x in (a,))
