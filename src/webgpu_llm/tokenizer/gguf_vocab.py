"""Read a GGUF vocabulary (tokenizer.ggml.* metadata) the way llama.cpp's llama_vocab::load does."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from webgpu_llm.errors import ModelFileError

# tokenizer.ggml.model values we read (llama.cpp also has t5, rwkv, plamo2 and none)
SUPPORTED_MODELS = ("gpt2", "llama", "bert")

# tokenizer.ggml.token_type values
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

SPECIAL_ID_KEYS = {
    "bos": ("tokenizer.ggml.bos_token_id",),
    "eos": ("tokenizer.ggml.eos_token_id",),
    "eot": ("tokenizer.ggml.eot_token_id",),
    "eom": ("tokenizer.ggml.eom_token_id",),
    "unk": ("tokenizer.ggml.unknown_token_id",),
    "sep": ("tokenizer.ggml.seperator_token_id",),  # sic: llama.cpp's spelling
    "pad": ("tokenizer.ggml.padding_token_id",),
    "mask": ("tokenizer.ggml.mask_token_id",),
    "fim_pre": ("tokenizer.ggml.fim_pre_token_id", "tokenizer.ggml.prefix_token_id"),
    "fim_suf": ("tokenizer.ggml.fim_suf_token_id", "tokenizer.ggml.suffix_token_id"),
    "fim_mid": ("tokenizer.ggml.fim_mid_token_id", "tokenizer.ggml.middle_token_id"),
    "fim_pad": ("tokenizer.ggml.fim_pad_token_id",),
    "fim_rep": ("tokenizer.ggml.fim_rep_token_id",),
    "fim_sep": ("tokenizer.ggml.fim_sep_token_id",),
}

# Tokens llama.cpp recognises by their text when the GGUF does not name them.
EOT_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
EOM_TEXTS = ("<|eom_id|>",)
FIM_PAD_TEXTS = ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]")
FIM_REP_TEXTS = ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>")
FIM_SEP_TEXTS = ("<|file_sep|>",)
FIM_PRE_TEXTS = (
    "<|fim_prefix|>",
    "<fim-prefix>",
    "<fim_prefix>",
    "<｜fim▁begin｜>",
    "<PRE>",
    "▁<PRE>",
    "<|code_prefix|>",
    "<|prefix|>",
)
FIM_SUF_TEXTS = (
    "<|fim_suffix|>",
    "<fim-suffix>",
    "<fim_suffix>",
    "<｜fim▁hole｜>",
    "<SUF>",
    "▁<SUF>",
    "<|code_suffix|>",
    "<|suffix|>",
)
FIM_MID_TEXTS = (
    "<|fim_middle|>",
    "<fim-middle>",
    "<fim_middle>",
    "<｜fim▁end｜>",
    "<MID>",
    "▁<MID>",
    "<|code_middle|>",
    "<|middle|>",
)
EOG_TEXTS = frozenset(
    (
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    )
)
# gpt-oss: llama.cpp always renders these, whatever their type in the file.
ALWAYS_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")


@dataclass
class GgufVocab:
    """The vocabulary part of GGUF metadata, checked, with llama.cpp's derived attributes."""

    model: str  # "gpt2", "llama" or "bert"
    pre: str
    tokens: list[str]
    types: list[int]
    scores: list[float]
    merges: list[str]
    ids: dict[str, int]
    special: dict[str, int | None] = field(default_factory=dict)  # bos, eos, eot, ... -> id
    eog_ids: set[int] = field(default_factory=set)
    rstrip_ids: set[int] = field(default_factory=set)  # specials that eat following whitespace

    def ids_of_type(self, *kinds: int) -> list[int]:
        """Ids whose token type is one of `kinds` (found with numpy: vocabularies are large)."""
        types = np.asarray(self.types)
        return np.flatnonzero(np.isin(types, kinds)).tolist()


def read_gguf_vocab(md: dict[str, object]) -> GgufVocab:
    model = _get_str(md, "tokenizer.ggml.model", required=True)
    if model not in SUPPORTED_MODELS:
        raise ModelFileError(
            f"tokenizer model {model!r} (GGUF key tokenizer.ggml.model) is not supported; use a GGUF "
            "with a 'gpt2' (byte-level BPE), 'llama' (SentencePiece) or 'bert' (WordPiece) vocabulary"
        )
    tokens = _get_list(md, "tokenizer.ggml.tokens", str, required=True)
    n = len(tokens)
    if n == 0:
        raise ModelFileError("GGUF key tokenizer.ggml.tokens is empty; the model file has no vocabulary")
    if "" in tokens:  # llama.cpp renames empty tokens rather than failing
        tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
    types = _get_list(md, "tokenizer.ggml.token_type", int) or [NORMAL] * n
    scores = [float(s) for s in _get_list(md, "tokenizer.ggml.scores", float)] or [0.0] * n
    for key, values in (("token_type", types), ("scores", scores)):
        if len(values) < n:
            raise ModelFileError(
                f"GGUF key tokenizer.ggml.{key} has {len(values)} entries for {n} tokens; the file is corrupt"
            )
    merges: list[str] = []
    if model == "gpt2":
        merges = _get_list(md, "tokenizer.ggml.merges", str, required=True)
    ids = dict(zip(tokens, range(n)))
    if len(ids) != n:
        dup = next(t for i, t in enumerate(tokens) if ids[t] != i)
        raise ModelFileError(
            f"duplicate token {dup!r} in GGUF key tokenizer.ggml.tokens; the file is corrupt"
        )
    pre = _get_str(md, "tokenizer.ggml.pre") if model == "gpt2" else "default"
    vocab = GgufVocab(model, pre, tokens, list(types[:n]), scores[:n], merges, ids)
    _find_special_ids(vocab, md)
    _find_eog_ids(vocab)
    _apply_model_quirks(vocab, md)
    return vocab


