"""Jinja chat templates rendered with Hugging Face transformers' environment and helpers."""

from __future__ import annotations

import json
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from webgpu_llm.errors import ModelFileError


class TemplateRaised(jinja2.TemplateError):
    """raise_exception() called by the template: it refuses the messages."""


def _raise_exception(message: str) -> None:
    raise TemplateRaised(message)


def _tojson(
    x: object,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple | None = None,
    sort_keys: bool = False,
) -> str:
    # transformers' filter: unlike Jinja's own, it does not HTML-escape and keeps non-ASCII.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: transformers marks assistant text with it; the
    rendered text is just the body."""

    tags = frozenset({"generation"})

    def parse(self, parser: jinja2.parser.Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: jinja2.runtime.Macro) -> str:
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = "") -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self._compiled: jinja2.Template | None = None  # compiled on first use

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra: object) -> str:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ModelFileError(
                "chat messages must be a list of dicts like {'role': 'user', 'content': '...'}"
            )
        variables = {"bos_token": self.bos_token, "eos_token": self.eos_token, **extra}
        try:
            return self._template().render(
                messages=messages, add_generation_prompt=add_generation_prompt, **variables
            )
        except TemplateRaised as e:
            raise ModelFileError(f"the chat template refused these messages: {_one_line(e)}") from None
        except ModelFileError:
            raise
        except Exception as e:
            raise ModelFileError(
                f"the model's chat template failed on these messages ({type(e).__name__}: {_one_line(e)}); "
                "check the message roles and contents"
            ) from None

    def _template(self) -> jinja2.Template:
        if self._compiled is None:
            try:
                self._compiled = _environment().from_string(self.source)
            except jinja2.TemplateSyntaxError as e:
                raise ModelFileError(
                    f"the model's chat template is not valid Jinja ({_one_line(e)}, line {e.lineno}); "
                    "use a model file with a working template or give a plain prompt"
                ) from None
        return self._compiled


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
