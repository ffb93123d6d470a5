"""bench/probe_persistent_decode.py: every way it runs the stage chain computes the numpy step.

The probe's timings only mean something if its kernels compute the step; on llvmpipe a single
workgroup runs the persistent kernel (more would spin on workgroups that a CPU adapter runs
one after another), which still exercises the stage loop, the barrier's counting, the layer
offsets, the prefetch registers and both hand-offs.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from webgpu_llm.runtime.gpu import Gpu

_PATH = Path(__file__).resolve().parents[2] / "bench" / "probe_persistent_decode.py"
_spec = importlib.util.spec_from_file_location("probe_persistent_decode", _PATH)
assert _spec and _spec.loader
probe = importlib.util.module_from_spec(_spec)
sys.modules["probe_persistent_decode"] = probe
_spec.loader.exec_module(probe)

# odd multiples of 8 (a weight word holds 8 halves) and row counts that leave lanes idle
TINY = probe.Shape(hidden=72, qkv=104, inter=168, vocab=1001, layers=2)


@pytest.fixture(scope="module")
def step(wgpu_gpu: Gpu) -> tuple:
    s = probe.Step(wgpu_gpu, TINY, seed=3)
    return s, s.reference()


@pytest.mark.parametrize("groups", [None, 1, 3])
def test_dispatch_per_stage_matches_numpy(step: tuple, groups: int | None) -> None:
    s, ref = step
    got = probe.check(s, s.multi(s.gpu.subgroups_wgsl(), groups), ref)
    assert got["rel_err"] < 1e-4 and got["argmax_ok"]


# both hand-offs, both prefetch states and both barriers in two kernels (each takes llvmpipe
# ~10 s to compile)
@pytest.mark.slow
@pytest.mark.parametrize(("atomic_vec", "prefetch", "flag"), [(True, False, False), (False, True, True)])
def test_persistent_matches_numpy(step: tuple, atomic_vec: bool, prefetch: bool, flag: bool) -> None:
    s, ref = step
    got = probe.check(s, s.persistent(1, atomic_vec, prefetch, s.gpu.subgroups_wgsl(), flag), ref)
    assert got["gave_up"] == 0
    assert got["rel_err"] < 1e-4 and got["argmax_ok"]


def test_reference_is_the_chain(step: tuple) -> None:
    """The numpy step itself: one layer by hand (a wrong reference would pass the tests above)."""
    s, _ = step
    one = probe.Step(s.gpu, probe.Shape(hidden=72, qkv=104, inter=168, vocab=1001, layers=1), seed=3)
    m, f = one.mats[0], TINY.inter

    def mv(w: np.ndarray, x: np.ndarray) -> np.ndarray:
        return (w.astype(np.float64) @ x) / np.sqrt(np.mean(x * x) + probe.EPS)

    q = mv(m["qkv"], one.x0.astype(np.float64))
    o = mv(m["o"], q[:72])
    gu = mv(m["gateup"], o)
    x = mv(m["down"], gu[:f] / (1 + np.exp(-gu[:f])) * gu[f:])
    assert np.allclose(one.reference(), mv(one.wlm, x), rtol=1e-3, atol=1e-3 * np.abs(x).max())


# the model's step: attention over 40 cached positions (two splits of 32 keys), GQA 2,
# residuals, RMS only where the model has it
MODEL = probe.Shape(hidden=64, qkv=128, inter=40, vocab=67, layers=2, heads=4, kv_heads=2, past=40)


@pytest.fixture(scope="module")
def model_step(wgpu_gpu: Gpu) -> tuple:
    s = probe.Step(wgpu_gpu, MODEL, seed=5)
    return s, s.reference()


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["per stage", "per stage, 3 workgroups", "persistent"])
def test_model_step_matches_numpy(model_step: tuple, variant: str) -> None:
    s, ref = model_step
    sub = s.gpu.subgroups_wgsl()
    prog = {"per stage": lambda: s.multi(sub), "per stage, 3 workgroups": lambda: s.multi(sub, 3),
            "persistent": lambda: s.persistent(1, False, True, sub)}[variant]()
    got = probe.check(s, prog, ref)
    assert got["gave_up"] == 0
    assert got["rel_err"] < 1e-4 and got["argmax_ok"]


@pytest.mark.parametrize("past", [0, 40])
def test_int8_weights_match_numpy(wgpu_gpu: Gpu, past: int) -> None:
    """q8 rows (int8 words and a scale per 32) against numpy's dequantised matrices."""
    shape = probe.Shape(hidden=64, qkv=128, inter=64, vocab=67, layers=2, heads=4, kv_heads=2,
                        past=past, dtype="q8")
    s = probe.Step(wgpu_gpu, shape, seed=7)
    got = probe.check(s, s.multi(s.gpu.subgroups_wgsl()), s.reference())
    assert got["rel_err"] < 1e-4 and got["argmax_ok"]
    assert not np.allclose(s.mats[0]["qkv"], s.mats[0]["qkv"].astype(np.float16))  # int8 steps, not halves