def _find_special_ids(vocab: GgufVocab, md: dict[str, object]) -> None:
    n = len(vocab.tokens)
    # llama.cpp's defaults when the file does not say (BPE's 11 is a Falcon leftover).
    defaults: dict[str, int | None] = {
        "llama": {"bos": 1, "eos": 2, "unk": 0},
        "bert": {"bos": 101, "unk": 100, "sep": 102, "pad": 0, "mask": 103},  # [CLS] is BOS
    }.get(vocab.model, {"bos": 11, "eos": 11})
    if vocab.pre in ("glm4", "chatglm-bpe"):
        defaults["bos"] = None
    for name, keys in SPECIAL_ID_KEYS.items():
        tid = defaults.get(name)
        if tid is not None and tid >= n:
            tid = None
        for key in keys:  # later keys (deprecated names) win, as in llama.cpp
            value = scalar(md.get(key))
            if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < n:
                tid = value
        vocab.special[name] = tid
    by_text = (
        ("eot", EOT_TEXTS),
        ("eom", EOM_TEXTS),
        ("fim_pad", FIM_PAD_TEXTS),
        ("fim_rep", FIM_REP_TEXTS),
        ("fim_sep", FIM_SEP_TEXTS),
        ("fim_pre", FIM_PRE_TEXTS),
        ("fim_suf", FIM_SUF_TEXTS),
        ("fim_mid", FIM_MID_TEXTS),
    )
    for name, texts in by_text:
        if vocab.special.get(name) is not None:
            continue
        found = [vocab.ids[t] for t in texts if t in vocab.ids]
        if found:
            tid = min(found)
            vocab.special[name] = tid
            _make_control(vocab, tid)


def _find_eog_ids(vocab: GgufVocab) -> None:
    eog = {vocab.special[k] for k in ("fim_pad", "fim_rep", "fim_sep")} - {None}
    for text in EOG_TEXTS:
        tid = vocab.ids.get(text)
        if tid is not None:
            eog.add(tid)
            _make_control(vocab, tid)
    eog |= {vocab.special[k] for k in ("eos", "eot", "eom")} - {None}
    texts = {vocab.tokens[i]: i for i in eog}
    # o200k_harmony / solar-open: <|end|> ends a message, not the generation.
    if "<|end|>" in texts and (
        ("<|return|>" in texts and "<|call|>" in texts) or ("<|calls|>" in texts and "<|flush|>" in texts)
    ):
        eog.discard(texts["<|end|>"])
        vocab.types[texts["<|end|>"]] = USER_DEFINED
    # gemma4 / paddleocr: </s> is an ordinary token there.
    if "<|tool_response>" in texts and "</s>" in texts:
        eog.discard(texts["</s>"])
        vocab.types[texts["</s>"]] = NORMAL
    vocab.eog_ids = {int(i) for i in eog if i is not None}


def _apply_model_quirks(vocab: GgufVocab, md: dict[str, object]) -> None:
    for text in ALWAYS_RENDERED:
        if text in vocab.ids:
            vocab.types[vocab.ids[text]] = USER_DEFINED
    name = _get_str(md, "general.name").lower()
    if "phi-3" in name or "phi3" in name:
        # llama.cpp: Phi-3's special tokens swallow the whitespace that follows them.
        specials = set(vocab.ids_of_type(CONTROL, USER_DEFINED, UNKNOWN))
        keep = {vocab.ids.get(t) for t in ("<unk>", "<s>", "<|endoftext|>")}
        vocab.rstrip_ids = (specials | ({vocab.ids["</s>"]} if "</s>" in vocab.ids else set())) - keep


def _make_control(vocab: GgufVocab, tid: int) -> None:
    # llama.cpp adds the control attribute to control-looking tokens a converter left as
    # normal or user-defined: they stop being recognised without parse_special, and decode
    # hides them.
    vocab.types[tid] = CONTROL


def scalar(value: object) -> object:
    """A plain Python value for a numpy scalar a GGUF reader may hand over."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple)) else value


def _get_str(md: dict[str, object], key: str, required: bool = False) -> str:
    value = md.get(key)
    if value is None:
        if required:
            raise ModelFileError(f"GGUF key {key} is missing; the model file has no usable tokenizer")
        return ""
    if not isinstance(value, str):
        raise ModelFileError(
            f"GGUF key {key} should be a string, not {type(value).__name__}; the file is corrupt"
        )
    return value


def _get_list(md: dict[str, object], key: str, kind: type, required: bool = False) -> list:
    value = md.get(key)
    if value is None:
        if required:
            raise ModelFileError(f"GGUF key {key} is missing; the model file has no usable tokenizer")
        return []
    if hasattr(value, "tolist"):  # a numpy array from a reader
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ModelFileError(
            f"GGUF key {key} should be an array, not {type(value).__name__}; the file is corrupt"
        )
    items = list(value)
    if kind is str and items and isinstance(items[0], bytes):
        items = [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else x for x in items]
    # set(map(type, ...)) runs in C: checking 50k-entry arrays stays in the milliseconds.
    allowed = {int, float} if kind is float else {kind}
    if not set(map(type, items)) <= allowed:
        try:  # numbers of another type (numpy scalars) are fine once converted
            if kind is str or any(isinstance(x, (str, bytes, bool)) for x in items):
                raise TypeError
            items = [kind(x) for x in items]
        except (TypeError, ValueError):
            raise ModelFileError(
                f"GGUF key {key} should hold {kind.__name__} values; the file is corrupt"
            ) from None
    return items
