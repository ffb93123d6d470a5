"""The browser runtime in headless Chromium (WebGPU on SwiftShader): SmolLM2 exported by the
engine loads in the page, whose token ids, greedy tokens and logits equal the Python engine's
on the same Programs; bad input gives a clear message in the page. SwiftShader runs SmolLM2
at about one token a second on two cores: the token counts stay small."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from web_helpers import Exported, launch, new_page, playwright

from webgpu_llm.engine import SamplingParams
from webgpu_llm.engine.export import prefill_logits

REF = json.loads((Path(__file__).parents[1] / "fixtures/reference/smollm2_q4_1.json").read_text())
TEXTS = ["Hello world! How are you?", "  leading spaces and\ttabs\n\nnew lines  ", "numbers 1234567 and 3.14159",
         "ünïcödé, 日本語のテキスト, emoji 🚀🔥, Ελληνικά", "<|im_start|>user\nHi<|im_end|>\n<jupyter_code>x",
         "def f(x):\n    return x ** 2\n", "don't won't I'm they're", ""]


@pytest.fixture(scope="module")
def pw() -> Iterator[Any]:
    with playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(pw: Any) -> Iterator[Any]:
    b = launch(pw)
    yield b
    b.close()


@pytest.fixture(scope="module")
def page(browser: Any, web_server: Any) -> Iterator[Any]:
    """The page with SmolLM2 loaded once for the module; nothing may fail in it."""
    errors: list[str] = []
    pg = new_page(browser, web_server.url, errors)
    r = pg.evaluate("window.webgpuLlm.load('model/')")
    assert r == {"ok": True}, r
    yield pg
    pg.context.close()
    assert errors == [], errors


def test_page_says_it_is_ready(page: Any, exported: Exported) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#status")).to_contain_text("ready in")
    expect(page.locator("#model")).to_contain_text("Smollm2")
    expect(page.locator("#error")).to_be_hidden()
    assert page.locator("#prompt").is_enabled()


def test_token_ids_equal_the_python_tokenizer(page: Any, exported: Exported) -> None:
    tok = exported.tokenizer
    text = (Path(__file__).parents[1] / "data/eval.txt").read_text()[:3000]
    for t in [*TEXTS, text]:
        assert page.evaluate("(t) => window.webgpuLlm.encode(t)", t) == tok.encode(t), t
        assert page.evaluate("(t) => window.webgpuLlm.encode(t, {parseSpecial: false})", t) == \
            tok.encode(t, parse_special=False), t
    for p in REF["prompts"]:
        if p["kind"] == "chat":  # the chat template rendered by @huggingface/jinja
            messages = [{"role": "user", "content": p["prompt"]}]
            assert page.evaluate("(m) => window.webgpuLlm.chatIds(m)", messages) == p["prompt_ids"]
    ids = tok.encode("Décodé: 日本 🚀 <|im_end|>")
    assert page.evaluate("(i) => window.webgpuLlm.decode(i)", ids) == tok.decode(ids)


def test_greedy_32_tokens_equal_the_python_engine(page: Any, exported: Exported) -> None:
    """The chat prompt of the reference, 32 argmax tokens without stopping: the page's equal
    the Python engine's on the same Programs (and transformers', whose margins allow it)."""
    prompt = REF["prompts"][0]
    ids = prompt["prompt_ids"]
    want = list(exported.session.stream(ids, 0, SamplingParams(), 32))
    got = page.evaluate("(ids) => window.webgpuLlm.generateIds(ids, 32, {temperature: 0}, {noStop: true})", ids)
    assert got == want
    assert got == REF["transformers"]["generation"][0]["generated_ids"]
    stats = page.evaluate("window.webgpuLlm.stats()")
    assert stats["generated_tokens"] == 32 and stats["decode_tok_s"] > 0
    print(f"browser decode {stats['decode_tok_s']:.2f} tok/s, prefill {stats['prompt_tokens']} tokens in "
          f"{stats['prefill_ms'] / 1000:.2f} s")


def test_state_and_sampler_follow_the_python_engine(page: Any) -> None:
    """The page lays out the state struct as SamplingParams.state does (frequency and presence
    penalties included) and takes the penalty sampler where the engine does."""
    values = dict(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05, repeat_penalty=1.1, repeat_last_n=64,
                  frequency_penalty=0.5, presence_penalty=-0.25)
    want = SamplingParams(**values).state(pos=5, n=3, seed=77, n_gen=2).tolist()
    got = page.evaluate("(v) => Array.from(window.webgpuLlm.page.engine.stateWords(v))",
                        {**values, "pos": 5, "n": 3, "seed": 77, "n_gen": 2})
    assert got == want
    for p, variant in (({"frequency_penalty": 0.5}, "sampler_greedy_penalty"),
                       ({"presence_penalty": 0.5, "repeat_last_n": 0}, "sampler_greedy"),
                       ({"repeat_penalty": 1.1}, "sampler_greedy_penalty"), ({}, "sampler_greedy")):
        got_variant = page.evaluate("(p) => { const e = window.webgpuLlm.page.engine; return e.samplerOf(e.params(p)); }",
                                    {"temperature": 0, **p})
        assert got_variant == variant, p
        assert SamplingParams(temperature=0, **p).penalised == variant.endswith("penalty")


def test_penalised_greedy_equals_the_python_engine(page: Any, exported: Exported) -> None:
    """Frequency and presence penalties in the page: the tokens of the engine's penalty kernel."""
    ids = exported.tokenizer.encode("one, two, one, two, one,")
    params = {"temperature": 0, "frequency_penalty": 1.5, "presence_penalty": 1.0}
    want = list(exported.session.stream(ids, 0, SamplingParams(**params), 6))
    assert want != list(exported.session.stream(ids, 0, SamplingParams(), 6))  # the penalties matter here
    got = page.evaluate("([ids, p]) => window.webgpuLlm.generateIds(ids, 6, p, {noStop: true})", [ids, params])
    assert got == want


