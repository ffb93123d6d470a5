"""Pre-tokenizer regexes for byte-level BPE vocabularies, keyed by GGUF `tokenizer.ggml.pre`.

The names, regex lists and per-name flags follow llama.cpp (src/llama-vocab.cpp). Each
regex splits the pieces left by the previous one into matched and unmatched pieces, which is
what a `tokenizers` Split pre-tokenizer with behavior "isolated" does.

Where llama.cpp rewrote a Hugging Face regex for its own engine (case-insensitive groups
spelled out, `\\p{Lu}` replaced by look-ahead tricks that treat every non-ASCII letter as both
upper and lower case) we keep llama.cpp's spelling: it is the behaviour we must match, and
Oniguruma reads it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

from webgpu_llm.errors import ModelFileError

_CONTRACTIONS = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
# llama.cpp lists GPT-2's regex without the final "|\s+" but runs it with hand-written code
# that behaves as if it were there; the families that use it through std::regex really lack it.
_GPT2_NO_TRAILING_SPACE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_GPT2 = _GPT2_NO_TRAILING_SPACE + r"|\s+"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_QWEN35 = (
    _CONTRACTIONS
    + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PORO = r" ?[^(\s|.,!?…。，、।۔،)]+"
_UPPER = r"((?=[\p{L}])([^a-z]))"  # llama.cpp's stand-in for [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]
_LOWER = r"((?=[\p{L}])([^A-Z]))"  # ... and for [\p{Ll}\p{Lm}\p{Lo}\p{M}]
_TEKKEN = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*"
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT4O = (
    rf"[^\r\n\p{{L}}\p{{N}}]?{_UPPER}*{_LOWER}+{_CONTRACTIONS}?"
    rf"|[^\r\n\p{{L}}\p{{N}}]?{_UPPER}+{_LOWER}*{_CONTRACTIONS}?"
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK3_WORDS = (
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_DEEPSEEK_LLM_LETTERS = (
    # \u escapes where Unicode normalization would silently turn the character into another
    # one (Greek oxia forms, Ohm, Kelvin); those ranges must stay as llama.cpp has them.
    "A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝ"
    "Ὗ-\u1f7dᾀ-ᾴᾶ-ᾼ\u1fbeῂ-ῄῆ-ῌῐ-\u1fd3ῖ-\u1fdbῠ-Ῥῲ-ῴῶ-ῼ"
    "ℂℇℊ-ℓℕℙ-ℝℤ\u2126ℨ\u212a-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ"
    "𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃"
)
# llama.cpp runs regexes without \p{..} on text where every non-ASCII space is replaced by
# \v, so literal ranges such as U+0800-U+4E00 never match U+2028 or U+3000 there: "&&\S".
_CJK_RUNS = "[一-龥ࠀ-一가-퟿&&\\S]+"


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp pre-tokenizes one `tokenizer.ggml.pre` family."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a word that is a whole token skips the merges
    add_bos: bool = False  # default when the GGUF has no tokenizer.ggml.add_bos_token


def _family(
    names: str, *regexes: str, ignore_merges: bool = False, add_bos: bool = False
) -> dict[str, PreTokenizer]:
    """One PreTokenizer under each of the space-separated `names`."""
    spec = PreTokenizer(regexes, ignore_merges=ignore_merges, add_bos=add_bos)
    return dict.fromkeys(names.split(), spec)


PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **_family("default", r"[\p{P}\$\+<=>\^~\|]+", _GPT2_NO_TRAILING_SPACE, r"\p{N}+", "[0-9][0-9][0-9]"),
    **_family(
        "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2",
        _LLAMA3,
        ignore_merges=True,
        add_bos=True,
    ),
    **_family("dbrx smaug-bpe glm4 chatglm-bpe", _LLAMA3),
    **_family(
        "deepseek-llm",
        "[\r\n]",
        rf"\s?[{_DEEPSEEK_LLM_LETTERS}]+",
        r"\s?[!-/:-~！-／：-～‘-‟　-。&&\S]+",
        r"\s+\z",  # llama.cpp's `$` means end of the piece (std::regex, no multiline)
        _CJK_RUNS,
        r"\p{N}+",
    ),
    **_family("deepseek-coder", "[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK_RUNS, r"\p{N}"),
    **_family("deepseek-v3 hunyuan-dense", r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", _DEEPSEEK3_WORDS),
    **_family("falcon", r"[\p{P}\$\+<=>\^~\|`]+", _GPT2_NO_TRAILING_SPACE, "[0-9][0-9][0-9]"),
    **_family(
        "gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert jina-v1-en "
        "jina-v2-code roberta-bpe mpt olmo jais exaone4 trillion granite-docling",
        _GPT2,
    ),
    **_family("starcoder refact codeshell exaone minerva-7b mellum2 command-r smollm", r"\p{N}", _GPT2),
    **_family("qwen2 deepseek-r1-qwen kormo f2llmv2 hunyuan solar-open stablelm2 megrez grok-2", _QWEN2),
    **_family("qwen35", _QWEN35),
    **_family("poro-chat bloom gpt3-finnish", _PORO),
    **_family("viking", _PORO, r"\p{N}"),
    **_family("tekken", _TEKKEN, ignore_merges=True, add_bos=True),
    **_family(
        "chameleon",
        "<sentinel:[0-9]+>",
        "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
        "([\\t\\n]|    |  )",
        r"\p{N}",
        r"[\p{P}!-/:-@\[-`{-~]",
        _GPT2_NO_TRAILING_SPACE,
        add_bos=True,
    ),
    **_family("gpt-4o llama4 kanana2 minimax-m2", _GPT4O),
    **_family("superbpe", r"\p{N}+", "(?=([0-9]{3})+(?![0-9]))"),
    **_family(
        "bailingmoe bailingmoe2 llada-moe",
        r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
        r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    ),
    **_family(
        "seed-coder",
        _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
}


def pre_tokenizer_for(name: str) -> PreTokenizer:
    """The pre-tokenizer for a GGUF `tokenizer.ggml.pre` value ('' means llama.cpp's default)."""
    spec = PRE_TOKENIZERS.get(name or "default")
    if spec is None:
        raise ModelFileError(
            f"unknown tokenizer pre-type {name!r} (GGUF key tokenizer.ggml.pre); "
            f"use a GGUF converted with one of the {len(PRE_TOKENIZERS)} known pre-types "
            "(e.g. default, gpt-2, llama-bpe, qwen2, smollm, deepseek-llm, tekken, gpt-4o)"
        )
    return spec
