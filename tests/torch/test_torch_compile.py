"""The compiler's fused ops against compositions of torch ops, and the passes on real graphs."""

from __future__ import annotations

import pytest
from torch_helpers import TOL, assert_close, ref_dtype, require_device, torch, wt

from webgpu_llm.torch.ops import plans

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.gpu
F = torch.nn.functional
ops = torch.ops.webgpu
FLOATS = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _device() -> None:
    require_device()
    wt.reset_fallback_report()
    yield
    assert wt.fallback_report() == {}


def rnd(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape).to(dtype)


def dev(*ts: torch.Tensor | None) -> list[torch.Tensor | None]:
    return [t.to("webgpu") if t is not None else None for t in ts]


def rms(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """transformers' RMSNorm (Llama, Qwen2); in float64 for a float64 x."""
    h = x.to(torch.promote_types(x.dtype, torch.float32))
    return w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rot(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., h:], x[..., :h]), -1) * sin


def tol(dtype: torch.dtype) -> float:
    return 3e-6 if dtype == torch.float32 else 2 * TOL[dtype]


@pytest.mark.parametrize("dtype", FLOATS)
def test_rms_norm_and_rope(dtype: torch.dtype) -> None:
    x, r, w = rnd(2, 3, 44, dtype=dtype), rnd(2, 3, 44, dtype=dtype), (1 + 0.1 * rnd(44)).to(dtype)
    assert_close(ops.rms_norm(*dev(x, w), 1e-6), rms(x, w), tol(dtype))
    y, h = ops.add_rms_norm(*dev(x, r, w), 1e-6)
    assert_close(h, x + r, tol(dtype))
    assert_close(y, rms(x + r, w), tol(dtype))
    q, cos, sin = rnd(1, 5, 7, 12, dtype=dtype), rnd(1, 1, 7, 12, dtype=dtype), rnd(1, 1, 7, 12, dtype=dtype)
    assert_close(ops.rope(*dev(q, cos, sin)), rot(q.float(), cos.float(), sin.float()).to(dtype), tol(dtype))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("k", [44, 1096])  # 1096: each thread takes several 16-byte units, the last ragged
