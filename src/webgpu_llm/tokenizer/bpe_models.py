"""Build `tokenizers` models that reproduce llama.cpp's two GGUF tokenizers.

- byte-level BPE (`tokenizer.ggml.model == "gpt2"`): the GGUF merges ranked by position,
  pre-tokenized by the regex list of `tokenizer.ggml.pre`.
- SentencePiece BPE (`tokenizer.ggml.model == "llama"`): llama.cpp repeatedly joins the
  adjacent pair whose concatenation is the highest-scoring vocabulary entry. A BPE model
  whose merges are every split of every token into two tokens, ranked by the joined token's
  score, makes the same choices; unknown characters fall back to <0xXX> byte tokens.

Both models see raw-text pieces only: special tokens are split off before (special_split).
"""

from __future__ import annotations

from operator import methodcaller

from tokenizers import Regex, models, pre_tokenizers
from tokenizers import Tokenizer as HfTokenizer

from webgpu_llm.tokenizer.pretokenizers import PreTokenizer


def byte_level_bpe(vocab: dict[str, int], merges: list[str], pre: PreTokenizer) -> HfTokenizer:
    pairs = _merge_pairs(merges)
    try:
        model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
    except Exception:
        # tokenizers refuses merges whose parts or result are not tokens; such merges can
        # never produce a token, so dropping them loses nothing for a sane vocabulary.
        pairs = [(a, b) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
        model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
    tok = HfTokenizer(model)
    splits = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [*splits, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    return tok


def _merge_pairs(merges: list[str]) -> list[tuple[str, str]]:
    pairs = [tuple(line.split(" ", 1)) for line in merges]
    # The usual case, checked at C speed: every line is "left right" with a non-empty left.
    if min(map(len, pairs), default=2) == 2 and not any(map(methodcaller("startswith", " "), merges)):
        return pairs  # type: ignore[return-value]
    # llama.cpp cuts at the first space after the first character, so "  x" is (" ", "x");
    # a line with no such space is an unusable merge.
    out = []
    for line in merges:
        cut = line.find(" ", 1)
        if cut > 0:
            out.append((line[:cut], line[cut + 1 :]))
    return out


def sentencepiece_bpe(vocab: dict[str, int], scores: list[float], unk_token: str | None) -> HfTokenizer:
    tokens = list(vocab)
    # Highest score first; equal scores keep vocabulary order (llama.cpp would take the
    # leftmost pair there, a rank cannot say that: the one case we may differ in).
    by_score = sorted(range(len(tokens)), key=scores.__getitem__, reverse=True)
    pairs = [
        (left, right)
        for text in map(tokens.__getitem__, by_score)
        for cut in range(1, len(text))
        if (left := text[:cut]) in vocab and (right := text[cut:]) in vocab
    ]
    model = models.BPE(vocab=vocab, merges=pairs, unk_token=unk_token, byte_fallback=True)
    return HfTokenizer(model)
