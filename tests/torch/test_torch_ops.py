"""Each WebGPU kernel of the torch device against torch on the CPU, on odd random shapes."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from torch_helpers import DEV, TOL, assert_close, ref_dtype, require_device, to_dev, torch, wt

pytestmark = pytest.mark.gpu
F = torch.nn.functional
FLOATS = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _device() -> None:
    require_device()
    wt.reset_fallback_report()
    yield
    assert wt.fallback_report() == {}, "an op fell back to the CPU"


def check(fn: Callable[..., Any], *args: object, tol: float) -> None:
    want = fn(*args)
    got = fn(*[to_dev(a) for a in args])
    if isinstance(want, tuple):
        for g, w in zip(got, want):
            assert_close(g, w, tol)
    else:
        assert_close(got, want, tol)


def rnd(*shape: int, dtype: torch.dtype = torch.float32, lo: float = -2.0, hi: float = 2.0) -> torch.Tensor:
    return (torch.rand(*shape) * (hi - lo) + lo).to(dtype)


UNARY = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "sin": torch.sin, "cos": torch.cos, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "silu": F.silu, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu, "square": lambda x: x.pow(2), "pow3": lambda x: x.pow(3), "floor": torch.floor,
    "rsqrt": lambda x: torch.rsqrt(x.abs() + 0.5), "sqrt": lambda x: (x.abs() + 0.1).sqrt(),
    "log": lambda x: (x.abs() + 0.1).log(), "reciprocal": lambda x: 1 / (x.abs() + 0.5),
    "big_angle_cos": lambda x: torch.cos(x * 300), "erf": torch.erf, "clamp": lambda x: x.clamp(-0.5, 0.7),
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(name: str, dtype: torch.dtype) -> None:
    x = rnd(3, 37, dtype=dtype)
    tol = 1e-5 if dtype == torch.float32 else TOL[dtype]
    check(UNARY[name], x, tol=tol)


BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
    "add_alpha": lambda a, b: torch.add(a, b, alpha=-0.5), "pow": lambda a, b: (a.abs() + 0.5).pow(b),
    "where": lambda a, b: torch.where(a > b, a, b), "masked_fill": lambda a, b: a.masked_fill(b > 0.3, -7.0),
    "lt": torch.lt, "ge": torch.ge, "eq_self": lambda a, b: torch.eq(a, a), "scalar_add": lambda a, b: a + 3.5,
    "rsub_scalar": lambda a, b: 1 - a, "scalar_div": lambda a, b: a / 7,
}


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_broadcast(name: str, dtype: torch.dtype) -> None:
    a, b = rnd(5, 1, 19, dtype=dtype), rnd(3, 19, dtype=dtype)
    check(BINARY[name], a, b, tol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_comparison_with_a_scalar_rounds_it_to_the_tensor_type(dtype: torch.dtype) -> None:
    """torch compares a half tensor with 0.3 rounded to that type: values that round to the
    same half as 0.3 are not greater than it (a random tensor hits this now and then)."""
    a = torch.tensor([0.3, 0.2998, 0.301, 0.31, -1.0]).to(dtype)
    check(lambda x: x.masked_fill(x > 0.3, -7.0), a, tol=0)
    check(lambda x: x >= 0.3, a, tol=0)


def test_integer_and_bool_ops() -> None:
    a = torch.randint(-20, 20, (4, 9))
    b = torch.randint(1, 7, (9,))
    for fn in (torch.add, torch.mul, torch.floor_divide, torch.remainder, lambda x, y: x // 3 - y,
               lambda x, y: (x > 0) & (y > 3), lambda x, y: ~(x > 0) | (y == 2), lambda x, y: (x > 0).logical_not(),
               lambda x, y: x * 0.5, lambda x, y: torch.where(x > y, x, y), lambda x, y: x.clamp(min=-3)):
        check(fn, a, b, tol=0)


def test_type_promotion_and_cpu_scalars() -> None:
    a = rnd(6, 5, dtype=torch.float16)
    i = torch.randint(0, 9, (6, 5))
    check(lambda x, y: x + y, a, i, tol=2e-3)
    check(lambda x, y: x * torch.tensor(2.5), a, i, tol=2e-3)
    check(lambda x, y: y / 4, a, i, tol=1e-6)
    check(lambda x, y: x.float() + y, a, i, tol=1e-6)


def test_inplace_on_views() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, 1:3].mul_(2)
        x.t()[0].add_(1)
        return x

    for dtype in FLOATS:
        check(f, rnd(7, 5, dtype=dtype), tol=TOL[dtype])


def test_foreach_add_and_inplace_casts() -> None:
    """_foreach_add_ launches once per dtype group; tensors it cannot batch (16-bit, strided,
    sharing a buffer) take add_; an in-place result the tensor's dtype cannot hold is an error."""
    base = rnd(11)
    xs = [rnd(1)[0], rnd(5), torch.tensor(7), torch.arange(3, dtype=torch.int32), rnd(4, dtype=torch.float16),
          base[2:9:2], torch.tensor(-3), rnd(300)]
    for k in (3, 1.5):
        cpu = [x.clone() for x in xs if k == 3 or x.is_floating_point()]
        gpu = [x.to("webgpu") for x in cpu]
        alias = gpu[1][1:3]  # a view into a tensor already in the list: added twice, as on the CPU
        cpu.append(cpu[1][1:3])
        gpu.append(alias)
        torch._foreach_add_(cpu, k)
        torch._foreach_add_(gpu, k)
        for c, g in zip(cpu, gpu):
            assert g.dtype == c.dtype
            assert_close(g, c, TOL.get(c.dtype, 1e-6) if c.is_floating_point() else 0)
    i = torch.tensor(7).to("webgpu")
    for bad in (lambda: i.add_(2.5), lambda: torch._foreach_add_([i], 2.5)):
        with pytest.raises(RuntimeError, match="can't be cast"):
            bad()
    assert i.item() == 7


