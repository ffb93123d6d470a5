"""The torch `webgpu` device itself: registration, transfers, dtypes, views, printing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from torch_helpers import DEV, require_device, torch, wt

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _device() -> None:
    require_device()


def test_registration_helpers() -> None:
    assert torch.webgpu.is_available()
    assert torch.webgpu.device_count() == 1
    assert torch.device(DEV).type == DEV
    assert torch.empty(3, device=DEV).device == torch.device("webgpu:0")
    torch.webgpu.synchronize()


def test_a_torch_without_python_device_hooks_is_refused_by_name() -> None:
    """torch before 2.10 has no torch._C._acc: the import says which torch to install."""
    code = "import torch; del torch._C._acc; import webgpu_llm.torch"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"webgpu_llm.torch needs torch {wt.MIN_TORCH} or newer" in r.stderr
    assert f"pip install 'torch>={wt.MIN_TORCH}'" in r.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32,
                                   torch.bool, torch.uint8, torch.int8])
def test_round_trip_every_dtype(dtype: torch.dtype) -> None:
    x = (torch.randn(5, 7) * 50).to(dtype)
    y = x.to(DEV)
    assert y.device.type == DEV and y.dtype == dtype and y.shape == x.shape
    assert torch.equal(y.cpu(), x)


@pytest.mark.parametrize("src,dst", [(torch.float32, torch.float16), (torch.float16, torch.float32),
                                     (torch.float32, torch.bfloat16), (torch.bfloat16, torch.float16),
                                     (torch.float32, torch.int64), (torch.int64, torch.float32),
                                     (torch.bool, torch.float32), (torch.float32, torch.bool),
                                     (torch.int64, torch.bool), (torch.int32, torch.int64)])
def test_dtype_conversion_on_device(src: torch.dtype, dst: torch.dtype) -> None:
    x = (torch.randn(3, 11) * 20).to(src)
    assert torch.equal(x.to(DEV).to(dst).cpu(), x.to(dst))
    assert torch.equal(x.to(DEV, dst).cpu(), x.to(dst))  # converted on the way up
    t = x.to(DEV).t()  # a transposed view keeps its layout, as on the CPU
    assert t.to(dst).stride() == x.t().to(dst).stride() and torch.equal(t.to(dst).cpu(), x.t().to(dst))
    assert x.t().to(DEV).stride() == x.t().stride()
    img = x.reshape(1, 3, 1, 11).to(DEV)  # an explicit memory format is honoured
    cl = img.to(dst, memory_format=torch.channels_last)
    assert cl.stride() == x.reshape(1, 3, 1, 11).to(dst, memory_format=torch.channels_last).stride()
    assert torch.equal(cl.cpu(), x.reshape(1, 3, 1, 11).to(dst))


def test_views_and_strides() -> None:
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    d = x.to(DEV)
    for f in (lambda t: t.transpose(0, 2), lambda t: t[:, 1:, ::2], lambda t: t.permute(2, 0, 1),
              lambda t: t[1], lambda t: t.unsqueeze(1).expand(2, 4, 3, 5), lambda t: t.view(6, 5)[2:5],
              lambda t: t.transpose(1, 2).reshape(10, 3), lambda t: t.narrow(2, 1, 3).contiguous()):
        got, want = f(d), f(x)
        assert got.shape == want.shape and got.stride() == want.stride()
        assert torch.equal(got.cpu(), want)


def test_views_share_memory() -> None:
    d = torch.zeros(4, 6, device=DEV)
    d[:, 2] = 5.0
    d.t()[1].fill_(-1.0)
    want = torch.zeros(4, 6)
    want[:, 2] = 5.0
    want.t()[1].fill_(-1.0)
    assert torch.equal(d.cpu(), want)


def test_half_writes_to_strided_views() -> None:
    for dtype in (torch.float16, torch.bfloat16, torch.bool, torch.uint8):
        x = torch.zeros(5, 7, dtype=dtype)
        d = x.to(DEV)
        d[1:4, ::3] = 1
        d[:, 5] = 1
        x[1:4, ::3] = 1
        x[:, 5] = 1
        assert torch.equal(d.cpu(), x), dtype


def test_item_and_printing() -> None:
    x = torch.tensor([[1.5, -2.0], [3.25, 4.0]])
    d = x.to(DEV)
    assert d[1, 0].item() == 3.25
    assert torch.tensor(7, device=DEV).item() == 7
    assert bool(torch.tensor(True, device=DEV))
    text = repr(d)
    assert "device='webgpu:0'" in text and "3.2500" in text


def test_factories() -> None:
    assert torch.equal(torch.zeros(3, 4, device=DEV).cpu(), torch.zeros(3, 4))
    assert torch.equal(torch.ones(5, dtype=torch.int64, device=DEV).cpu(), torch.ones(5, dtype=torch.int64))
    assert torch.equal(torch.full((2, 3), 2.5, device=DEV).cpu(), torch.full((2, 3), 2.5))
    assert torch.equal(torch.arange(3, 17, 2, device=DEV).cpu(), torch.arange(3, 17, 2))
    assert torch.allclose(torch.arange(0, 1, 0.125, device=DEV).cpu(), torch.arange(0, 1, 0.125))
    assert torch.equal(torch.tensor([1, 2, 3], device=DEV).cpu(), torch.tensor([1, 2, 3]))
    assert torch.equal(torch.ones(4, 4, device=DEV).tril(-1).cpu(), torch.ones(4, 4).tril(-1))


def test_module_to_device() -> None:
    lin = torch.nn.Linear(13, 7)
    x = torch.randn(3, 13)
    want = lin(x)
    lin.to(DEV)
    assert lin.weight.device.type == DEV
    with torch.no_grad():
        got = lin(x.to(DEV))
    assert torch.allclose(got.cpu(), want.detach(), atol=1e-5)


def test_synchronize_and_stream_counters() -> None:
    stream = wt.context.ctx().stream
    before = stream.launches
    x = torch.randn(64, device="cpu").to(DEV)
    (x * 2 + 1).sum()
    wt.synchronize()
    assert stream.launches > before


def test_memory_is_reused_and_released() -> None:
    torch.webgpu.empty_cache()
    base = torch.webgpu.memory_allocated()
    for _ in range(5):
        x = torch.ones(1000, device=DEV) * 2  # same sizes each time: the pool hands buffers back
    assert x.sum().item() == 2000
    grown = torch.webgpu.memory_allocated() - base
    assert 0 < grown < 5 * 4096 * 2
    del x
    torch.webgpu.empty_cache()
    assert torch.webgpu.memory_allocated() <= base + 4096


def test_pool_hands_out_the_first_made_free_block() -> None:
    """Within a size class the pool gives the free block created first, whatever order the
    blocks came free in: the same demand then gets the same blocks, step after step."""
    from webgpu_llm.torch.memory import Pool

    pool = Pool(wt.context.ctx().gpu)
    a, b, c = (pool.alloc(100) for _ in range(3))
    serials = [x.block.serial for x in (a, b, c)]
    del b, a, c  # freed in another order than made
    again = [pool.alloc(200) for _ in range(3)]  # same class (256 bytes)
    assert [x.block.serial for x in again] == sorted(serials)
    big = pool.alloc(1000)  # another class: a new block
    assert big.block.serial not in serials
    del again, big
    pool.empty_cache()
    assert pool.allocated == 0


def test_a_decode_like_loop_settles_on_the_same_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Activations made and dropped each step, the last output kept into the next, a cache
    growing by a row a step: once the cache's size class stops changing, the only bind group
    a step creates is the one of the launch that writes the new cache."""
    stream = wt.context.ctx().stream
    made: list[str] = []
    new_bind_group = stream.new_bind_group
    monkeypatch.setattr(stream, "new_bind_group", lambda k, b, s: made.append(k.name) or new_bind_group(k, b, s))
    cache = torch.zeros(1, 8, device=DEV)
    h = torch.ones(1, 8, device=DEV)
    per_step = []
    for _ in range(16):  # the cache: 256 bytes after 7 steps, then in the 512-byte class
        n = len(made)
        a = h * 0.5
        b = a + 1.0
        h = torch.tanh(b) * a - 0.25  # lives into the next step
        cache = torch.cat([cache, h])
        per_step.append(made[n:])
    wt.synchronize()
    assert all(step == ["cat"] for step in per_step[-4:]), per_step
    assert torch.allclose(cache[-1].cpu(), h.cpu())


