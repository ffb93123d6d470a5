"""Headless Chromium with WebGPU on SwiftShader, driven by Playwright (Debian's `chromium`;
scripts/install-vulkan.sh --chromium installs it), for the browser runtime's tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from webgpu_llm.characterize.browser import CHROMIUM_WEBGPU_ARGS, find_chromium


@dataclass
class Exported:
    """SmolLM2 exported for the tests, with the Python engine on the plan's own Programs."""

    out: Path
    plan: dict[str, Any]
    session: Any
    source: Any
    tokenizer: Any


def chromium_or_skip() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: run scripts/install-vulkan.sh --chromium")
        pytest.skip("chromium is not installed (scripts/install-vulkan.sh --chromium installs it)")
    return path


@contextmanager
def playwright() -> Iterator[Any]:
    """Playwright, once Chromium is known to be there (one instance at a time per process)."""
    chromium_or_skip()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


def launch(p: Any, webgpu: bool = True) -> Any:
    """A headless Chromium (with WebGPU on SwiftShader unless `webgpu` is false)."""
    args = CHROMIUM_WEBGPU_ARGS if webgpu else [a for a in CHROMIUM_WEBGPU_ARGS if "webgpu" not in a]
    return p.chromium.launch(executable_path=chromium_or_skip(),
                             args=[*args, *([] if webgpu else ["--disable-gpu"])], headless=True)


def new_page(browser: Any, url: str, errors: list[str] | None = None) -> Any:
    """A page at `url` (its CSP bypassed so that tests may evaluate scripts in it), with
    uncaught errors and console errors collected into `errors`."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(240_000)
    page.goto(url)
    page.wait_for_function("window.webgpuLlm !== undefined")
    return page


