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


class _TemplateDict:
    """dict() for templates, without attribute access to the type (as transformers gives it)."""

    def __call__(self, *args: object, **kwargs: object) -> dict:
        return dict(*args, **kwargs)  # type: ignore[call-overload]

    def fromkeys(self, *args: object, **kwargs: object) -> dict:
        return dict.fromkeys(*args, **kwargs)  # type: ignore[call-overload]


class _TemplateNamespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, as transformers' does."""

    def __init__(*args: object, **kwargs: object) -> None:  # Jinja's signature trick: self may be a key
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)  # type: ignore[call-overload]
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)  # type: ignore[arg-type]

    def __setitem__(self, name: str, value: object) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template cannot store {name!r} on a namespace")


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


# Names a message's reasoning comes under; templates read the first (transformers' aliases).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _plain_messages(messages: list[dict]) -> list[dict]:
    """The messages as transformers hands them to the template: keys whose value is None
    dropped, and reasoning given under both `reasoning_content` and `thinking`."""
    out = []
    for message in messages:
        message = {key: value for key, value in message.items() if value is not None}
        reasoning = next((message[key] for key in _REASONING_FIELDS if key in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


class ChatTemplate:
    """One Jinja chat template, rendered as transformers' apply_chat_template(tokenize=False):
    the same environment (sandbox, trim_blocks/lstrip_blocks, tojson, raise_exception,
    strftime_now, {% generation %}), the special tokens as variables (bos_token, eos_token, ...),
    tools and documents (None unless given) and any extra keyword as a variable."""

    def __init__(
        self,
        source: str,
        bos_token: str = "",
        eos_token: str = "",
        special_tokens: dict[str, str] | None = None,
    ) -> None:
        self.source = source
        self.special_tokens = {"bos_token": bos_token, "eos_token": eos_token, **(special_tokens or {})}
        self._compiled: jinja2.Template | None = None  # compiled on first use

    @property
    def bos_token(self) -> str:
        return self.special_tokens.get("bos_token", "")

    @property
    def eos_token(self) -> str:
        return self.special_tokens.get("eos_token", "")

    def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra: object) -> str:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ModelFileError(
                "chat messages must be a list of dicts like {'role': 'user', 'content': '...'}"
            )
        variables = {**self.special_tokens, "tools": None, "documents": None, **extra}
        try:
            return self._template().render(
                messages=_plain_messages(messages), add_generation_prompt=add_generation_prompt, **variables
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

    def compile(self) -> None:
        """Compile the template now (it compiles on first use); a broken one is left to fail there."""
        try:
            self._template()
        except ModelFileError:
            pass

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