def test_a_planned_op_still_refuses_a_block_over_the_binding_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans skip the binding-limit check while no block is over the limit: a view of a big
    block with a planned signature must still get the explanatory error."""
    c = wt.context.ctx()
    c.stream.wait()
    monkeypatch.setattr(c.gpu, "max_binding", 8192)
    small = torch.ones(16, device=DEV)
    assert torch.equal((small + small).cpu(), torch.full((16,), 2.0))  # the plan for (16,) f32
    big = torch.empty(4096, device=DEV)  # 16 KiB: over the (patched) limit (no kernel may touch it)
    assert c.pool.big == 1
    with pytest.raises(NotImplementedError, match="binding limit"):
        big[:16] + small
    del big
    torch.webgpu.empty_cache()
    assert c.pool.big == 0


def test_planned_launches_follow_the_parameter_caches_starting_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A planned launch reuses its last bind group while it binds the same blocks; when the
    interned parameter blocks start over (their buffer is rewritten), it must not."""
    from webgpu_llm.torch import stream as stream_mod

    s = wt.context.ctx().stream
    s.wait()
    monkeypatch.setattr(stream_mod, "MAX_INTERNED", 1)  # every new parameter block starts over
    gen0 = s._intern_gen
    x = torch.arange(7, dtype=torch.float32).to(DEV)
    y = torch.full((7,), 10.0).to(DEV)
    for n in range(1, 40):  # other shapes, other parameter blocks, between repeats of x + y
        z = torch.ones(n, device=DEV) * float(n)
        assert torch.equal((x + y).cpu(), torch.arange(7, dtype=torch.float32) + 10)
        assert torch.equal(z.cpu(), torch.full((n,), float(n)))
    assert s._intern_gen > gen0  # the caches did start over
    s.release_caches()