@pytest.mark.parametrize("dtype", FLOATS)
def test_reductions(dtype: torch.dtype) -> None:
    """A sum of mixed signs can cancel far below its terms, so its error is measured against the
    same reduction of |x| (the sum's condition), with the reference in float64 for f32."""
    x = rnd(3, 29, 7, dtype=dtype)
    tol = 2e-6 if dtype == torch.float32 else TOL[dtype]
    for fn in (lambda t: t.sum(1), lambda t: t.sum(), lambda t: t.mean(-1, keepdim=True), lambda t: t.mean((0, 2)),
               lambda t: t.amax(1), lambda t: t.max(), lambda t: t.min(0).values, lambda t: t.transpose(0, 2).sum(0),
               lambda t: t.pow(2).mean(-1, keepdim=True)):
        got = fn(x.to(DEV))
        want = fn(x.to(ref_dtype(dtype)))
        assert got.device.type == DEV and got.dtype == dtype and got.shape == want.shape
        scale = fn(x.to(ref_dtype(dtype)).abs()).abs().max().item()
        err = (got.cpu().double() - want.double()).abs().max().item() / scale
        assert err <= tol, f"relative error {err:.3g} > {tol}"


def test_arg_and_logical_reductions() -> None:
    x = rnd(4, 151, 3)
    for fn in (lambda t: t.argmax(1), lambda t: t.argmax(), lambda t: t.argmin(-1), lambda t: t.max(1).indices,
               lambda t: (t > 0).all(1), lambda t: (t > 1.9).any(), lambda t: (t > 0).sum(-1),
               lambda t: (t > 0).long().cumsum(1), lambda t: t.cumsum(0)):
        check(fn, x, tol=1e-6)


@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax(dtype: torch.dtype) -> None:
    x = rnd(3, 5, 41, dtype=dtype, lo=-6, hi=6)
    tol = 2e-6 if dtype == torch.float32 else TOL[dtype]
    check(lambda t: t.softmax(-1), x, tol=tol)
    check(lambda t: t.softmax(1), x, tol=tol)
    check(lambda t: torch.log_softmax(t, -1), x, tol=tol)
    check(lambda t: t.softmax(-1, dtype=torch.float32), x, tol=tol)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("m,k,n", [(1, 37, 29), (3, 40, 21), (8, 64, 72), (70, 33, 130), (1, 896, 23)])
def test_linear(m: int, k: int, n: int, dtype: torch.dtype) -> None:
    x, w, b = rnd(m, k, dtype=dtype), rnd(n, k, dtype=dtype), rnd(n, dtype=dtype)
    ref = ref_dtype(dtype)
    want = F.linear(x.to(ref), w.to(ref), b.to(ref)).to(dtype)
    got = F.linear(x.to("webgpu"), w.to("webgpu"), b.to("webgpu"))
    assert_close(got, want, 2e-6 if dtype == torch.float32 else TOL[dtype])


