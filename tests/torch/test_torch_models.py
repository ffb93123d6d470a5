"""Tiny random Hugging Face Qwen2 and Llama models on the webgpu device, eager and compiled,
against the same models on the CPU."""

from __future__ import annotations

import pytest
from torch_helpers import rel_err, require_device, torch, wt

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.gpu

PROMPT = [[5, 17, 42, 3, 88, 61, 9]]


def tiny(kind: str) -> torch.nn.Module:
    """Odd sizes and grouped-query attention; weights wide enough to give varied greedy text."""
    torch.manual_seed(0)
    if kind == "qwen2":
        cfg = transformers.Qwen2Config(
            vocab_size=101, hidden_size=40, intermediate_size=72, num_hidden_layers=2, num_attention_heads=5,
            num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True, initializer_range=0.3)
        return transformers.Qwen2ForCausalLM(cfg).eval()
    cfg = transformers.LlamaConfig(
        vocab_size=97, hidden_size=48, intermediate_size=88, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=False, initializer_range=0.3)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.fixture(autouse=True)
def _device() -> None:
    require_device()
    wt.reset_fallback_report()


def on_device(model: torch.nn.Module, dtype: torch.dtype, compiled: bool, fused: bool = False) -> torch.nn.Module:
    dev = type(model)(model.config).eval().to(dtype)
    dev.load_state_dict(model.state_dict())
    dev = dev.to("webgpu")
    if fused:
        assert wt.fuse_layers(dev) == {"rms_norm": 5, "mlp": 2, "rope": 2}
    if compiled:
        dev.forward = torch.compile(dev.forward, backend="webgpu")
    return dev


def generate(model: torch.nn.Module, device: str, **kwargs: object) -> list[int]:
    ids = torch.tensor(PROMPT, device=device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0, **kwargs)
    return out[0].tolist()


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2)])
def test_eager_logits(kind: str, dtype: torch.dtype, tol: float, fused: bool) -> None:
    model = tiny(kind)
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        want = model.to(dtype)(ids).logits.float()
        got = on_device(model, dtype, False, fused)(ids.to("webgpu")).logits
    assert got.dtype == dtype
    assert rel_err(got.float(), want) < tol
    assert wt.fallback_report() == {}


@pytest.mark.parametrize("fused", [False, True], ids=["plain", "fused"])
@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_eager_generate_matches_cpu(kind: str, fused: bool) -> None:
    model = tiny(kind)
    want = generate(model, "cpu")
    assert len(set(want[len(PROMPT[0]):])) > 2, "the tiny model should produce varied text"
    assert generate(on_device(model, torch.float32, False, fused), "webgpu") == want
    assert wt.fallback_report() == {}


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_compiled_generate_matches_cpu(kind: str, cache: str) -> None:
    torch._dynamo.reset()
    model = tiny(kind)
    kwargs = {"cache_implementation": "static"} if cache == "static" else {}
    want = generate(model, "cpu", **kwargs)
    dev = on_device(model, torch.float32, True)
    assert generate(dev, "webgpu", **kwargs) == want
    # a second run replays the recorded decode graph
    assert generate(dev, "webgpu", **kwargs) == want
    assert wt.fallback_report() == {}


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2)])
def test_compiled_logits(dtype: torch.dtype, tol: float) -> None:
    torch._dynamo.reset()
    model = tiny("qwen2")
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        want = model.to(dtype)(ids).logits.float()
        dev = on_device(model, dtype, True)
        for _ in range(3):  # eager run, recording, replay
            got = dev(ids.to("webgpu")).logits
            assert rel_err(got.float(), want) < tol
    assert wt.fallback_report() == {}


def test_fused_layers_take_fewer_ops_and_come_undone() -> None:
    """fuse_layers replaces each RMSNorm, SwiGLU gate and rotary of q or k by one op (same
    logits); the fused modules still run on the CPU, and unfuse_layers restores the model's
    own forwards."""
    from collections import Counter

    from torch.utils._python_dispatch import TorchDispatchMode

    seen: Counter[str] = Counter()

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            seen[str(func).split(".")[1] if str(func).startswith("aten.") else str(func)] += 1
            return func(*args, **(kwargs or {}))

    def ops_and_logits(m: torch.nn.Module, device: str) -> tuple[Counter[str], torch.Tensor]:
        seen.clear()
        with torch.no_grad(), Count():
            logits = m(torch.tensor(PROMPT, device=device)).logits
        return Counter(seen), logits.cpu()

    model = tiny("qwen2")
    dev = on_device(model, torch.float32, False)
    plain, want = ops_and_logits(dev, "webgpu")
    assert wt.fuse_layers(dev) == {"rms_norm": 5, "mlp": 2, "rope": 2}
    fused, got = ops_and_logits(dev, "webgpu")
    assert rel_err(got, want) < 1e-4
    # 5 norms, 2 MLP gates, q and k of 2 layers: their pow/mean/rsqrt, silu and slice/neg/cat are gone
    assert (fused["webgpu.rms_norm.default"], fused["webgpu.gated_linear.default"], fused["webgpu.rope.default"]) == (5, 2, 4)
    assert not {"pow", "rsqrt", "silu", "neg", "slice"} & set(fused), fused
    assert sum(fused.values()) < sum(plain.values()) - 25, (plain, fused)
    cpu_ops, cpu_logits = ops_and_logits(dev.to("cpu"), "cpu")  # fused modules, host tensors: their own forward
    assert rel_err(cpu_logits, want) < 1e-4 and cpu_ops["rsqrt"] == 5
    wt.unfuse_layers(dev)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        wt.fuse_layers("Qwen/Qwen2.5-0.5B")  # type: ignore[arg-type]
    assert ops_and_logits(dev.to("webgpu"), "webgpu")[0] == plain


def test_fused_layers_under_torch_compile() -> None:
    """A fused model compiles as the plain one (the fused forwards step aside while dynamo traces)."""
    torch._dynamo.reset()
    model = tiny("qwen2")
    kwargs = {"cache_implementation": "static"}
    want = generate(model, "cpu", **kwargs)
    dev = on_device(model, torch.float32, True, fused=True)
    assert generate(dev, "webgpu", **kwargs) == want
    assert generate(dev, "webgpu", **kwargs) == want
    assert wt.fallback_report() == {}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_f16_prompt_on_f16_tiles(monkeypatch: pytest.MonkeyPatch, compiled: bool) -> None:
    """A 40-token f16 prompt's matmuls on the f16 tiles (emulated here; the matrix units where
    the device has them and `tiles` is auto): the logits within f16 rounding of the CPU's."""
    if not wt.context.ctx().gpu.has_f16:
        pytest.skip("the f16 tiles need shader-f16")
    torch._dynamo.reset()
    stream, seen = wt.context.ctx().stream, []
    kernel = stream.kernel
    monkeypatch.setattr(stream, "kernel", lambda key, make: (seen.append(key), kernel(key, make))[1])
    model = tiny("qwen2")
    ids = torch.tensor([[(7 * i + 3) % 101 for i in range(40)]])
    wt.configure(tiles="emulate")
    try:
        with torch.no_grad():
            want = model.to(torch.float16)(ids).logits.float()
            got = on_device(model, torch.float16, compiled)(ids.to("webgpu")).logits
    finally:
        wt.configure(tiles="auto")
    assert any(isinstance(k, tuple) and k[0] == "mm_tiles" for k in seen)
    assert rel_err(got.float(), want) < 1e-2
    with pytest.raises(ValueError, match="tiles"):
        wt.configure(tiles="yes")
