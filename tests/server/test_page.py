"""The chat page end to end in headless Chromium (Debian's `chromium`, driven by Playwright):
set the API key, ask a question, see the answer stream in, stop it (the server cancels the
request), ask again and get a second answer with its speed shown; Markdown renders and its
HTML is sanitized. scripts/install-vulkan.sh --chromium installs the browser."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_helpers import API_KEY, TINY_CTX, ServerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run scripts/install-vulkan.sh --chromium")
        pytest.skip("chromium is not installed (scripts/install-vulkan.sh --chromium installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared tiny model with its special tokens' rows of the LM head zeroed: a greedy answer
    then never ends on its own (of a random model's ~1000 logits, the largest is always above
    0), so the answer to stop still streams however late Playwright gets to the button (the
    model's own answer ends after ~425 tokens, under a second on llvmpipe)."""
    from safetensors.numpy import load_file, save_file

    out = tmp_path_factory.mktemp("tiny-endless")
    for f in tiny_model.iterdir():
        shutil.copy(f, out / f.name)
    tensors = load_file(out / "model.safetensors")
    tensors["lm_head.weight"][:3] = 0.0  # <|endoftext|>, <|im_start|>, <|im_end|>
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    s = ServerProcess("--model", str(out), "--ctx", str(TINY_CTX), "--parallel", "4", "--api-key", API_KEY,
                      "--alias", "tiny")
    yield s
    s.stop()


@pytest.fixture(params=[False])
def page(request: pytest.FixtureRequest, browser: Any, server: ServerProcess) -> Iterator[Any]:
    """The chat page under its Content-Security-Policy (only `evaluate`, which the policy
    forbids, needs a context that bypasses it)."""
    context = browser.new_context(bypass_csp=request.param)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.set_default_timeout(60_000)
    pg.goto(server.url + "/")
    yield pg
    context.close()
    # a 401 before the key was set is expected; nothing else may fail in the page
    assert not [e for e in errors if "401" not in e], errors


def test_ask_stream_stop_ask_again(page: Any, server: ServerProcess) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#settings")).to_be_visible()  # no key yet: the settings open on it
    page.fill("#api-key", API_KEY)
    page.locator("#api-key").dispatch_event("change")
    expect(page.locator("#model")).to_contain_text("tiny")
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "3900")  # a long answer, to stop it while it streams
    page.locator("#max-tokens").dispatch_event("change")
    page.fill("#system", "You are a test.")
    before = server.metrics()

    page.fill("#prompt", "Tell me a long story.")
    page.press("#prompt", "Enter")
    answer = page.locator(".msg.assistant").first
    expect(page.locator(".msg.user").first).to_have_text("Tell me a long story.")
    expect(page.locator("#stop")).to_be_visible()
    expect(answer.locator(".body")).to_have_text(re.compile(r"\S.{20,}", re.S))
    expect(answer).to_have_class("msg assistant streaming")
    page.click("#stop")
    expect(page.locator("#send")).to_be_visible()
    expect(answer).to_have_attribute("data-finish", "stopped")
    expect(answer.locator(".note")).to_contain_text("stopped")
    partial = answer.locator(".body").text_content()
    assert partial and len(partial) > 20

    # the server cancelled that request long before its 3900 tokens
    for _ in range(200):
        m = server.metrics()
        key = 'webgpu_llm_responses_total{finish_reason="disconnected"}'
        if m.get(key, 0) > before.get(key, 0) and m["webgpu_llm_active_sequences"] == 0:
            break
        page.wait_for_timeout(50)
    else:
        raise AssertionError(f"the stopped request is still running: {m}")
    assert m["webgpu_llm_generated_tokens_total"] - before["webgpu_llm_generated_tokens_total"] < 3900

    page.fill("#max-tokens", "12")
    page.locator("#max-tokens").dispatch_event("change")
    page.fill("#prompt", "And another one?")
    page.click("#send")
    second = page.locator(".msg.assistant").nth(1)
    expect(second).to_have_attribute("data-finish", "length")
    expect(second.locator(".note")).to_contain_text("tok/s")
    expect(page.locator("#stats")).to_contain_text("12 tokens")
    assert page.locator(".msg.user").count() == 2 and page.locator(".msg.assistant").count() == 2
    expect(answer.locator(".body")).to_have_text(partial)  # the stopped answer is kept

    # kept across a reload (in this browser)
    page.reload()
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(page.locator("#max-tokens")).to_have_value("12")


@pytest.mark.parametrize("page", [True], indirect=True)
def test_markdown_renders_and_is_sanitized(page: Any, server: ServerProcess) -> None:
    import httpx

    headers = httpx.get(server.url + "/").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    page.wait_for_function("window.marked && window.DOMPurify && window.chatPage")
    html = page.evaluate("""window.chatPage.renderMarkdown(
        "# Title\\n\\nSome **bold** and `code`.\\n\\n```python\\nprint('hi')\\n```\\n\\n"
        + "<img src=x onerror=alert(1)> [link](javascript:alert(2)) <script>alert(3)</script>")""")
    assert "<h1>Title</h1>" in html and "<strong>bold</strong>" in html and "<code>code</code>" in html
    assert '<pre><code class="language-python">' in html
    assert "onerror" not in html and "javascript:" not in html and "<script" not in html