def test_logits_within_tolerance_of_the_python_engine(page: Any, exported: Exported) -> None:
    ids = exported.tokenizer.encode("The three primary colors are")
    want = prefill_logits(exported.session, ids)
    got = np.array(page.evaluate("(ids) => window.webgpuLlm.logits(ids)", ids), np.float32)
    assert got.shape == want.shape
    # the same f32 arithmetic, by another compiler: WGSL lets exp and inverseSqrt differ by a
    # few ULP, which 30 layers grow to ~3e-4 of the logits' scale on SwiftShader vs llvmpipe
    err = np.abs(got - want).max()
    assert err <= 1e-3 * np.abs(want).max(), err
    assert got.argmax() == want.argmax()
    assert set(np.argsort(-got)[:5]) == set(np.argsort(-want)[:5])


def test_chat_in_the_page(page: Any) -> None:
    """Type a question, get an answer with its speed; the second turn reuses the KV cache."""
    from playwright.sync_api import expect

    page.fill("#max-tokens", "3")
    page.fill("#prompt", "What is the capital of France?")
    page.press("#prompt", "Enter")
    answer = page.locator(".msg.assistant").first
    expect(answer).to_have_attribute("data-finish", "length", timeout=120_000)
    assert answer.locator(".body").text_content() == "The capital of"
    expect(answer.locator(".note")).to_contain_text("tok/s")
    page.fill("#prompt", "And of Italy?")
    page.press("#prompt", "Enter")
    second = page.locator(".msg.assistant").nth(1)
    expect(second).to_have_attribute("data-finish", re.compile("length|stop"), timeout=120_000)
    # only the new turn's tokens went through the layers
    expect(second.locator(".note")).to_contain_text(re.compile(r"prompt \d+ new of \d+"))
    new, total = map(int, re.search(r"prompt (\d+) new of (\d+)", second.locator(".note").text_content()).groups())
    assert new < total - 30


