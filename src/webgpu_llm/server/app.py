"""The OpenAI-compatible HTTP API and the chat page, as a Starlette app over a `Scheduler`.

    app = create_app(llm, scheduler(llm.session, parallel=4), ServerConfig(model_id="smollm2"))

Every request is parsed into a pydantic model (`protocol.py`), rendered to token ids (the
chat template for `messages`), checked against the context, and submitted to the scheduler;
its `Completion` is read with `async for`, detokenized and cut at stop strings
(`text.TextStream`), and sent whole or as server-sent events: one event for each group of
tokens the engine hands over (today a token at a time), so that the event loop's work per
token shrinks as the engine batches its read-backs. A client
that goes away cancels its request at once (the SSE response notices the disconnect and
closes the generator; a non-streaming request watches for it). Errors are OpenAI's JSON
(`errors.py`). The server keeps nothing between requests: replicas behind any HTTP load
balancer scale it out.

An embedding model (bert, nomic-bert) is served through an `engine.encoder.EmbedQueue` instead
of a `Scheduler`: POST /v1/embeddings tokenizes the texts and queues them, and the engine
thread embeds the texts of the requests waiting at once as one batch; chat and completions
answer 400 there, as /v1/embeddings does on a text-generation model.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from sse_starlette import EventSourceResponse
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..engine.encoder import EmbedQueue
from ..engine.sampling import SamplingParams
from ..engine.scheduler import Completion, QueueFull, Scheduler, ShuttingDown
from ..engine.session import check_token_ids
from ..errors import UserError
from ..text import TextStream
from .errors import ApiError, error_body, from_validation
from .metrics import Metrics
from .protocol import ChatRequest, CompletionRequest, EmbeddingRequest, Sampling

STATIC = Path(__file__).resolve().parent / "static"
# the chat page runs only its own files: no inline script, nothing from elsewhere
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                                          "base-uri 'none'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
FINGERPRINT = f"webgpu-llm-{__version__}"
M = TypeVar("M", bound=BaseModel)


def _json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _check_ids(ids: Any, vocab: int, what: str, param: str) -> None:
    """A 400 naming the first token id outside the vocabulary (engine.session.check_token_ids)."""
    try:
        check_token_ids(ids, vocab, what)
    except UserError as e:
        raise ApiError(400, str(e), param=param) from None


def _event(text: str) -> bytes:
    """A server-sent event of one line of data, as sse-starlette frames it (sep "\n"); JSON
    has no line breaks, so the bytes are the same and the event skips its encoder."""
    return f"data: {text}\n\n".encode()


_MARK = "\x00text\x00"  # a text no token decodes to: where a chunk's text goes


def text_events(chunk: Any) -> Callable[[str], bytes] | None:
    """The event of `chunk(text, None)` for any text, made by splicing the text's JSON into
    the chunk's JSON around a placeholder (a text chunk differs from the next only there):
    one string's JSON an event instead of the whole chunk's. None where the placeholder
    does not appear once (then each chunk is rendered whole)."""
    whole = _json(chunk(_MARK, None))
    mark = _json(_MARK)[1:-1]
    if whole.count(mark) != 1:
        return None
    head, tail = whole.split(mark)
    return lambda text: _event(head + _json(text)[1:-1] + tail)


@dataclass
class ServerConfig:
    model_id: str  # the name clients give as "model" (GET /v1/models lists it)
    aliases: tuple[str, ...] = ()  # other names taken for it
    api_key: str | None = None  # None: no key needed
    max_body_bytes: int = 8 << 20
    retry_after_s: int = 1  # what a 429 or 503 tells the client to wait
    send_timeout_s: float = 60.0  # a streaming client that reads nothing for this long is dropped
    owned_by: str = "webgpu-llm"
    extra: dict[str, Any] = field(default_factory=dict)  # more facts for GET /v1/models
    # an export of the model (`webgpu-llm export`): the browser runtime at /web/ runs it in the
    # page ("run in this browser"); its files are served to anyone who reaches the server
    web_plan: Path | None = None


class EngineFailed(Exception):
    """The engine ended a request with an error (its message is the engine's)."""


@dataclass
class Job:
    """A request ready for the scheduler."""

    ids: list[int]
    params: SamplingParams
    max_tokens: int | None  # None: until the context is full
    stops: list[str]
    stop_ids: frozenset[int]
    logprobs: int | None = None  # None: none; n: each token's and its n most likely alternatives'


class Run:
    """A submitted request: its text pieces as they come, how it ended, its usage."""

    def __init__(self, service: Service, job: Job, c: Completion) -> None:
        self.service, self.job, self.c = service, job, c
        self.text = TextStream(service.tokenizer, job.ids, job.stops)
        self.finish_reason: str | None = None
        self._ended = False
        # with logprobs: (token, its logprob, alternatives) per token shown; `sent` of them streamed
        self.logprobs: list[tuple[int, float, list[tuple[int, float]]]] = []
        self.sent = 0

    async def pieces(self) -> AsyncIterator[str]:
        """The text of the tokens as the engine hands them over (one piece per group it
        delivers; empty pieces, a character still unfinished, skipped)."""
        async for ids in self.c:
            piece = ""
            for t in ids:
                piece += self.text.push(t)
                if self.job.logprobs is not None:
                    lp, top = self.c.token_logprobs[self.text.tokens - 1]
                    self.logprobs.append((t, lp, top))
                if self.text.stopped:
                    break
            if piece:
                yield piece
            if self.text.stopped:  # a stop string: the rest is not wanted
                self.c.cancel()
                self.finish_reason = "stop"
                return
        tail = self.text.finish()
        if tail:
            yield tail
        if self.c.finish_reason == "error":
            raise EngineFailed(self.c.error or "unknown error")
        self.finish_reason = self.c.finish_reason

    def new_logprobs(self) -> list[tuple[int, float, list[tuple[int, float]]]]:
        """The token logprobs not streamed yet."""
        out, self.sent = self.logprobs[self.sent:], len(self.logprobs)
        return out

    @property
    def usage(self) -> dict[str, int]:
        n, m = len(self.job.ids), self.text.tokens
        return {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m}

    def end(self, reason: str | None = None) -> None:
        """Once, when the answer is over (sent, failed or abandoned): cancel what still runs."""
        if self._ended:
            return
        self._ended = True
        self.c.cancel()
        self.service.metrics.observe(self.c, reason or self.finish_reason or "disconnected")


class Service:
    """What the routes share: the model, the scheduler, the settings, the metrics."""

    def __init__(self, llm: Any, scheduler: Scheduler | EmbedQueue, config: ServerConfig) -> None:
        self.llm, self.scheduler, self.config = llm, scheduler, config
        self.embedding = isinstance(scheduler, EmbedQueue)  # an embedding model: /v1/embeddings only
        self.tokenizer = llm.tokenizer
        self.vocab = int(llm.config.vocab)
        self.metrics = Metrics(scheduler)
        self.closing = False  # set when shutdown begins: new requests get 503
        self.created = int(time.time())
        self.names = {config.model_id, *config.aliases}

    # -- checks ----------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
            raise ApiError(401, "invalid or missing API key: send the header 'Authorization: Bearer KEY' "
                                "with the key the server was started with (--api-key)",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read(self, request: Request, model: type[M]) -> M:
        """The body as `model`: 413 past the size limit, 400 for bad JSON or fields."""
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"the request body ({declared} bytes) is larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body is larger than {limit} bytes")
        try:
            return model.model_validate_json(bytes(body))
        except ValidationError as e:
            raise from_validation(e) from None

    def generative(self, route: str) -> Scheduler:
        """The scheduler of a text-generation model; a 400 on an embedding model."""
        if isinstance(self.scheduler, EmbedQueue):
            raise ApiError(400, f"the model {self.config.model_id!r} is an embedding model: it has no {route}; "
                                "POST /v1/embeddings turns texts into vectors", param="model",
                           code="model_not_supported")
        return self.scheduler

    def check_model(self, name: str | None) -> None:
        if name is not None and name not in self.names:
            raise ApiError(404, f"the model {name!r} is not served here; this server serves "
                                f"{self.config.model_id!r} (GET /v1/models)", param="model", code="model_not_found")

    async def job(self, req: Sampling, prompt: Any, budget: int | None, budget_param: str) -> Job:
        """Render and tokenize the prompt, check it and the settings against the context."""
        bad = req.unsupported()
        if bad:
            raise ApiError(400, bad[1], param=bad[0], code="unsupported_parameter")
        self.check_model(req.model)
        token_ids = isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], int)  # (list[int]: validated)
        if token_ids:
            _check_ids(prompt, self.vocab, "prompt", "prompt")
        try:  # a long prompt takes a while to tokenize: not on the event loop (token ids: no work)
            ids = list(prompt) if token_ids else await anyio.to_thread.run_sync(self.llm.prompt_ids, prompt, True)
        except UserError as e:
            raise ApiError(400, str(e), param="messages" if isinstance(prompt, list) else "prompt") from None
        ctx = self.generative("completions").ctx
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if len(ids) >= ctx:
            raise ApiError(400, f"the prompt has {len(ids)} tokens but the context holds {ctx} (--ctx), "
                                "including the answer: shorten the prompt", code="context_length_exceeded")
        room = ctx - len(ids)
        if budget is not None and budget > room:
            raise ApiError(400, f"{budget_param} {budget}: the prompt has {len(ids)} tokens and the context "
                                f"holds {ctx} (--ctx), so at most {room} new tokens fit",
                           param=budget_param, code="context_length_exceeded")
        params = SamplingParams(temperature=req.temperature, top_k=min(req.top_k, self.vocab), top_p=req.top_p,
                                min_p=req.min_p, repeat_penalty=req.repeat_penalty,
                                repeat_last_n=req.repeat_last_n, seed=req.seed,
                                frequency_penalty=req.frequency_penalty, presence_penalty=req.presence_penalty)
        try:
            self.generative("completions").check(ids, params, budget)
        except UserError as e:
            raise ApiError(400, str(e)) from None
        stop_ids = frozenset() if req.ignore_eos else frozenset(self.tokenizer.stop_ids)
        return Job(ids, params, budget, req.stop, stop_ids, req.alternatives)

    def submit(self, job: Job) -> Run:
        if self.closing:
            raise self._unavailable()
        try:
            c = self.generative("completions").submit(job.ids, job.params, job.max_tokens, job.stop_ids,
                                                      job.logprobs)
        except ShuttingDown:
            raise self._stopped() from None
        except QueueFull as e:
            raise ApiError(429, f"the server is busy ({e}); retry in {self.config.retry_after_s} s",
                           code="queue_full", headers={"Retry-After": str(self.config.retry_after_s)}) from None
        except UserError as e:
            raise ApiError(400, str(e)) from None
        return Run(self, job, c)

    def _unavailable(self) -> ApiError:
        return ApiError(503, "the server is shutting down; retry on another replica or later",
                        code="shutting_down", headers={"Retry-After": str(self.config.retry_after_s)})

    def _stopped(self) -> ApiError:
        """The 503 for a scheduler that takes no more requests: its engine failed, or it closes."""
        failed = getattr(self.scheduler, "failed", None)
        if failed:
            return ApiError(503, f"{failed}: the server cannot generate; retry on another replica",
                            code="engine_failed")
        return self._unavailable()

    # -- answering ---------------------------------------------------------------------------
    async def answer(self, request: Request, run: Run) -> list[str]:
        """All the text of a non-streaming request; the request is cancelled if the client leaves."""

        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await request.receive())["type"] != "http.disconnect":
                pass
            gone = True
            run.c.cancel()

        watcher = asyncio.create_task(watch())
        try:
            return [p async for p in run.pieces()]
        except EngineFailed as e:
            run.end("error")
            raise ApiError(500, f"generation failed: {e}", code="engine_error") from None
        finally:
            watcher.cancel()
            run.end("disconnected" if gone else None)

    def stream(self, run: Run, chunk: Any, usage_chunk: Any, include_usage: bool) -> EventSourceResponse:
        """Server-sent events: `chunk(text, None)` per piece of text, then the finish, usage and
        [DONE]. The generator is closed when the client disconnects: the request is cancelled."""
        m = self.metrics

        # (with logprobs each chunk carries its own: rendered whole)
        fast = text_events(chunk) if run.job.logprobs is None else None

        async def events() -> AsyncIterator[str | bytes]:
            m.open_streams += 1
            try:
                first = chunk(None, None)
                if first is not None:
                    yield _json(first)
                try:
                    async for piece in run.pieces():
                        yield fast(piece) if fast is not None else _json(chunk(piece, None))
                except EngineFailed as e:
                    run.end("error")
                    yield _json(error_body(500, f"generation failed: {e}", code="engine_error"))
                    return
                yield _json(chunk(None, run.finish_reason))
                if include_usage:
                    yield _json(usage_chunk())
                yield "[DONE]"
                run.end()
            finally:
                m.open_streams -= 1
                run.end()  # not yet ended: the client left, or the send failed

        return EventSourceResponse(events(), sep="\n", send_timeout=self.config.send_timeout_s,
                                   headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- the endpoints -----------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        self.authorize(request)
        self.generative("chat completions")
        req = await self.read(request, ChatRequest)
        budget_param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        job = await self.job(req, [m.as_template() for m in req.messages], req.budget, budget_param)
        run = self.submit(job)
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": created, "model": self.config.model_id, "system_fingerprint": FINGERPRINT}
        if req.stream:
            extra = {"usage": None} if req.include_usage else {}

            def chunk(text: str | None, finish: str | None) -> dict[str, Any]:
                delta: dict[str, Any] = ({"role": "assistant", "content": ""} if text is None and finish is None
                                         else {"content": text} if text is not None else {})
                lps = self.chat_logprobs(run.new_logprobs()) if run.job.logprobs is not None and text else None
                return {**head, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": delta, "logprobs": lps, "finish_reason": finish}], **extra}

            def usage() -> dict[str, Any]:
                return {**head, "object": "chat.completion.chunk", "choices": [], "usage": run.usage}

            return self.stream(run, chunk, usage, req.include_usage)
        text = "".join(await self.answer(request, run))
        return JSONResponse({**head, "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text},
             "logprobs": self.chat_logprobs(run.logprobs) if run.job.logprobs is not None else None,
             "finish_reason": run.finish_reason}], "usage": run.usage})

    async def completions(self, request: Request) -> Response:
        self.authorize(request)
        self.generative("completions")
        req = await self.read(request, CompletionRequest)
        job = await self.job(req, req.prompt, req.budget, "max_tokens")
        run = self.submit(job)
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "object": "text_completion", "created": created, "model": self.config.model_id,
                "system_fingerprint": FINGERPRINT}
        if req.stream:
            extra = {"usage": None} if req.include_usage else {}

            def chunk(text: str | None, finish: str | None) -> dict[str, Any] | None:
                if text is None and finish is None:
                    return None  # completions have no opening role chunk
                lps = self.completion_logprobs(run.new_logprobs()) if run.job.logprobs is not None and text else None
                return {**head, "choices": [{"index": 0, "text": text or "", "logprobs": lps,
                                             "finish_reason": finish}], **extra}

            def usage() -> dict[str, Any]:
                return {**head, "choices": [], "usage": run.usage}

            return self.stream(run, chunk, usage, req.include_usage)
        text = "".join(await self.answer(request, run))
        lps = self.completion_logprobs(run.logprobs) if run.job.logprobs is not None else None
        return JSONResponse({**head, "choices": [{"index": 0, "text": text, "logprobs": lps,
                                                  "finish_reason": run.finish_reason}], "usage": run.usage})

    # -- logprobs ----------------------------------------------------------------------------
    def _token(self, t: int) -> tuple[str, list[int]]:
        raw = self.tokenizer.piece(t, skip_special=False)
        return raw.decode("utf-8", errors="replace"), list(raw)

    def chat_logprobs(self, entries: list[tuple[int, float, list[tuple[int, float]]]]) -> dict[str, Any]:
        """OpenAI's chat `logprobs`: per token its text, bytes, logprob and alternatives."""
        def one(t: int, lp: float) -> dict[str, Any]:
            s, b = self._token(t)
            return {"token": s, "logprob": lp, "bytes": b}

        return {"content": [{**one(t, lp), "top_logprobs": [one(a, alp) for a, alp in top if a < self.vocab]}
                            for t, lp, top in entries]}

    def completion_logprobs(self, entries: list[tuple[int, float, list[tuple[int, float]]]]) -> dict[str, Any]:
        """The completions API's `logprobs`: tokens, their logprobs, the alternatives, offsets."""
        tokens = [self._token(t)[0] for t, _, _ in entries]
        offsets, at = [], 0
        for s in tokens:
            offsets.append(at)
            at += len(s)
        return {"tokens": tokens, "token_logprobs": [lp for _, lp, _ in entries],
                "top_logprobs": [{self._token(a)[0]: alp for a, alp in top if a < self.vocab} for _, _, top in entries],
                "text_offset": offsets}

    # -- embeddings --------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> Response:
        """OpenAI's embeddings: a vector per input (float32 values, or their bytes in base64),
        and the tokens used."""
        self.authorize(request)
        queue = self.scheduler
        if not isinstance(queue, EmbedQueue):
            raise ApiError(400, f"the model {self.config.model_id!r} is a text-generation model, not an embedding "
                                "model: /v1/embeddings needs one (bert, nomic-bert); serve one with --model",
                           param="model", code="model_not_supported")
        req = await self.read(request, EmbeddingRequest)
        self.check_model(req.model)
        dim = int(self.llm.config.hidden)
        if req.dimensions is not None and req.dimensions != dim:
            raise ApiError(400, f"dimensions {req.dimensions}: this model's vectors have {dim} values (shortened "
                                "vectors are not supported)", param="dimensions", code="unsupported_parameter")
        texts = req.input
        if isinstance(texts[0], str):
            encode = self.tokenizer.encode
            ids = await anyio.to_thread.run_sync(lambda: [encode(t) for t in texts])
        else:
            ids = [list(t) for t in texts]
            for i, t in enumerate(ids):
                _check_ids(t, self.vocab, f"input {i}", "input")
        for i, t in enumerate(ids):
            if len(t) > queue.ctx:
                raise ApiError(400, f"input {i} has {len(t)} tokens, more than the {queue.ctx} this model takes "
                                    "(--ctx and the model's limit): shorten it", param="input",
                               code="context_length_exceeded")
        if self.closing:
            raise self._unavailable()
        try:
            future = queue.submit(ids)
        except ShuttingDown:
            raise self._stopped() from None
        except QueueFull as e:
            raise ApiError(429, f"the server is busy ({e}); retry in {self.config.retry_after_s} s",
                           code="queue_full", headers={"Retry-After": str(self.config.retry_after_s)}) from None
        except UserError as e:
            raise ApiError(400, str(e), param="input") from None
        try:
            vectors = await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as e:
            raise ApiError(500, f"embedding failed: {e}", code="engine_error") from None
        as_base64 = req.encoding_format == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if as_base64 else v.tolist()}
                for i, v in enumerate(vectors)]
        n = sum(len(t) for t in ids)
        return JSONResponse({"object": "list", "data": data, "model": self.config.model_id,
                             "usage": {"prompt_tokens": n, "total_tokens": n}})

    def model_card(self) -> dict[str, Any]:
        return {"id": self.config.model_id, "object": "model", "created": self.created,
                "owned_by": self.config.owned_by, "context_length": self.scheduler.ctx,
                "parallel": self.scheduler.parallel, **self.config.extra,
                **({"web_page": "/web/?plan=model/"} if self.config.web_plan is not None else {})}

    async def models(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def model(self, request: Request) -> Response:
        self.authorize(request)
        name = request.path_params["name"]
        if name not in self.names:
            raise ApiError(404, f"the model {name!r} is not served here; this server serves "
                                f"{self.config.model_id!r}", param="model", code="model_not_found")
        return JSONResponse(self.model_card())

    async def health(self, request: Request) -> Response:
        if self.closing:
            return JSONResponse({"status": "shutting down"}, status_code=503)
        failed = getattr(self.scheduler, "failed", None)
        if failed:
            return JSONResponse({"status": "engine failed", "error": failed}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def metrics_text(self, request: Request) -> Response:
        self.authorize(request)
        return Response(self.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)


class _Static(StaticFiles):
    async def get_response(self, path: str, scope: Any) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def create_app(llm: Any, scheduler: Scheduler | EmbedQueue, config: ServerConfig) -> Starlette:
    """The app; its lifespan's end closes the scheduler after the requests it holds finish.
    An embedding model comes with an `EmbedQueue` in place of the scheduler."""
    service = Service(llm, scheduler, config)
    # anyio imports its parts at first use: the first streaming answer imported its streams and
    # sockets (~12 ms on a 2-core machine, 19.5 -> 5.6 ms to that answer's first event), in the
    # event loop, holding the lock the engine's relay needs
    for name in dir(anyio):
        getattr(anyio, name)
    # sse-starlette would end every open stream as soon as the ASGI server is told to stop;
    # this server drains them instead (uvicorn waits for them, up to its graceful timeout)
    AppStatus.disable_automatic_graceful_drain()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async def sample() -> None:
            while True:
                service.metrics.sample()
                await asyncio.sleep(1.0)

        sampler = asyncio.create_task(sample())
        try:
            yield
        finally:
            service.closing = True
            sampler.cancel()
            await anyio.to_thread.run_sync(scheduler.close, True)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        service.metrics.refused.labels(str(exc.status)).inc()
        return exc.response()

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        service.metrics.refused.labels(str(exc.status_code)).inc()
        message = (f"no such endpoint: {request.method} {request.url.path}" if exc.status_code == 404
                   else f"{request.method} is not allowed on {request.url.path}" if exc.status_code == 405
                   else str(exc.detail))
        return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code,
                            headers=dict(exc.headers or {}))

    async def internal_error(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(500, f"internal error: {type(exc).__name__}: {exc}"), status_code=500)

    routes = [
        Route("/", service.page, methods=["GET"]),
        Route("/health", service.health, methods=["GET"]),
        Route("/metrics", service.metrics_text, methods=["GET"]),
        Route("/v1/models", service.models, methods=["GET"]),
        Route("/v1/models/{name:path}", service.model, methods=["GET"]),
        Route("/v1/chat/completions", service.chat, methods=["POST"]),
        Route("/v1/completions", service.completions, methods=["POST"]),
        Route("/v1/embeddings", service.embeddings, methods=["POST"]),
        Mount("/static", _Static(directory=STATIC), name="static"),
    ]
    if config.web_plan is not None:
        from ..web import WEB_DIR

        routes += [Mount("/web/model", _Static(directory=config.web_plan), name="web-model"),
                   Mount("/web", _Static(directory=WEB_DIR, html=True), name="web")]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: api_error, HTTPException: http_error, Exception: internal_error})
    app.state.service = service
    return app
