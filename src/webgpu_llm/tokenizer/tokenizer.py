"""The Tokenizer the rest of webgpu-llm uses, whatever file the vocabulary came from."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from webgpu_llm.errors import UserError
from webgpu_llm.tokenizer.chat_template import ChatTemplate


class TextEncoder(Protocol):
    def encode(self, text: str, parse_special: bool) -> list[int]:
        """Token ids for `text`, without BOS."""
        ...


class Tokenizer:
    """Text <-> token ids, plus the model's chat template.

    Decoding concatenates the bytes of each token (special tokens as their text, byte tokens
    as their byte), then reads them as UTF-8. The one space SentencePiece vocabularies put in
    front of the first word is dropped, as Hugging Face and llama-cpp-python do. No other
    clean-up is applied, so decode() equals what a StreamDecoder emits token by token.
    """

    def __init__(
        self,
        *,
        encoder: TextEncoder,
        tokens: Sequence[str],
        build_pieces: Callable[[], list[bytes]],
        hidden_ids: frozenset[int],
        strip_first_space: bool,
        bos_id: int | None,
        eos_id: int | None,
        stop_ids: frozenset[int],
        add_bos: bool,
        chat_template: str | None,
        bos_text: str = "",
        eos_text: str = "",
        end_ids: tuple[int, ...] = (),
        sep_id: int | None = None,
        named_templates: dict[str, str] | None = None,
        special_texts: dict[str, str] | None = None,
    ) -> None:
        self._encoder = encoder
        self._tokens = tokens
        self._build_pieces = build_pieces
        self._pieces: list[bytes] | None = None  # built on first decode: loading stays fast
        self._hidden = hidden_ids
        self.strip_first_space = strip_first_space
        self.vocab_size = len(tokens)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.stop_ids = stop_ids
        self.add_bos = add_bos
        self.end_ids = end_ids  # appended by encode() by default: EOS or SEP where the model adds them
        self.sep_id = sep_id
        self.chat_template = chat_template
        texts = {"bos_token": bos_text, "eos_token": eos_text, **(special_texts or {})}
        self._template = ChatTemplate(chat_template, special_tokens=texts) if chat_template else None
        # Other templates by name (e.g. "tool_use"), as tokenizer_config.json and GGUF
        # tokenizer.chat_template.<name> keep them; transformers picks "tool_use" when given tools.
        self._named = {
            name: ChatTemplate(source, special_tokens=texts)
            for name, source in (named_templates or {}).items()
        }

    def __repr__(self) -> str:
        end = f", end_ids={list(self.end_ids)}" if self.end_ids else ""
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, bos_id={self.bos_id}, eos_id={self.eos_id}, "
            f"add_bos={self.add_bos}{end}, stop_ids={sorted(self.stop_ids)})"
        )

    # -- encoding -------------------------------------------------------------------------

    def encode(
        self, text: str, add_bos: bool | None = None, parse_special: bool = True, add_eos: bool | None = None
    ) -> list[int]:
        """Token ids for `text`. Special tokens written in the text (e.g. <|im_start|>) become
        their ids when parse_special is set; BOS is prepended when add_bos (default: the
        model's add_bos) is set. add_eos appends the tokens the model ends a text with
        (`end_ids`: [SEP] for BERT, EOS where the vocabulary asks for it, none for chat
        models; True on a model without any appends EOS). Left out, add_eos follows an
        explicit add_bos, as llama.cpp's add_special covers both ends."""
        if not isinstance(text, str):
            raise UserError(f"encode() takes a str, not {type(text).__name__}")
        ids = self._encoder.encode(_valid_unicode(text), parse_special)
        if self.add_bos if add_bos is None else add_bos:
            if self.bos_id is None:
                raise UserError("this vocabulary has no BOS token; encode with add_bos=False")
            ids.insert(0, self.bos_id)
        if add_eos is None:
            add_eos = add_bos is not False and bool(self.end_ids)
        if add_eos:
            end = self.end_ids
            if not end:
                if self.eos_id is None:
                    raise UserError("this vocabulary has no EOS token; encode with add_eos=False")
                end = (self.eos_id,)
            ids.extend(end)
        return ids

    # -- decoding -------------------------------------------------------------------------

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        """The text of `ids`; control tokens (BOS, EOS, <|im_end|>, ...) are left out when
        skip_special is set. Invalid UTF-8 becomes U+FFFD."""
        out = bytearray()
        at_start = True
        for tid in ids:
            piece = self.piece(tid, skip_special)
            if at_start and piece:
                piece = self.strip_leading_space(piece)
                at_start = False
            out += piece
        return out.decode("utf-8", errors="replace")

    def piece(self, tid: int, skip_special: bool = True) -> bytes:
        """The bytes token `tid` contributes to decoded text (b'' for hidden special tokens)."""
        pieces = self._pieces if self._pieces is not None else self._load_pieces()
        if not 0 <= tid < len(pieces):
            raise UserError(f"token id {tid} is outside the vocabulary (0..{len(pieces) - 1})")
        if skip_special and tid in self._hidden:
            return b""
        return pieces[tid]

    def strip_leading_space(self, first_piece: bytes) -> bytes:
        """Drop the space SentencePiece prepends to the first word of a text."""
        if self.strip_first_space and first_piece.startswith(b" "):
            return first_piece[1:]
        return first_piece

    def token_text(self, id: int) -> str:
        """The vocabulary entry for `id` as stored (e.g. 'Ġhello', '▁hello', '<|im_end|>')."""
        if not 0 <= id < self.vocab_size:
            raise UserError(f"token id {id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self._tokens[id]

    def is_special(self, id: int) -> bool:
        """Whether decode(skip_special=True) leaves token `id` out."""
        return id in self._hidden

    def warm_up(self) -> None:
        """Build now what the first decode and the first chat would build: the pieces table
        (17 ms for SmolLM2's 49k tokens on a 2-core machine, more for larger vocabularies: in
        a server's first answer otherwise) and the chat templates' compiled Jinja (a template
        that does not compile fails where it is used)."""
        if self._pieces is None:
            self._load_pieces()
        for t in (self._template, *self._named.values()):
            if t is not None:
                t.compile()

    def _load_pieces(self) -> list[bytes]:
        self._pieces = self._build_pieces()
        return self._pieces

    # -- chat -----------------------------------------------------------------------------

    @property
    def has_chat_template(self) -> bool:
        return self._template is not None

    def apply_chat_template(
        self, messages: list[dict], add_generation_prompt: bool = True, **extra: object
    ) -> str:
        """Render `messages` with the model's chat template as transformers'
        apply_chat_template(tokenize=False) does; `extra` becomes template variables, e.g.
        tools=[{...json schema...}], enable_thinking=False, documents=[...]. With tools and a
        template named "tool_use", that one renders (transformers' choice).

        When encode() adds BOS by default, a BOS the template writes itself is removed from
        the front (as llama.cpp does), so encode(apply_chat_template(messages)) has one BOS.
        """
        template = self._template
        if extra.get("tools") is not None and "tool_use" in self._named:
            template = self._named["tool_use"]
        if template is None:
            raise UserError("this model has no chat template; give a plain prompt instead of chat messages")
        text = template.render(messages, add_generation_prompt, **extra)
        bos = template.bos_token
        if self.add_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        return text


def _valid_unicode(text: str) -> str:
    # Lone surrogates cannot cross into the Rust tokenizer; read them as invalid UTF-8.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", errors="surrogatepass").decode("utf-8", errors="replace")
    return text