def test_fused_linear(dtype: torch.dtype, rows: int, k: int) -> None:
    x, nw = rnd(1, rows, k, dtype=dtype), (1 + 0.1 * rnd(k)).to(dtype)
    ws = [rnd(n, k, dtype=dtype) for n in (20, 12, 12)]
    bs = [rnd(n, dtype=dtype) for n in (20, 12, 12)]
    res = rnd(1, rows, 20, dtype=dtype)
    ref = ref_dtype(dtype)
    xn = rms(x.to(ref), nw.to(ref)) if dtype == torch.float32 else rms(x, nw).float()

    def lin(a: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return F.linear(a.to(ref), w.to(ref), None if b is None else b.to(ref))

    t = tol(dtype) * 2
    assert_close(ops.linear(*dev(x, ws[0], bs[0])), lin(x, ws[0], bs[0]).to(dtype), t)
    # x at an offset in its buffer: read in 16-byte units beside the weights where aligned (k = 1096),
    # staged where not (k = 44 in 16-bit types)
    x_off = torch.cat([rnd(1, rows, k, dtype=dtype), x]).to("webgpu")[1:]
    assert_close(ops.linear(x_off, *dev(ws[0], bs[0])), lin(x, ws[0], bs[0]).to(dtype), t)
    assert_close(ops.linear(*dev(x, ws[0], None, res, nw), 1e-6), (lin(xn, ws[0]) + res.to(ref)).to(dtype), t)
    for y, w, b in zip(ops.linear_group(*dev(x), dev(*ws), dev(*bs), *dev(nw), 1e-6), ws, bs):
        assert_close(y, lin(xn, w, b).to(dtype), t)
    gate, up = lin(xn, ws[1]).to(dtype).to(ref), lin(xn, ws[2]).to(dtype).to(ref)
    assert_close(ops.gated_linear(*dev(x, ws[1], ws[2], nw), 1e-6), (F.silu(gate) * up).to(dtype), t)


@pytest.fixture
def matvec_specs(monkeypatch: pytest.MonkeyPatch) -> list:
    """The specs of the mat-vec kernels launched during a test that changes their tuning:
    launch plans are cleared before and after it, so that its calls (and the next tests')
    choose their kernels afresh instead of repeating earlier ones."""
    stream, seen = wt.context.ctx().stream, []
    kernel = stream.kernel

    def spy(key: object, make: object) -> object:
        if isinstance(key, tuple) and key[0] == "matvec":
            seen.append(key[1])
        return kernel(key, make)

    monkeypatch.setattr(stream, "kernel", spy)
    plans.clear()
    yield seen
    plans.clear()


def test_fused_linear_with_subgroup_sums(monkeypatch: pytest.MonkeyPatch, matvec_specs: list) -> None:
    """The subgroup reduction (off on CPU adapters by default) against the CPU, where the
    adapter has subgroups."""
    gpu = wt.context.ctx().gpu
    if not gpu.has_subgroups:
        pytest.skip("no subgroups on this adapter")
    real = gpu.subgroups_wgsl
    monkeypatch.setattr(gpu, "subgroups_wgsl", lambda on_cpu=False: real(on_cpu=True))
    for dtype in FLOATS:
        test_fused_linear(dtype, 1, 1096)
    assert matvec_specs and all(s.subgroups is not None for s in matvec_specs)


@pytest.mark.parametrize("wg, cols", [(64, 1), (128, 8), (64, 4), (256, 2), (256, 32)])  # 128 down to 2 threads a column
def test_fused_linear_other_shapes(matvec_specs: list, wg: int, cols: int) -> None:
    """The mat-vec under the shapes a sweep tries (bench/torch_step_sweep.py), every fused end."""
    k = 1096
    wt.configure(matvec_shapes={(n, k): (wg, cols) for n in (20, 44, 12)})
    try:
        for dtype in (torch.float32, torch.float16):
            test_fused_linear(dtype, 1, k)
    finally:
        wt.configure(matvec_shapes={})
    assert matvec_specs and all((s.wg, s.cols) == (wg, cols) for s in matvec_specs)


def test_direct_matvec_past_the_staging_limit(matvec_specs: list) -> None:
    """An x read beside the weights (no norm, the weights' dtype) takes no workgroup memory: a
    mat-vec with more inputs than can be staged (the 1.5B's down projection) stays a mat-vec."""
    from webgpu_llm.kernels.fused_linear import MAX_K

    k = MAX_K + 8 * 37
    for dtype in FLOATS:
        x, w, b, res = rnd(1, 1, k, dtype=dtype), rnd(20, k, dtype=dtype), rnd(20, dtype=dtype), rnd(1, 1, 20, dtype=dtype)
        ref = ref_dtype(dtype)
        xw = F.linear(x.to(ref), w.to(ref))
        assert_close(ops.linear(*dev(x, w, b)), (xw + b.to(ref)).to(dtype), tol(dtype) * 2)
        assert_close(ops.linear(*dev(x, w, None, res)), (xw + res.to(ref)).to(dtype), tol(dtype) * 2)
    assert len(matvec_specs) == 2 * len(FLOATS) and all(s.k == k and s.direct for s in matvec_specs)


@pytest.mark.parametrize("dtype", FLOATS)
def test_attention_and_kv_append(dtype: torch.dtype) -> None:
    b, h, hk, d, ctx, n = 1, 6, 2, 12, 11, 2
    kc, vc = torch.zeros(b, hk, ctx, d, dtype=dtype), torch.zeros(b, hk, ctx, d, dtype=dtype)
    k, v = rnd(b, hk, n, d, dtype=dtype), rnd(b, hk, n, d, dtype=dtype)
    cos, sin = rnd(b, 1, n, d, dtype=dtype), rnd(b, 1, n, d, dtype=dtype)
    start = torch.tensor(4)
    dkc, dvc = dev(kc, vc)
    ops.kv_append(dkc, dvc, *dev(k, v, start), True, *dev(cos, sin))
    kc[:, :, 4:6], vc[:, :, 4:6] = rot(k.float(), cos.float(), sin.float()).to(dtype), v
    assert_close(dkc, kc, tol(dtype))
    assert_close(dvc, vc, 0)

    q = rnd(b, h, n, d, dtype=dtype)
    mask = torch.ones(b, 1, n, ctx, dtype=torch.bool)
    mask[..., 6:] = False
    want = F.scaled_dot_product_attention(rot(q.float(), cos.float(), sin.float()), kc.float(), vc.float(),
                                          mask, enable_gqa=True).to(dtype)
    got = ops.attention(*dev(q, kc, vc, mask), d**-0.5, False, *dev(cos, sin))
    assert_close(got, want, tol(dtype) * 2)


# (cache length, new position, new tokens) of the append cases
APPEND_CASES = {"split": (150, 77, 1), "one_split": (11, 4, 1), "rope_off": (150, 140, 1), "two_rows": (40, 30, 2),
                "bias": (90, 3, 1)}


class AppendCase:
    """Caches, a new token to append at position p, queries and a mask for one case (heads 6,
    key/value heads 2, head size 12); `check` compares the device caches with the appended
    ones and returns the CPU's attention over them."""

    def __init__(self, dtype: torch.dtype, case: str) -> None:
        b, h, hk, d = 1, 6, 2, 12
        ctx, self.p, n = APPEND_CASES[case]
        self.dtype, self.d = dtype, d
        self.kc, self.vc = rnd(b, hk, ctx, d, dtype=dtype), rnd(b, hk, ctx, d, dtype=dtype)
        self.k, self.v, self.q = rnd(b, hk, n, d, dtype=dtype), rnd(b, hk, n, d, dtype=dtype), rnd(b, h, n, d, dtype=dtype)
        rope = case != "rope_off"
        self.cos, self.sin = (rnd(b, 1, n, d, dtype=dtype), rnd(b, 1, n, d, dtype=dtype)) if rope else (None, None)
        self.mask = torch.ones(b, 1, n, ctx, dtype=torch.bool)
        self.mask[..., self.p + n:] = False
        self.dkc, self.dvc = dev(self.kc, self.vc)

    def args(self) -> list:
        """The op's arguments from q to `start`."""
        return [*dev(self.q), self.dkc, self.dvc, *dev(self.mask), self.d**-0.5, False, *dev(self.cos, self.sin),
                *dev(self.k, self.v), *dev(torch.tensor(self.p)), True]

    def check(self) -> torch.Tensor:
        k, q, p, n = self.k.float(), self.q.float(), self.p, self.k.shape[2]
        if self.cos is not None:
            k, q = rot(k, self.cos.float(), self.sin.float()), rot(q, self.cos.float(), self.sin.float())
        self.kc[:, :, p:p + n], self.vc[:, :, p:p + n] = k.to(self.dtype), self.v
        assert_close(self.dkc, self.kc, tol(self.dtype))
        assert_close(self.dvc, self.vc, 0)
        return F.scaled_dot_product_attention(q, self.kc.float(), self.vc.float(), self.mask, enable_gqa=True)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", ["split", "one_split", "rope_off", "two_rows"])
def test_attention_append(dtype: torch.dtype, case: str) -> None:
    """attention_append = kv_append then attention. One query row, one new token and split keys:
    the split holding the new position (here the third of five) takes the token's key and value
    from it, and the merge writes them into the caches; one split or two rows: separate launches."""
    c = AppendCase(dtype, case)
    got = ops.attention_append(*c.args())
    assert_close(got, c.check().to(dtype), tol(dtype) * 2)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", list(APPEND_CASES))
def test_attention_linear(dtype: torch.dtype, case: str) -> None:
    """attention_linear = attention_append, heads side by side, then the output projection with a
    residual. One query row with split keys: the projection merges the splits as it stages its
    input and writes the new token into the caches (no merge launch); otherwise the parts run."""
    c = AppendCase(dtype, case)
    b, h, n, d = c.q.shape
    w, res = rnd(20, h * d, dtype=dtype), rnd(b, n, 20, dtype=dtype)
    bias = rnd(20, dtype=dtype) if case == "bias" else None
    stream = wt.context.ctx().stream
    before = stream.launches
    got = ops.attention_linear(*c.args(), *dev(w, bias, res))
    launches = stream.launches - before
    att = c.check().to(dtype)
    want = F.linear(att.transpose(1, 2).reshape(b, n, h * d).float(), w.float(),
                    None if bias is None else bias.float()) + res.float()
    assert_close(got, want.to(dtype), tol(dtype) * 4)
    if case in ("split", "rope_off", "bias"):
        assert launches == 2, launches  # the attention's partials, then the merging projection


@pytest.mark.parametrize("causal", [True, False])
def test_attention_walks_several_chunks(causal: bool) -> None:
    """Enough query rows that the keys are not split: each workgroup walks all its chunks, the
    next chunk's keys, values and mask requested while the current one is weighed."""
    q, k, v = rnd(1, 8, 130, 16), rnd(1, 2, 100, 16), rnd(1, 2, 100, 16)
    mask = None if causal else torch.rand(1, 1, 130, 100) > 0.3
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
    got = F.scaled_dot_product_attention(*dev(q, k, v), attn_mask=dev(mask)[0], is_causal=causal, enable_gqa=True)
    assert_close(got, want, 1e-5)


def test_attention_into_linear_only_where_heads_keep_their_order() -> None:
    """The O projection may merge the attention's output itself only where the reshapes in
    between leave its elements in order (heads side by side): a transpose that moves only a
    size-1 dimension does, one that swaps heads and head dimensions does not."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from webgpu_llm.torch.compile.fuse_attention import _keeps_order

    x = torch.randn(1, 6, 1, 4)
    gm = make_fx(lambda t: (t.transpose(1, 2), t.transpose(1, 3), t.permute(0, 2, 1, 3), t.permute(0, 3, 2, 1),
                            t.view(6, 4)), tracing_mode="fake")(x)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    assert [_keeps_order(n) for n in nodes] == [True, False, True, False, True]


def test_attention_with_subgroups(monkeypatch: pytest.MonkeyPatch) -> None:
    """The attention kernels built with subgroup operations (off on CPU adapters by default):
    where a subgroup spans a chunk's keys their max and sum are subgroup reductions, elsewhere
    (narrow subgroups) the same kernel walks the scores."""
    gpu = wt.context.ctx().gpu
    if not gpu.has_subgroups:
        pytest.skip("no subgroups on this adapter")
    real = gpu.subgroups_wgsl
    monkeypatch.setattr(gpu, "subgroups_wgsl", lambda on_cpu=False: real(on_cpu=True))
    for dtype in (torch.float32, torch.float16):
        for case in ("split", "two_rows"):
            test_attention_linear(dtype, case)
        test_attention_and_kv_append(dtype)


def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=48, intermediate_size=88, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.3)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_decode_graph_is_fused() -> None:
    """A static-cache decode step of a Llama layer is 5 launches (QKV, attention taking the new
    token, O merging the attention's key splits and writing the token into the cache, gate/up,
    down) once the cache is long enough to split its keys."""
    torch._dynamo.reset()
    model = tiny_llama()
    ids = torch.tensor([[5, 17, 42, 3, 88] * 12])
    want = model.generate(ids, max_new_tokens=6, do_sample=False, cache_implementation="static")
    dev_model = tiny_llama().to("webgpu")
    dev_model.forward = torch.compile(dev_model.forward, backend="webgpu")
    with torch.no_grad():
        got = dev_model.generate(ids.to("webgpu"), max_new_tokens=6, do_sample=False, cache_implementation="static")
    assert torch.equal(got.cpu(), want)
    decode = [g for g in wt.graph_report() if g["replays"]]
    assert decode, wt.graph_report()
    g = decode[-1]
    for name in ("fuse_linear_group", "fuse_gated_linear", "fuse_residual_linear", "fuse_attention",
                 "fuse_kv_append", "fuse_norm_into_linear"):
        assert g["fusions"][name] >= 2, (name, g["fusions"])
    assert g["fusions"]["batch_inplace_adds"] == 1, g["fusions"]  # both layers' length counters, one launch
    assert g["fusions"]["fuse_append_into_attention"] == 2, g["fusions"]
    assert g["fusions"]["fuse_attention_into_linear"] == 2, g["fusions"]
    layers = 2
    assert g["recorded_launches"][0] <= 5 * layers + 8, g  # + embedding, RoPE tables, LM head, counters


def test_mutated_inputs_sees_tensor_lists() -> None:
    """A placeholder written through a Tensor(a!)[] argument is bound in place, not copied."""
    from webgpu_llm.torch.compile.backend import mutated_inputs

    g = torch.fx.Graph()
    a, b, c = g.placeholder("a"), g.placeholder("b"), g.placeholder("c")
    g.call_function(torch.ops.aten._foreach_add_.Scalar, ([a, c], 1))
    g.output(b)
    assert mutated_inputs(torch.fx.GraphModule(torch.nn.Module(), g)) == {0, 2}


@pytest.mark.parametrize("chunk", [0, 1, 3])
def test_replay_in_several_submits(chunk: int) -> None:
    """A replay split into submits of `chunk` dispatches (0: one submit) computes the same."""
    torch._dynamo.reset()
    stream = wt.context.ctx().stream
    old = stream.replay_chunk

    def step(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        for _ in range(4):
            x = torch.tanh(x @ w) + x
        return x.sum(-1)

    x, w = rnd(3, 16), rnd(16, 16) * 0.3
    want = step(x, w)
    f = torch.compile(step, backend="webgpu")
    try:
        stream.replay_chunk = chunk
        for _ in range(3):  # record on the second call, replay on the third
            before = stream.submits
            got = f(x.to("webgpu"), w.to("webgpu"))
            assert_close(got, want, 1e-5)
        graph = [g for g in wt.graph_report() if g["replays"]][-1]
        n = graph["recorded_launches"][0]
        want_submits = 1 if chunk == 0 else max(1, round(n / chunk + 0.25))
        assert n >= 5 and stream.submits - before in (want_submits, want_submits + 1), (n, stream.submits - before)
    finally:
        stream.replay_chunk = old


@pytest.mark.parametrize("n", [33000, 16500, 8200, 4100, 300])  # 32, 16, 8, 4 and 2 output columns per workgroup
def test_wide_matvec(n: int) -> None:
    x, w, nw = rnd(1, 1, 96, dtype=torch.float16), rnd(n, 96, dtype=torch.float16), (1 + 0.1 * rnd(96)).half()
    want = F.linear(rms(x, nw).float(), w.float()).half()
    assert_close(ops.linear(*dev(x, w, None, None, nw), 1e-6), want, 4e-3)


def test_replay_rebinds_new_static_inputs() -> None:
    """A graph called with a new in-place input of the same shape (a new static cache, as each
    `generate` call makes) replays its recording bound to the new buffer, without recording again."""
    torch._dynamo.reset()
    earlier = {g["graph"] for g in wt.graph_report()}

    def step(cache: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        cache.add_(x)
        return cache * 2 + x

    f = torch.compile(step, backend="webgpu")
    x = rnd(4, 8)
    caches = [rnd(4, 8) for _ in range(2)]
    want = [c.clone() for c in caches]
    got = [c.to("webgpu") for c in caches]
    for k in (0, 0, 0, 1, 1, 0):  # record on the second call, then replay; switch caches twice
        out = f(got[k], x.to("webgpu"))
        want[k].add_(x)
        assert_close(out, want[k] * 2 + x, 1e-6)
        for c, w in zip(got, want):
            assert_close(c, w, 1e-6)
    graphs = [g for g in wt.graph_report() if g["replays"] and g["graph"] not in earlier]
    assert len(graphs) == 1 and graphs[0]["replays"] == 4 and len(graphs[0]["recorded_launches"]) == 1, graphs