@pytest.mark.parametrize("dtype", FLOATS)
def test_batched_and_strided_matmul(dtype: torch.dtype) -> None:
    a, b = rnd(4, 7, 9, dtype=dtype), rnd(4, 9, 11, dtype=dtype)
    tol = 2e-6 if dtype == torch.float32 else TOL[dtype]

    def ref(fn: Callable[..., Any]) -> Callable[..., Any]:  # CPU: in f32, then rounded, as the GPU does
        return lambda *xs: fn(*[x.float() for x in xs]).to(dtype) if xs[0].device.type == "cpu" else fn(*xs)

    check(ref(torch.bmm), a, b, tol=tol)
    check(ref(lambda x, y: x.view(2, 2, 7, 9) @ y.view(2, 2, 9, 11)), a, b, tol=tol)
    check(ref(lambda x, y: x[0].t() @ x[1]), a, b, tol=tol)
    check(ref(lambda x, y: torch.addmm(y[0, 0], x[1], y[2], beta=0.5, alpha=2.0)), a, b, tol=tol)


def test_embedding_and_indexing() -> None:
    w = rnd(31, 13)
    ids = torch.randint(0, 31, (2, 5))
    check(lambda t, i: F.embedding(i, t), w, ids, tol=0)
    check(lambda t, i: t[i[0]], w, ids, tol=0)
    check(lambda t, i: t[:, i[1, :3] % 13], w, ids, tol=0)
    check(lambda t, i: t.index_select(1, i[0] % 13), w, ids, tol=0)
    check(lambda t, i: t[-1:, :], w, ids, tol=0)
    check(lambda t, i: t[i[:, :1] % 13, i[1] % 13], w, ids, tol=0)  # broadcast index tensors
    check(lambda t, i: (t > 0)[torch.arange(2, device=t.device)[:, None], -1 - i % 13], w, ids, tol=0)
    for dtype in (torch.float16, torch.bfloat16):
        check(lambda t, i: F.embedding(i, t), w.to(dtype), ids, tol=0)


def test_index_copy_and_put() -> None:
    cache = rnd(1, 3, 11, 5)
    new = rnd(1, 3, 2, 5)
    pos = torch.tensor([4, 7])
    check(lambda c, n, p: c.clone().index_copy_(2, p, n), cache, new, pos, tol=0)

    def put(c: torch.Tensor, n: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        c = c.clone()
        c[:, :, p] = n
        return c

    check(put, cache, new, pos, tol=0)
    check(lambda c, n, p: c.to(torch.float16).index_copy(2, p, n.to(torch.float16)), cache, new, pos, tol=0)


def test_cat_and_shape_ops() -> None:
    a, b = rnd(2, 3, 5), rnd(2, 4, 5)
    check(lambda x, y: torch.cat([x, y], 1), a, b, tol=0)
    check(lambda x, y: torch.cat([x, -x], -1), a, b, tol=0)
    check(lambda x, y: torch.cat([x.to(torch.float16), y.to(torch.float16)], 1), a, b, tol=0)
    check(lambda x, y: torch.stack([x, x * 2]), a, b, tol=0)
    check(lambda x, y: torch.cat([x, y, x, y[:, :1], x, y], 1), a, b, tol=0)  # more inputs than one launch takes
    check(lambda x, y: torch.cat([x.to(torch.float16), y], 1), a, b, tol=1e-3)
    check(lambda x, y: y.transpose(1, 2).contiguous().view(2, -1), a, b, tol=0)
    check(lambda x, y: x.unsqueeze(2).expand(2, 3, 4, 5).reshape(2, 12, 5), a, b, tol=0)
    check(lambda x, y: torch.triu(y[0], 1), a, b, tol=0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "float_mask", "gqa", "decode",
                                  "decode_split", "decode_split_wide", "long_causal"])
