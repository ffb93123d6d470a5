"""The request bodies of the OpenAI API that this server takes, as pydantic models.

Types are strict (a string where a number belongs is a 400, not a guess), floats finite,
unknown fields ignored (clients send many optional ones); fields whose value this server
cannot honour yet are refused with a message that says so (`unsupported`). Sampling
defaults are llama.cpp's (`llama-server`): temperature 0.8, top_k 40, top_p 0.95, min_p 0.05.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_MAX_FLOAT = 3.0e38  # what a float32 of the GPU's sampling state holds
_MAX_INT = 2**31 - 1


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class StreamOptions(_Strict):
    include_usage: bool = False


class Sampling(_Strict):
    """What both endpoints take: sampling, budget, stops."""

    model: str | None = None  # None: the one model served
    max_tokens: int | None = Field(default=None, ge=1, le=_MAX_INT)  # None: until the context is full
    temperature: float = Field(default=0.8, ge=0.0, le=_MAX_FLOAT)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0, le=_MAX_INT)
    min_p: float = Field(default=0.05, ge=0.0, lt=1.0)
    repeat_penalty: float = Field(default=1.0, gt=0.0, le=_MAX_FLOAT)
    repeat_last_n: int = Field(default=64, ge=0, le=256)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1)
    ignore_eos: bool = False  # llama.cpp's and vLLM's extension: generate max_tokens whatever comes
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _stop(cls, v: Any) -> list[str]:
        if v is None:
            return []
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ValueError("must be a string or a list of strings")
        if any(s == "" for s in v):
            raise ValueError("an empty stop string would stop at once")
        if len(v) > 16:
            raise ValueError(f"{len(v)} stop strings: at most 16")
        return v

    def unsupported(self) -> tuple[str, str] | None:
        """(param, message) for a value this server cannot honour yet, else None."""
        if self.n != 1:
            return "n", f"n={self.n}: this server generates one choice per request (n=1); send n requests instead"
        if self.logit_bias:
            return "logit_bias", "logit_bias is not supported by this server yet"
        return None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | None = None
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, v: Any) -> str | None:
        """A string, or a list of content parts of which this server takes the text ones."""
        if v is None or isinstance(v, str):
            return v
        if not isinstance(v, list):
            raise ValueError("must be a string or a list of content parts")
        texts = []
        for part in v:
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise ValueError('each content part must be an object like {"type": "text", "text": "..."}')
            if part["type"] != "text":
                raise ValueError(f"content parts of type {part['type']!r} are not supported: this server takes text")
            if not isinstance(part.get("text"), str):
                raise ValueError('a text content part needs "text": a string')
            texts.append(part["text"])
        return "".join(texts)

    def as_template(self) -> dict[str, str]:
        # "developer" is the newer name of the system role; chat templates know "system"
        return {"role": "system" if self.role == "developer" else self.role, "content": self.content or ""}


class ChatRequest(Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=_MAX_INT)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None

    def unsupported(self) -> tuple[str, str] | None:
        if self.top_logprobs is not None and not self.logprobs:
            return "top_logprobs", "top_logprobs needs logprobs: true"
        if self.tools:
            return "tools", "tools (function calling) are not supported by this server yet"
        if self.tool_choice not in (None, "none", "auto"):
            return "tool_choice", "tool_choice is not supported by this server yet"
        if self.response_format and self.response_format.get("type", "text") != "text":
            return "response_format", "response_format other than text is not supported by this server yet"
        return super().unsupported()

    @property
    def budget(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def alternatives(self) -> int | None:
        """Alternatives each token's logprob comes with (None: no logprobs)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(Sampling):
    prompt: str | list[int]
    max_tokens: int | None = Field(default=16, ge=1, le=_MAX_INT)  # the OpenAI default for completions
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt(cls, v: Any) -> str | list[int]:
        """A string or a list of token ids; a batch of one (a list of one string or one id list)
        is that prompt; larger batches are refused."""
        if isinstance(v, list) and len(v) == 1 and isinstance(v[0], (str, list)):
            v = v[0]
        if isinstance(v, str):
            return v
        if isinstance(v, list) and v and all(isinstance(t, list) or isinstance(t, str) for t in v):
            raise ValueError(f"a batch of {len(v)} prompts: this server takes one prompt per request")
        if not isinstance(v, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            raise ValueError("must be a string or a list of token ids")
        return v

    @property
    def alternatives(self) -> int | None:
        return self.logprobs

    def unsupported(self) -> tuple[str, str] | None:
        if self.echo:
            return "echo", "echo is not supported by this server yet"
        if self.best_of not in (None, 1):
            return "best_of", "best_of is not supported by this server (one choice per request)"
        if self.suffix:
            return "suffix", "suffix (fill-in-the-middle) is not supported by this server yet"
        return super().unsupported()

    @property
    def budget(self) -> int | None:
        return self.max_tokens


MAX_EMBED_INPUTS = 2048  # OpenAI's limit on the texts of one embeddings request


class EmbeddingRequest(_Strict):
    """POST /v1/embeddings: `input` is a text, a list of texts, a list of token ids (one
    text) or a list of such lists; it is kept as a list of texts or of token id lists."""

    input: list[str] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _input(cls, v: Any) -> list[str] | list[list[int]]:
        def ids(t: Any) -> bool:
            return isinstance(t, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in t)

        if isinstance(v, str):
            v = [v]
        elif ids(v) and v:
            v = [v]  # one text's token ids
        if not isinstance(v, list) or not v or not (all(isinstance(t, str) for t in v) or all(ids(t) for t in v)):
            raise ValueError("must be a text, a list of texts, a list of token ids or a list of lists of token ids")
        if len(v) > MAX_EMBED_INPUTS:
            raise ValueError(f"{len(v)} inputs: at most {MAX_EMBED_INPUTS} a request")
        empty = next((i for i, t in enumerate(v) if not t), None)
        if empty is not None:
            raise ValueError(f"input {empty} is empty")
        return v
