"""GPT-2 byte-level alphabet: every byte is spelled as one printable character in BPE vocabularies."""

from __future__ import annotations

from functools import cache


@cache
def byte_to_char() -> tuple[str, ...]:
    """The character that stands for each byte 0..255 (printable bytes stand for themselves)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


@cache
def _char_to_byte_table() -> dict[int, int]:
    return {ord(ch): b for b, ch in enumerate(byte_to_char())}


def byte_level_to_bytes(text: str) -> bytes | None:
    """The bytes a byte-level token spells, or None if `text` uses characters outside the alphabet."""
    # translate() maps each alphabet character to the code point of its byte; latin-1 then
    # turns those code points into the bytes themselves, all in C.
    mapped = text.translate(_char_to_byte_table())
    try:
        return mapped.encode("latin-1")
    except UnicodeEncodeError:
        return None
