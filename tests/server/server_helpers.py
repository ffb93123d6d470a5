"""`webgpu-llm serve` as a real process on a free localhost port.

`ServerProcess` starts `python -m webgpu_llm.cli.main serve --port 0 ...` with this checkout on
PYTHONPATH, reads the address it prints, and waits for /health. The tiny random model of
reference_models.py is served with a 4096-token context (its config says 256; the weights
fit any length), so that a long answer keeps the engine busy for seconds: the tests that need
a request still running (disconnect, queue full, SIGTERM) use one of up to 4000 tokens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

import webgpu_llm

SRC = Path(webgpu_llm.__file__).resolve().parents[1]
ROOT = SRC.parent
API_KEY = "test-key-123"
TINY_CTX = 4096
START_TIMEOUT_S = 180.0  # a cold start on a busy 2-core llvmpipe machine compiles every kernel


def env() -> dict[str, str]:
    """This process's environment with this checkout first on PYTHONPATH."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SRC), *([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])])
    e["PYTHONUNBUFFERED"] = "1"
    return e


class ServerProcess:
    """A `webgpu-llm serve` subprocess: its URL, its log, a way to stop it."""

    def __init__(self, *args: str, backend: str | None = None) -> None:
        backend = backend or os.environ.get("WEBGPU_LLM_TEST_BACKENDS", "wgpu").split(",")[0]
        argv = [sys.executable, "-m", "webgpu_llm.cli.main", "serve", "--port", "0", "--backend", backend, *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=env(), cwd=ROOT)
        self.lines: list[str] = []
        self.url = ""
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self._wait()
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"serving .* at (http://\S+?)/? \(", line)
            if m and not self.url:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def _wait(self) -> None:
        if not self._ready.wait(START_TIMEOUT_S) or not self.url:
            raise RuntimeError(f"the server did not start:\n{self.log()}")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the server did not answer /health:\n{self.log()}")

    def log(self) -> str:
        return "".join(self.lines[-60:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def metrics(self, key: str | None = API_KEY) -> dict[str, float]:
        """/metrics as {'name{labels}': value}."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = httpx.get(self.url + "/metrics", headers=headers, timeout=30)
        r.raise_for_status()
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def sse_events(response: httpx.Response) -> Iterator[Any]:
    """The JSON of each `data:` event of a streaming response (the text '[DONE]' as is)."""
    for line in response.iter_lines():
        if line.startswith("data:"):
            data = line[5:].strip()
            yield data if data == "[DONE]" else json.loads(data)
