"""The in-browser runtime (the ES modules beside this file) and the small static server of
`webgpu-llm web`, which hands the page and an exported model (engine/export.py) to a browser.

The server only serves files: the page fetches plan.json, the weights and tokenizer.json once
and then runs everything on the browser's WebGPU. It sends the headers that make the page
cross-origin isolated (finer `performance.now()`, which the characterization's browser leg
times with) and a Content-Security-Policy that allows only this origin.
"""

from __future__ import annotations

import mimetypes
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

WEB_DIR = Path(__file__).parent
TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".json": "application/json",
         ".bin": "application/octet-stream", ".html": "text/html; charset=utf-8", ".css": "text/css",
         ".md": "text/plain; charset=utf-8"}
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-cache",
}


class _Handler(SimpleHTTPRequestHandler):
    """GET of the page's files (/...) and of the export's (/model/...); nothing else."""

    server: WebServer

    def translate(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        if path in ("", "/"):
            path = "/index.html"
        root, rest = WEB_DIR, path.lstrip("/")
        for prefix, folder in self.server.mounts.items():
            if rest == prefix or rest.startswith(prefix + "/"):
                root, rest = folder, rest[len(prefix) + 1:]
                break
        else:
            if rest.endswith(".py") or "__pycache__" in rest:
                return None
        target = (root / rest).resolve()
        if not target.is_relative_to(root.resolve()) or not target.is_file():
            return None
        return target

    def do_GET(self) -> None:
        self._send(body=True)

    def do_HEAD(self) -> None:
        self._send(body=False)

    def _send(self, body: bool) -> None:
        target = self.translate()
        if target is None:
            self.send_error(HTTPStatus.NOT_FOUND, "not found")
            return
        size = target.stat().st_size
        self.send_response(HTTPStatus.OK)
        ctype = TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        for k, v in HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if not body:
            return
        with open(target, "rb") as f:
            try:
                while chunk := f.read(1 << 20):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class WebServer(ThreadingHTTPServer):
    """Serves the page at / and each mounted folder at /NAME/ (e.g. an export at /model/)."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1", port: int = 0, mounts: dict[str, Path] | None = None,
                 verbose: bool = False) -> None:
        self.mounts = {k.strip("/"): Path(v) for k, v in (mounts or {}).items()}
        self.verbose = verbose
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0', '') else host}:{port}/"

    def start(self) -> WebServer:
        """Serve from a background thread (tests, the characterization)."""
        threading.Thread(target=self.serve_forever, name="webgpu-llm-web", daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
