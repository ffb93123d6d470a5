"""`webgpu-llm serve`: an OpenAI-compatible HTTP API over the engine's scheduler, and a chat page.

`create_app(llm, scheduler, ServerConfig(...))` builds the Starlette app (app.py); the CLI
(cli/serve.py) runs it with uvicorn. `static/` holds the chat page: plain HTML, JS and CSS,
with the Markdown renderer and HTML sanitizer vendored under `static/vendor/`.
"""

from .app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
