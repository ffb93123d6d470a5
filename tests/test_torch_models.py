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


def on_device(model: torch.nn.Module, dtype: torch.dtype, compiled: bool) -> torch.nn.Module:
    dev = type(model)(model.config).eval().to(dtype)
    dev.load_state_dict(model.state_dict())
    dev = dev.to("webgpu")
    if compiled:
        dev.forward = torch.compile(dev.forward, backend="webgpu")
    return dev


def generate(model: torch.nn.Module, device: str, **kwargs: object) -> list[int]:
    ids = torch.tensor(PROMPT, device=device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=0, **kwargs)
    return out[0].tolist()


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float16, 1e-2)])
def test_eager_logits(kind: str, dtype: torch.dtype, tol: float) -> None:
    model = tiny(kind)
    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        want = model.to(dtype)(ids).logits.float()
        got = on_device(model, dtype, False)(ids.to("webgpu")).logits
    assert got.dtype == dtype
    assert rel_err(got.float(), want) < tol
    assert wt.fallback_report() == {}


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_eager_generate_matches_cpu(kind: str) -> None:
    model = tiny(kind)
    want = generate(model, "cpu")
    assert len(set(want[len(PROMPT[0]):])) > 2, "the tiny model should produce varied text"
    assert generate(on_device(model, torch.float32, False), "webgpu") == want
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
