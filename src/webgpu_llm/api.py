"""The Python API: load a model, generate (streaming or whole), chat, score, get logits.

    import webgpu_llm as wl
    llm = wl.load()                       # the bundled SmolLM2-135M-Instruct
    print(llm.generate_text("Why is the sky blue?", max_tokens=64))
    for piece in llm.generate("Tell me a story", temperature=0.8, seed=1):
        print(piece, end="", flush=True)
    logits = llm.logits(llm.tokenizer.encode("Hello"))   # numpy (tokens, vocab)
    llm = wl.load("model.gguf", settings=wl.Settings(ctx=8192, gpu=wl.GpuOptions(backend="dawn")))
    emb = wl.load("all-MiniLM-L6-v2/").embed(["a text", "another"])  # an embedding model: (2, 384)
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .engine import GenStats, SamplingParams, Session, Settings
from .engine.batch import scheduler as make_scheduler
from .engine.encoder import EmbedStats, Encoder
from .engine.scheduler import Scheduler
from .errors import UserError
from .kernels.common import PAGE
from .models.discovery import ModelSearch
from .models.encoder import EncoderConfig
from .models.source import ModelSource, open_model
from .runtime.gpu import Gpu, open_gpu
from .text import StopStrings, TextStream


def _progress_bar(total: int, enabled: bool) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="uploading weights",
               file=sys.stderr, leave=False, disable=not sys.stderr.isatty())
    return bar.update, bar.close


def _warm_up(session: Session, enabled: bool) -> None:
    """Compile every kernel now, with a progress bar where that takes a while (the first run
    on a machine; the driver caches them for the next)."""
    from tqdm import tqdm

    bar = tqdm(desc="compiling kernels (first run on this machine; cached after)", unit=" kernels",
               file=sys.stderr, leave=False, delay=1.0, disable=not (enabled and sys.stderr.isatty()))

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        session.warm_up(update)
    finally:
        bar.close()


_UNSET: Any = object()


@dataclass
class LLM:
    """A loaded model: a text-generation model (`session`: generate, chat, logits, ...) or an
    embedding model (`encoder`: embed); the other's methods raise a UserError that says so."""

    source: ModelSource
    gpu: Gpu | None  # None: opened without one (tokenizer_only)
    session: Session | None
    tokenizer: Any
    settings: Settings = field(default_factory=Settings)
    _scheduler: Scheduler | None = field(default=None, repr=False)
    encoder: Encoder | None = None

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, model: str | Path | None = None, *, settings: Settings | None = None, backend: str = _UNSET,
             adapter: str | None = _UNSET, ctx: int | None = _UNSET, batch: int = _UNSET, fused: bool = _UNSET,
             progress: bool = True, gpu: Gpu | None = None, search: ModelSearch | None = None,
             warm_up: bool = True) -> LLM:
        """Load a model file or directory, or a model already on the machine by name: a
        Hugging Face hub id (`"HuggingFaceTB/SmolLM2-135M-Instruct"`, `"ORG/NAME:Q4_K_M"`)
        from the local hub cache or an Ollama name (`"smollm2:135m"`) from Ollama's store;
        `search` says where to look (default: where the environment says, see
        `environment.model_search`). `settings` holds every knob (the defaults where None);
        `backend`, `adapter`, `ctx`, `batch` and `fused`, where given, override it.
        `gpu`: an already open device to use. `warm_up` compiles every kernel at load (where
        the driver compiles at first use, the first prompt would wait for it instead)."""
        s = settings or Settings()
        gpu_over = {k: v for k, v in (("backend", backend), ("adapter", adapter)) if v is not _UNSET}
        if gpu_over:
            s = replace(s, gpu=replace(s.gpu, **gpu_over))
        s = replace(s, **{k: v for k, v in (("ctx", ctx), ("batch", batch), ("fused", fused)) if v is not _UNSET})
        if search is None and isinstance(model, str):
            from . import environment

            search = environment.model_search()
        src = open_model(model, search)
        cfg = src.config
        try:
            tok = src.tokenizer()
            g = gpu or open_gpu(options=s.gpu)
            most = cfg.max_tokens if isinstance(cfg, EncoderConfig) else cfg.max_ctx
            n_ctx = min(s.ctx or most, most)
            if n_ctx < 2:
                raise UserError(f"--ctx {s.ctx}: must be at least 2")
            total = sum(int(getattr(t, "nbytes", 0)) for t in src.tensors.values())
            update, close = _progress_bar(total, progress)
            session, encoder = None, None
            try:
                if isinstance(cfg, EncoderConfig):  # an embedding model: texts per ctx tokens at most
                    encoder = Encoder.build(g, cfg, src.tensors.get, s, n_ctx, progress=update)
                else:
                    session = Session.build(g, cfg, src.tensors.get, s, n_ctx, progress=update)
            finally:
                close()
            if warm_up and session is not None:
                _warm_up(session, progress)
            elif warm_up and encoder is not None:
                encoder.warm_up()
            if warm_up:
                tok.warm_up()
        except BaseException:
            src.close()
            raise
        return cls(src, g, session, tok, s, encoder=encoder)

    @classmethod
    def tokenizer_only(cls, model: str | Path | None = None, *, search: ModelSearch | None = None) -> LLM:
        """A model's configuration and tokenizer (its chat template too) without a GPU: for a
        front end whose model runs elsewhere (`webgpu-llm serve`'s engine process). Its
        prompt_ids and tokenizer work; generating or embedding is an error."""
        if search is None and isinstance(model, str):
            from . import environment

            search = environment.model_search()
        src = open_model(model, search)
        try:
            return cls(src, None, None, src.tokenizer())
        except BaseException:
            src.close()
            raise

    @property
    def config(self) -> Any:
        return self.source.config

    @property
    def is_embedding(self) -> bool:
        """An embedding model (embed), not a text-generation one (generate, chat, ...)."""
        return self.encoder is not None

    @property
    def ctx(self) -> int:
        """Context tokens of a sequence; an embedding model's: tokens a text may have."""
        if self.encoder is not None:
            return self.encoder.max_tokens
        return self._generator("").ctx

    @property
    def stats(self) -> GenStats:
        return self._generator("generate text").stats

    @property
    def embed_stats(self) -> EmbedStats:
        return self._embedder().stats

    def _generator(self, what: str) -> Session:
        """The session of a text-generation model; a UserError for an embedding model."""
        if self.session is None:
            cfg = self.config
            if self.gpu is None:
                raise UserError(f"{cfg.name} was opened without a GPU (LLM.tokenizer_only): load it with "
                                f"LLM.load to {what}")
            raise UserError(f"{cfg.name} is an embedding model ({cfg.arch}): it cannot {what}; it turns texts "
                            "into vectors (LLM.embed, `webgpu-llm embed`, POST /v1/embeddings)")
        return self.session

    def _embedder(self) -> Encoder:
        if self.encoder is None:
            cfg = self.config
            raise UserError(f"{cfg.name} is a text-generation model ({cfg.arch}), not an embedding model: "
                            "embeddings need one (architectures bert, nomic-bert)")
        return self.encoder

    # -- embeddings ------------------------------------------------------------------------
    def embed(self, texts: Sequence[str], truncate: bool = False) -> np.ndarray:
        """A vector per text, float32 (len(texts), dim), pooled and normalized as the model
        says (sentence-transformers' config, or the GGUF metadata), all texts in one batch on
        the GPU. A text longer than the model takes (`ctx`, with [CLS] and [SEP]) is an error,
        or with `truncate` cut to its first tokens."""
        if isinstance(texts, str):
            raise UserError("embed() takes a list of texts; for one text, embed([text])")
        enc = self._embedder()
        return enc.embed([self.embed_ids(t, truncate, i) for i, t in enumerate(texts)])

    def embed_tokens(self, ids: Sequence[Sequence[int]], truncate: bool = False) -> np.ndarray:
        """`embed` for texts given as token ids (used as given: no [CLS]/[SEP] added)."""
        enc = self._embedder()
        out = [[int(x) for x in t] for t in ids]
        return enc.embed([t[: enc.max_tokens] for t in out] if truncate else out)

    def embed_ids(self, text: str, truncate: bool = False, index: int = 0) -> list[int]:
        """The token ids `embed` runs for `text` (framed as the model's tokenizer frames it:
        [CLS] ... [SEP] for BERT); `index` names the text in an error."""
        if not isinstance(text, str):
            raise UserError(f"text {index}: a str, not {type(text).__name__}")
        most = self._embedder().max_tokens
        tok = self.tokenizer
        ids = tok.encode(text)
        if len(ids) <= most:
            return ids
        if not truncate:
            raise UserError(f"text {index} has {len(ids)} tokens, more than the {most} this model takes "
                            "(--ctx and the model's limit): shorten it, or truncate (--truncate)")
        head = [tok.bos_id] if tok.add_bos and tok.bos_id is not None else []
        tail = list(tok.end_ids)
        return head + tok.encode(text, add_bos=False, add_eos=False)[: most - len(head) - len(tail)] + tail

    # -- prompts ---------------------------------------------------------------------------
    def prompt_ids(self, prompt: str | Sequence[int] | list[dict[str, str]], raw: bool = False,
                   **template_kwargs: Any) -> list[int]:
        """Token ids for a prompt: ids as given, a chat turn (when the model has a chat
        template and `raw` is false), or the text as-is. `template_kwargs` go to the chat
        template (e.g. `enable_thinking=False`, `tools=[...]`)."""
        if isinstance(prompt, str):
            if not raw and self.tokenizer.has_chat_template:
                prompt = [{"role": "user", "content": prompt}]
            else:
                return self.tokenizer.encode(prompt)
        if prompt and isinstance(prompt[0], dict):
            text = self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, **template_kwargs)
            return self.tokenizer.encode(text, add_bos=self.tokenizer.add_bos and not _starts_with_bos(text, self.tokenizer))
        return [int(t) for t in prompt]  # type: ignore[union-attr]

    def _fit(self, ids: list[int], truncate: bool, max_tokens: int = 1) -> list[int]:
        """The prompt as it goes in. Too long for the context: an error, or with `truncate`
        its end, cut so that `max_tokens` still fit after it (len + max_tokens <= ctx) where
        the context allows, keeping at least one token."""
        if truncate:
            keep = max(1, min(self.ctx - 1, self.ctx - max_tokens))
            return ids[-keep:] if len(ids) > keep else ids
        if len(ids) > self.ctx - 1:
            raise UserError(f"the prompt has {len(ids)} tokens but the context holds {self.ctx}: "
                            "use a larger --ctx, a shorter prompt, or --truncate to keep its end")
        return ids

    # -- generation ------------------------------------------------------------------------
    def generate_ids(self, ids: list[int], max_tokens: int = 256, params: SamplingParams | None = None,
                     start: int = 0, stop_ids: frozenset[int] | None = None) -> Iterator[int]:
        """New token ids, ending at a stop token (not yielded) or after max_tokens."""
        stops = self.tokenizer.stop_ids if stop_ids is None else stop_ids
        for tok in self._generator("generate text").stream(ids, start, params or SamplingParams(), max_tokens):
            if tok in stops:
                return
            yield tok

    def generate(self, prompt: str | Sequence[int] | list[dict[str, str]], *, max_tokens: int = 256,
                 temperature: float = 0.0, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                 repeat_penalty: float = 1.0, seed: int | None = None, stop: Sequence[str] = (),
                 raw: bool = False, truncate: bool = False) -> Iterator[str]:
        """Stream the answer as text pieces."""
        from .tokenizer import StreamDecoder

        ids, params = self._request(prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed,
                                    raw, truncate)
        dec = StreamDecoder(self.tokenizer, ids)
        yield from _stop_strings(
            (dec.push(t) for t in self.generate_ids(ids, max_tokens, params)), list(stop), dec.flush)

    def generate_text(self, prompt: str | Sequence[int] | list[dict[str, str]], **kw: Any) -> str:
        return "".join(self.generate(prompt, **kw))

    # -- many requests at once -------------------------------------------------------------
    def scheduler(self, parallel: int = 4, max_queue: int = 256, kv_tokens: int | None = None) -> Scheduler:
        """The engine thread that serves concurrent requests, `parallel` sequences decoded
        together sharing `kv_tokens` KV-cache positions (default: `parallel` x the context; one
        sequence has its own context's); made on first use, and anew when asked for other settings."""
        if (self._scheduler is None or self._scheduler.parallel != parallel
                or (kv_tokens is not None and parallel > 1
                    and self._scheduler.kv_tokens[1] != -(-kv_tokens // PAGE) * PAGE)):
            if self._scheduler is not None:
                self._scheduler.close()
            self._scheduler = make_scheduler(self._generator("generate text"), parallel, max_queue,
                                             kv_tokens=kv_tokens)
        return self._scheduler

    def _request(self, prompt: str | Sequence[int] | list[dict[str, str]], max_tokens: int, temperature: float,
                 top_k: int, top_p: float, min_p: float, repeat_penalty: float, seed: int | None,
                 raw: bool, truncate: bool) -> tuple[list[int], SamplingParams]:
        self._generator("generate text")
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, seed=seed)
        params.check()
        if max_tokens < 1:
            raise UserError(f"--max-tokens {max_tokens}: must be at least 1")
        return self._fit(self.prompt_ids(prompt, raw), truncate, max_tokens), params

    def generate_batch(self, prompts: Sequence[str | Sequence[int] | list[dict[str, str]]], *, max_tokens: int = 256,
                       temperature: float = 0.0, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                       repeat_penalty: float = 1.0, seed: int | None = None, stop: Sequence[str] = (),
                       raw: bool = False, truncate: bool = False, parallel: int = 4) -> list[str]:
        """Answer several prompts together (continuous batching, `parallel` at a time), in order.
        A `seed` gives request i the seed `seed + i`."""
        reqs = [self._request(p, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty,
                              None if seed is None else seed + i, raw, truncate) for i, p in enumerate(prompts)]
        sched = self.scheduler(parallel)
        runs = [(sched.submit(ids, params, max_tokens, self.tokenizer.stop_ids), TextStream(self.tokenizer, ids, stop))
                for ids, params in reqs]
        out = []
        for c, ts in runs:
            text = ""
            for group in c:
                for t in group:
                    text += ts.push(t)
                if ts.stopped:
                    c.cancel()
                    break
            out.append(text + ts.finish())
        return out

    async def agenerate(self, prompt: str | Sequence[int] | list[dict[str, str]], *, max_tokens: int = 256,
                        temperature: float = 0.0, top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05,
                        repeat_penalty: float = 1.0, seed: int | None = None, stop: Sequence[str] = (),
                        raw: bool = False, truncate: bool = False, parallel: int = 4) -> AsyncIterator[str]:
        """Stream an answer's text from asyncio; calls running at once share each step of
        the engine (`parallel` sequences decoded together)."""
        ids, params = self._request(prompt, max_tokens, temperature, top_k, top_p, min_p, repeat_penalty, seed,
                                    raw, truncate)
        c = self.scheduler(parallel).submit(ids, params, max_tokens, self.tokenizer.stop_ids)
        ts = TextStream(self.tokenizer, ids, stop)
        try:
            async for group in c:
                piece = "".join(ts.push(t) for t in group)
                if piece:
                    yield piece
                if ts.stopped:
                    return
            tail = ts.finish()
            if tail:
                yield tail
        finally:
            c.cancel()  # a stop string, an error or the caller leaving: free the sequence

    def chat_session(self, system: str | None = None) -> ChatSession:
        self._generator("chat")
        return ChatSession(self, [{"role": "system", "content": system}] if system else [])

    # -- scoring ---------------------------------------------------------------------------
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits (len(ids), vocab) of a token sequence, from an empty cache."""
        return self._generator("give logits").logits([int(t) for t in ids])

    def nll(self, ids: Sequence[int]) -> np.ndarray:
        """Negative log-likelihood of ids[1:] given the prefix, from an empty cache (float64)."""
        return self._generator("score text").nll([int(t) for t in ids])

    def perplexity(self, ids: Sequence[int], ctx: int = 512,
                   progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Non-overlapping chunks of `ctx` tokens, each from an empty cache; the NLL averaged
        over every predicted position (2nd..last token of each chunk)."""
        self._generator("score text")
        ids = [int(t) for t in ids]
        if ctx < 2:
            raise UserError(f"--ctx {ctx}: perplexity needs at least 2 tokens per chunk")
        if ctx > self.ctx:
            raise UserError(f"--ctx {ctx} exceeds the model context loaded ({self.ctx})")
        if len(ids) < 2:
            raise UserError("the text has fewer than 2 tokens: nothing to score")
        chunks, total, count = [], 0.0, 0
        t = time.perf_counter()
        starts = range(0, len(ids), ctx)
        for i, c0 in enumerate(starts):
            chunk = ids[c0:c0 + ctx]
            if len(chunk) < 2:
                continue
            nll = self.nll(chunk)
            chunks.append(float(np.exp(nll.mean())))
            total += float(nll.sum())
            count += len(nll)
            if progress:
                progress(i + 1, len(starts))
        return {"ppl": float(np.exp(total / count)), "tokens": len(ids), "predicted": count,
                "ctx": ctx, "chunks": chunks, "seconds": time.perf_counter() - t}

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close(drain=False)
        self.source.close()


def _starts_with_bos(text: str, tok: Any) -> bool:
    bos = tok.token_text(tok.bos_id) if tok.bos_id is not None else None
    return bool(bos) and text.startswith(bos)


def _stop_strings(pieces: Iterator[str], stops: list[str], flush: Callable[[], str]) -> Iterator[str]:
    """Pass text through until a stop string appears; hold back a tail that could start one."""
    if any(not s for s in stops):
        raise UserError("an empty stop string would stop at once: give --stop some text")
    cut = StopStrings(stops)
    for p in pieces:
        out = cut.push(p)
        if out:
            yield out
        if cut.stopped:
            pieces.close()  # type: ignore[attr-defined]
            return
    tail = cut.push(flush()) + cut.flush()
    if tail:
        yield tail


@dataclass
class ChatSession:
    """A conversation that keeps its KV cache: each turn prefills only the new tokens."""

    llm: LLM
    messages: list[dict[str, str]]
    cached: list[int] = field(default_factory=list)  # ids whose K/V are in the cache

    def send(self, text: str, max_tokens: int = 512, **kw: Any) -> Iterator[str]:
        """Stream the answer to `text`. Stopping early (closing the iterator, or Ctrl-C while
        it runs) keeps the conversation: the part answered so far becomes the assistant's
        turn; a turn stopped before its first token is dropped. `cached` always lists only
        tokens whose K/V are in the cache."""
        from .tokenizer import StreamDecoder

        llm = self.llm
        stop = list(kw.pop("stop", ()))
        params = SamplingParams(**kw)
        params.check()
        if max_tokens < 1:
            raise UserError(f"--max-tokens {max_tokens}: must be at least 1")
        self.messages.append({"role": "user", "content": text})
        ids = llm.prompt_ids(self.messages)
        if len(ids) >= llm.ctx:
            self.messages.pop()
            raise UserError(f"the conversation has {len(ids)} tokens, the context holds {llm.ctx}: "
                            "start a new chat (/reset) or use a larger --ctx")
        common = 0
        for a, b in zip(self.cached, ids):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)
        dec = StreamDecoder(llm.tokenizer, ids)
        out_ids: list[int] = []
        reply: list[str] = []
        finished = False

        def pieces() -> Iterator[str]:
            for t in llm.generate_ids(ids[common:], max_tokens, params, start=common):
                out_ids.append(t)
                yield dec.push(t)

        answer = _stop_strings(pieces(), stop, dec.flush)
        try:
            for piece in answer:
                reply.append(piece)
                yield piece
            finished = True
        finally:
            answer.close()  # the engine's stream ends here: its queued steps land, then nothing runs
            if finished or out_ids:
                # the prompt went through (a token came out of it): its K/V and those of every
                # token but the last generated are in the cache
                self.cached = ids + out_ids[:-1]
                self.messages.append({"role": "assistant", "content": "".join(reply)})
            else:  # stopped during the prompt: only the part kept from the last turn is sure
                self.cached = ids[:common]
                self.messages.pop()

    def reset(self) -> None:
        self.messages = [m for m in self.messages if m["role"] == "system"]
        self.cached = []


def load(model: str | Path | None = None, **kw: Any) -> LLM:
    """Load a GGUF file or a Hugging Face directory (default: the bundled SmolLM2)."""
    return LLM.load(model, **kw)
