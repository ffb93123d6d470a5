"""`webgpu-llm serve`: the OpenAI-compatible HTTP server and the chat page (server/app.py).

The address is bound before the model loads (a port in use fails at once) and listened on
once it has loaded. SIGTERM or Ctrl-C stop taking connections and let the running requests
finish (up to --drain-timeout seconds, after which they are cut), then the process exits
with code 0; a second Ctrl-C exits at once.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError
from .common import add_common, add_model, check_ctx, load_llm, locate, quiet


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="serve the model over an OpenAI-compatible HTTP API, with a chat page",
        description="Serve the model over HTTP: POST /v1/chat/completions and /v1/completions (streaming "
                    "or not), GET /v1/models, /health, /metrics (Prometheus), and a chat page at /; an "
                    "embedding model (bert, nomic-bert) answers POST /v1/embeddings instead. "
                    "Requests wait in a queue for one of --parallel sequence slots; a full queue answers "
                    "429 with Retry-After. SIGTERM or Ctrl-C finish the running requests, then exit.")
    add_model(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on; 0 = any free one (default: %(default)s)")
    p.add_argument("--parallel", "-np", type=int, default=4, metavar="N",
                   help="sequences decoded together, each with --ctx tokens of context (default: %(default)s)")
    p.add_argument("--kv-tokens", type=int, default=None, metavar="N",
                   help="KV-cache positions the --parallel sequences share, in pages of 16 (default: "
                        "--parallel x --ctx); a request waits until its prompt and max_tokens fit, and one "
                        "that never could gets 400")
    p.add_argument("--max-queue", type=int, default=256, metavar="N",
                   help="requests that may wait for a sequence slot; more get 429 (default: %(default)s)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on /v1/* and /metrics (default: no key)")
    p.add_argument("--api-key-file", default=None, metavar="PATH",
                   help="read the API key from the first line of a file (keeps it out of the process list)")
    p.add_argument("--alias", default=None, metavar="NAME",
                   help="the model's name in the API (default: --model's name, or its file or directory name)")
    p.add_argument("--web", action="store_true",
                   help="the chat page also offers to run the model in the browser (/web/): the model is "
                        "exported for it at startup into ~/.cache/webgpu-llm/exports (reused while the model "
                        "file is unchanged, as `webgpu-llm web -m` does); its files are served without the API key")
    p.add_argument("--web-plan", type=Path, default=None, metavar="DIR",
                   help="as --web, with an export made beforehand (`webgpu-llm export --out DIR`)")
    p.add_argument("--engine", choices=("process", "thread"), default="process",
                   help="where the model runs: in a process of its own, so that the HTTP work and the GPU "
                        "steps never wait for each other's Python (process), or on a thread of the server's "
                        "process (thread); embedding models always run on a thread (default: %(default)s)")
    p.add_argument("--drain-timeout", type=float, default=60.0, metavar="S",
                   help="on SIGTERM or Ctrl-C, how long running requests may take to finish before they are cut "
                        "(default: %(default)s)")
    add_common(p, json_output=False)
    p.set_defaults(run=run)


def _api_key(args: argparse.Namespace) -> str | None:
    if args.api_key is not None and args.api_key_file is not None:
        raise UserError("give --api-key or --api-key-file, not both")
    key = args.api_key
    if args.api_key_file is not None:
        try:
            key = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()[0] if Path(
                args.api_key_file).stat().st_size else ""
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"--api-key-file {args.api_key_file}: cannot be read ({e})") from None
    if key is not None and (not key.strip() or any(ch.isspace() for ch in key.strip())):
        raise UserError("the API key must be non-empty and contain no spaces")
    return key.strip() if key is not None else None


def check(args: argparse.Namespace) -> None:
    """Everything that can be checked before the model loads."""
    check_ctx(args)
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be in 0..65535")
    if args.parallel < 1:
        raise UserError(f"--parallel {args.parallel}: must be at least 1")
    if args.max_queue < 0:
        raise UserError(f"--max-queue {args.max_queue}: must be at least 0")
    if args.kv_tokens is not None and args.kv_tokens < 16:
        raise UserError(f"--kv-tokens {args.kv_tokens}: the KV cache needs at least 16 positions")
    if args.kv_tokens is not None and args.parallel < 2:
        raise UserError("--kv-tokens sets the cache that --parallel sequences share: give --parallel 2 or more")
    if not args.drain_timeout >= 0:
        raise UserError(f"--drain-timeout {args.drain_timeout}: must be at least 0")
    if args.alias is not None and not args.alias.strip():
        raise UserError("--alias: give a non-empty name")
    if args.web and args.web_plan is not None:
        raise UserError("give --web (the model exported here) or --web-plan DIR (an export), not both")
    if args.web_plan is not None:
        from ..engine.export import read_plan

        read_plan(args.web_plan / "plan.json")


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (not yet listening: connections are refused while the
    model loads)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}"
                        + (" (another server runs there: choose another --port)" if e.errno == 98 else "")) from None
    sock.set_inheritable(True)
    return sock


def _engine(args: argparse.Namespace) -> tuple[Any, Any]:
    """The model and its scheduler: a text model's engine in a child process (--engine process:
    here only its tokenizer), or loaded here with the scheduler on a thread."""
    from .. import environment
    from ..api import LLM
    from ..engine.batch import scheduler as make_scheduler
    from ..models.encoder import EncoderConfig

    if args.engine == "process":
        from ..server.engine_process import EngineProcess

        front = LLM.tokenizer_only(args.model, search=environment.model_search())
        if not isinstance(front.config, EncoderConfig):
            try:
                front.tokenizer.warm_up()
                return front, EngineProcess.start(args, max_queue=args.max_queue)
            except BaseException:
                front.close()
                raise
        front.close()
    llm = load_llm(args)
    try:
        if llm.is_embedding:  # an embedding model: POST /v1/embeddings, batched by its queue
            from ..engine.encoder import EmbedQueue

            return llm, EmbedQueue(llm.encoder, max_queue=args.max_queue)
        return llm, make_scheduler(llm.session, parallel=args.parallel, max_queue=args.max_queue,
                                   kv_tokens=args.kv_tokens, warm_up=True)
    except BaseException:
        llm.close()
        raise


def model_id(args: argparse.Namespace, llm: Any) -> tuple[str, tuple[str, ...]]:
    """The model's name in the API, and the other names that a request may give for it."""
    path = Path(llm.source.path)
    file_name = path.name if path.is_dir() else path.stem
    given = args.model if args.model and not Path(args.model).expanduser().exists() else None
    name = args.alias or given or file_name
    aliases = {n for n in (given, file_name, llm.config.name, args.model) if n} - {name}
    return name, tuple(sorted(aliases))


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..server.app import ServerConfig, create_app

    check(args)
    key = _api_key(args)
    locate(args)
    sock = bind(args.host, args.port)
    try:
        web_plan = args.web_plan
        if args.web:  # before the server's own load, so that the two uploads never hold memory at once
            from .web import export_options, exported

            web_plan = exported(export_options(args, args.ctx))
        llm, scheduler = _engine(args)
        try:
            name, aliases = model_id(args, llm)
            app = create_app(llm, scheduler, ServerConfig(model_id=name, aliases=aliases, api_key=key,
                                                          web_plan=web_plan))
            service = app.state.service
            if llm.session is not None and llm.session.tuning.gil_switch_s > 0:  # (the engine on a thread)
                sys.setswitchinterval(llm.session.tuning.gil_switch_s)
            config = uvicorn.Config(app, log_level="warning" if quiet(args) else "info",
                                    timeout_graceful_shutdown=args.drain_timeout, lifespan="on",
                                    access_log=not quiet(args), server_header=False)

            class Server(uvicorn.Server):
                def handle_exit(self, sig: int, frame: Any) -> None:
                    service.closing = True  # new requests on open connections get 503, /health too
                    super().handle_exit(sig, frame)

            host, port = sock.getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            if not quiet(args):
                what = (f"embeddings at /v1/embeddings, texts of up to {llm.ctx} tokens" if llm.is_embedding else
                        f"chat page at /, API at /v1; {args.parallel} parallel, context {scheduler.ctx} tokens each"
                        + (f", {scheduler.kv_tokens[1]} KV-cache positions shared" if args.kv_tokens else ""))
                print(f"serving {name} at http://{shown}:{port}/ ({what}{', API key required' if key else ''})",
                      file=sys.stderr, flush=True)
            # uvicorn handles SIGINT and SIGTERM while it runs, then raises the signal again
            # with the handler it found: one that ignores it makes a drained stop exit 0
            previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                Server(config).run(sockets=[sock])
            finally:
                for s, h in previous.items():
                    signal.signal(s, h)
            scheduler.close(drain=False, timeout=5.0)  # already closed by the app, unless startup failed
        finally:
            llm.close()
    finally:
        sock.close()
    return 0