def test_scaled_dot_product_attention(case: str, dtype: torch.dtype) -> None:
    b, h, hk, lq, lk, d = 2, 6, 6, 7, 7, 24
    if case in ("gqa", "decode_split_wide"):
        hk = 2
    if case == "decode":
        lq, lk = 1, 13
    if case.startswith("decode_split"):  # keys split over workgroups, ragged last chunk, masked tail
        lq, lk = 1, 150
    if case == "decode_split_wide":  # 80-wide heads: 128 threads per value row
        d = 80
    if case == "long_causal":  # one workgroup per row looping over several key chunks, odd head size
        lq, lk, h, hk, d = 150, 150, 2, 1, 26
    q, k, v = rnd(b, h, lq, d, dtype=dtype), rnd(b, hk, lk, d, dtype=dtype), rnd(b, hk, lk, d, dtype=dtype)
    kwargs: dict[str, object] = {}
    mask = None
    if case == "causal":
        kwargs["is_causal"] = True
    if case in ("bool_mask", "decode_split"):
        mask = torch.rand(b, 1, lq, lk) > 0.3
        mask[..., 0] = True
        mask[..., 100:] = False  # a whole split with no key to attend to
    if case == "long_causal":
        kwargs["is_causal"] = True
    if case == "decode_split_wide":
        kwargs["enable_gqa"] = True
    if case == "float_mask":
        mask = torch.where(torch.rand(1, h, lq, lk) > 0.3, 0.0, -math.inf).to(dtype)
        mask[..., 0] = 0.0
    if case == "gqa":
        kwargs["enable_gqa"] = True
    tol = 5e-6 if dtype == torch.float32 else TOL[dtype] * 2

    def attn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, m: torch.Tensor | None) -> torch.Tensor:
        if q.device.type == "cpu":  # reference in f32
            r = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                               m.float() if m is not None and m.dtype != torch.bool else m, **kwargs)
            return r.to(dtype)
        return F.scaled_dot_product_attention(q, k, v, m, **kwargs)

    check(attn, q, k, v, mask, tol=tol)


def test_attention_splits_keys_only_for_few_rows() -> None:
    from webgpu_llm.kernels.sdpa import KC, splits

    assert splits(14, 144) == (5, KC)  # decode: one chunk per workgroup
    assert splits(14 * 512, 512) == (1, 512)  # a prompt: enough rows already
    ns, span = splits(14, 4096)
    assert ns * span >= 4096 and (ns - 1) * span < 4096 and 14 * ns <= 1100


def test_repeated_calls_replay_launch_plans() -> None:
    """The second call of an op with the same signature replays its plan on the new buffers."""
    for _ in range(3):
        a, b = rnd(3, 17), rnd(17)
        check(lambda x, y: torch.where(x > 0, x * y + 1, -y), a, b, tol=1e-6)
        check(lambda x, y: F.linear(x, y.expand(5, 17)), a, b, tol=2e-6)
        check(lambda x, y: torch.cat([x, x[:, :1] * 2], 1).softmax(-1), a, b, tol=2e-6)

        def inplace(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x = x.clone()
            x.add_(y).mul_(x)  # in place, reading the output's own buffer
            return x

        check(inplace, a, b, tol=2e-6)
    for _ in range(2):  # the factory forms are planned: the second round replays each
        assert torch.equal(torch.arange(7, device="webgpu").cpu(), torch.arange(7))
        assert torch.equal(torch.arange(9, device="webgpu").cpu(), torch.arange(9))
        assert torch.equal(torch.arange(3, 11, 3, device="webgpu").cpu(), torch.arange(3, 11, 3))
        assert torch.equal(torch.arange(-2, 5, dtype=torch.int32, device="webgpu").cpu(), torch.arange(-2, 5, dtype=torch.int32))
        assert torch.allclose(torch.arange(0.5, 2.0, 0.25, device="webgpu").cpu(), torch.arange(0.5, 2.0, 0.25))
        assert torch.arange(4, device="webgpu").dtype == torch.int64
        assert torch.arange(4.0, device="webgpu").dtype == torch.get_default_dtype()
    n = torch.arange(4, device="webgpu")
    assert (n + 1).dtype == torch.int64 and (n + 1.0).dtype == torch.get_default_dtype()  # 1 == 1.0: keyed by type
    out = torch.empty(0, dtype=torch.int64, device="webgpu")
    assert torch.equal(torch.arange(5, out=out).cpu(), torch.arange(5))  # out= resizes: never planned


@pytest.mark.parametrize("dtype", FLOATS)
def test_linear_of_a_decode_row(dtype: torch.dtype) -> None:
    """[1, 1, k] @ w.T, as a decode step's nn.Linear: the mat-vec path, with and without bias,
    and from a transposed (not k-contiguous) weight, which takes the general path."""
    x, w, b = rnd(1, 1, 96, dtype=dtype), rnd(45, 96, dtype=dtype), rnd(45, dtype=dtype)
    tol = 2e-6 if dtype == torch.float32 else TOL[dtype]
    for bias in (b, None):
        want = F.linear(x.float(), w.float(), None if bias is None else bias.float()).to(dtype)
        got = F.linear(x.to("webgpu"), w.to("webgpu"), None if bias is None else bias.to("webgpu"))
        assert got.shape == (1, 1, 45)
        assert_close(got, want, tol)
    wt_ = rnd(96, 45, dtype=dtype)
    assert_close(F.linear(x.to("webgpu"), wt_.to("webgpu").t()), F.linear(x.float(), wt_.float().t()).to(dtype), tol)