def test_serve_web_offers_to_run_in_this_browser(browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """serve --web: the model is exported for the browser at startup (into the cache folder),
    the model card names the page, and the chat page offers "run in this browser" beside the
    server; the link opens the browser runtime, which loads that export and answers in the page."""
    import sys

    import httpx
    from playwright.sync_api import expect

    sys.path.insert(0, str(Path(__file__).parents[1] / "server"))
    from server_helpers import ServerProcess

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    server = ServerProcess("--ctx", "256", "--parallel", "1", "--web")
    try:
        assert any("exporting the model for the browser" in line for line in server.lines)
        assert list((tmp_path / "webgpu-llm" / "exports").glob("*/plan.json"))
        assert httpx.get(server.url + "/v1/models").json()["data"][0]["web_page"] == "/web/?plan=model/"
        assert httpx.get(server.url + "/web/model/plan.json").json()["model"]["ctx"] == 256
        errors: list[str] = []
        context = browser.new_context()
        pg = context.new_page()
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.set_default_timeout(240_000)
        pg.goto(server.url + "/")
        expect(pg.locator("#where")).to_contain_text("running on the server", timeout=60_000)
        pg.click("#run-in-browser")
        expect(pg.locator("#prompt")).to_be_enabled(timeout=180_000)
        assert pg.url.startswith(server.url + "/web/")
        pg.fill("#max-tokens", "2")
        pg.fill("#prompt", "What is the capital of France?")
        pg.press("#prompt", "Enter")
        expect(pg.locator(".msg.assistant .body")).to_have_text("The capital", timeout=120_000)
        context.close()
        assert errors == []
    finally:
        server.stop()


# -- bad input: a clear message in the page ------------------------------------------------------
@pytest.mark.parametrize(("folder", "message"), [
    ("bad/not-json/", "not a webgpu-llm export: it is not JSON"),
    ("bad/not-export/", 'not a webgpu-llm export (it has no "format"'),
    ("bad/nowhere/", "is not there (HTTP 404)"),
    ("bad/needs-f16/", "lacks feature shader-f16"),
    ("bad/too-big/", "limit maxStorageBufferBindingSize: needs 64.00 GiB"),
    ("bad/truncated/", "has 1000 bytes, the plan says"),
])
def test_bad_export_gives_a_clear_message(browser: Any, web_server: Any, folder: str, message: str) -> None:
    from playwright.sync_api import expect

    errors: list[str] = []
    pg = new_page(browser, web_server.url, errors)
    pg.fill("#plan-url", folder)
    pg.click("#load")
    expect(pg.locator("#error")).to_be_visible()
    expect(pg.locator("#error")).to_contain_text(message)
    assert pg.evaluate("window.webgpuLlm.page.state") == "error"
    assert pg.locator("#prompt").is_disabled()
    pg.context.close()
    assert [e for e in errors if "404" not in e] == []


def test_lost_device_gives_a_clear_message(page: Any) -> None:
    """Runs last in this module: the device of the shared page is lost for good."""
    from playwright.sync_api import expect

    page.evaluate("window.webgpuLlm.loseDevice()")
    expect(page.locator("#error")).to_contain_text("the GPU device was lost")
    expect(page.locator("#error")).to_contain_text("reload the page")
    assert page.evaluate("window.webgpuLlm.page.state") == "lost"
    assert page.locator("#prompt").is_disabled()


def test_no_webgpu_gives_a_clear_message(pw: Any, web_server: Any) -> None:
    from playwright.sync_api import expect

    b = launch(pw, webgpu=False)
    try:
        pg = new_page(b, web_server.url + "?plan=model/")
        expect(pg.locator("#error")).to_contain_text(re.compile("no WebGPU|found no GPU adapter"))
        print(pg.locator("#error").text_content())
    finally:
        b.close()
