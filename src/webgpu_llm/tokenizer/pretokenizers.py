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
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
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
_STARCODER = (r"\p{N}", _GPT2)
# llama.cpp runs regexes without \p{..} on text where every non-ASCII space is replaced by
# \v, so literal ranges such as U+0800-U+4E00 never match U+2028 or U+3000 there: "&&\S".
_CJK_RUNS = "[一-龥ࠀ-一가-퟿&&\\S]+"


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp pre-tokenizes and detokenizes one `tokenizer.ggml.pre` family."""

    regexes: tuple[str, ...]
    clean_spaces: bool = True  # llama.cpp's clean_up_tokenization_spaces default for BPE
    ignore_merges: bool = False  # a word that is a whole token skips the merges
    add_bos: bool = False  # default when the GGUF has no tokenizer.ggml.add_bos_token
    no_bos: bool = False  # the family has no BOS token at all


_DEFAULT = PreTokenizer(
    (
        r"[\p{P}\$\+<=>\^~\|]+",
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        r"\p{N}+",
        "[0-9][0-9][0-9]",
    )
)
_GPT2_FAMILY = PreTokenizer((_GPT2,))
_LLAMA3_FAMILY = PreTokenizer((_LLAMA3,), ignore_merges=True, add_bos=True)
_QWEN2_FAMILY = PreTokenizer((_QWEN2,), clean_spaces=False)
_GPT4O_FAMILY = PreTokenizer((_GPT4O,), clean_spaces=False)

PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": _DEFAULT,
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"),
        _LLAMA3_FAMILY,
    ),
    "dbrx": PreTokenizer((_LLAMA3,)),
    "smaug-bpe": PreTokenizer((_LLAMA3,)),
    "glm4": PreTokenizer((_LLAMA3,), no_bos=True),
    "chatglm-bpe": PreTokenizer((_LLAMA3,), no_bos=True),
    "deepseek-llm": PreTokenizer(
        (
            "[\r\n]",
            rf"\s?[{_DEEPSEEK_LLM_LETTERS}]+",
            r"\s?[!-/:-~！-／：-～‘-‟　-。&&\S]+",
            r"\s+\z",  # llama.cpp's `$` means end of the piece (std::regex, no multiline)
            _CJK_RUNS,
            r"\p{N}+",
        ),
        clean_spaces=False,
    ),
    "deepseek-coder": PreTokenizer(
        ("[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", _CJK_RUNS, r"\p{N}"),
        clean_spaces=False,
    ),
    "deepseek-v3": PreTokenizer((r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", _DEEPSEEK3_WORDS), clean_spaces=False),
    "hunyuan-dense": PreTokenizer((r"\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+", _DEEPSEEK3_WORDS), clean_spaces=False),
    "falcon": PreTokenizer(
        (
            r"[\p{P}\$\+<=>\^~\|`]+",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
            "[0-9][0-9][0-9]",
        )
    ),
    **dict.fromkeys(
        (
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "mpt",
            "olmo",
            "jais",
            "exaone4",
        ),
        _GPT2_FAMILY,
    ),
    "trillion": PreTokenizer((_GPT2,), clean_spaces=False),
    "granite-docling": PreTokenizer((_GPT2,), clean_spaces=False),
    **dict.fromkeys(
        ("starcoder", "refact", "codeshell", "exaone", "minerva-7b", "mellum2"), PreTokenizer(_STARCODER)
    ),
    "command-r": PreTokenizer(_STARCODER, clean_spaces=False),
    "smollm": PreTokenizer(_STARCODER, clean_spaces=False),
    **dict.fromkeys(
        ("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "hunyuan", "solar-open"), _QWEN2_FAMILY
    ),
    "qwen35": PreTokenizer((_QWEN35,), clean_spaces=False),
    "stablelm2": PreTokenizer((_QWEN2,)),
    "megrez": PreTokenizer((_QWEN2,)),
    "poro-chat": PreTokenizer((_PORO,), clean_spaces=False),
    "bloom": PreTokenizer((_PORO,)),
    "gpt3-finnish": PreTokenizer((_PORO,)),
    "viking": PreTokenizer((_PORO, r"\p{N}"), clean_spaces=False),
    "tekken": PreTokenizer((_TEKKEN,), clean_spaces=False, ignore_merges=True, add_bos=True),
    "chameleon": PreTokenizer(
        (
            "<sentinel:[0-9]+>",
            "(IMGIMG)((A|B|C|D|E|F|G|H|I){1,4})Z",
            "([\\t\\n]|    |  )",
            r"\p{N}",
            r"[\p{P}!-/:-@\[-`{-~]",
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
        ),
        clean_spaces=False,
        add_bos=True,
    ),
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "minimax-m2"), _GPT4O_FAMILY),
    "superbpe": PreTokenizer((r"\p{N}+", "(?=([0-9]{3})+(?![0-9]))"), clean_spaces=False),
    **dict.fromkeys(
        ("bailingmoe", "bailingmoe2", "llada-moe"),
        PreTokenizer(
            (
                "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}"
                "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
            ),
            clean_spaces=False,
        ),
    ),
    "seed-coder": PreTokenizer(
        (
            _CONTRACTIONS
            + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+",
        ),
        clean_spaces=False,
    ),
    "grok-2": PreTokenizer((_QWEN2,), clean_spaces=False),
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
