"""The chat templates of the model families, rendered by us and by transformers.

Each family's real template (tests/fixtures/chat_templates/, SOURCES.md says where each came
from) goes into a model directory built here (a small tokenizer.json plus tokenizer_config.json
with the family's special tokens and template). transformers' AutoTokenizer reads the same
directory; both render the same conversations, generation prompt on and off, with the
template's own options (enable_thinking, tools, xml_tools, date_string, ...).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from webgpu_llm.errors import ModelFileError
from webgpu_llm.tokenizer import Tokenizer, load_tokenizer_from_dir

TEMPLATES = Path(__file__).parents[1] / "fixtures" / "chat_templates"

SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<bos>",
    "<eos>",
    "<pad>",
    "<start_of_turn>",
    "<end_of_turn>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|python_tag|>",
    "<s>",
    "</s>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|tool|>",
    "<|/tool|>",
]

# family -> (template file, tokenizer_config.json special tokens)
FAMILIES: dict[str, tuple[str, dict[str, str]]] = {
    "qwen3": ("qwen3.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "gemma3": ("gemma3.jinja", {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}),
    "phi3.5": ("phi3.5.jinja", {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<s>"}),
    "phi4-mini": ("phi4-mini.jinja", {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"}),
    "smollm3": ("smollm3.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|im_end|>"}),
    "llama3.1": ("llama3.1.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "llama3.2": ("llama3.2.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
}

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city, in °C",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Zürich"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TOOL_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}

SYSTEM = {"role": "system", "content": "You are brief."}
USER = {"role": "user", "content": "What is 2+2?"}
ASSISTANT = {"role": "assistant", "content": "4"}
USER2 = {"role": "user", "content": "  And the weather in Paris? é 🙂  "}

PLAIN = {
    "user": [USER],
    "system_user": [SYSTEM, USER],
    "multi_turn": [SYSTEM, USER, ASSISTANT, USER2],
    "ends_with_assistant": [USER, ASSISTANT],
}

# family -> case name -> (messages, template keyword arguments)
Case = tuple[list[dict], dict]
EXTRA: dict[str, dict[str, Case]] = {
    "qwen3": {
        "no_thinking": ([SYSTEM, USER], {"enable_thinking": False}),
        "thinking": ([USER], {"enable_thinking": True}),
        "tools": ([SYSTEM, USER2], {"tools": [WEATHER]}),
        "tools_no_system": ([USER2], {"tools": [WEATHER], "enable_thinking": False}),
        "tool_round_trip": (
            [
                USER2,
                {"role": "assistant", "content": "", "tool_calls": [TOOL_CALL]},
                {"role": "tool", "content": '{"temp": 21}'},
                {"role": "tool", "content": '{"wind": 3}'},
            ],
            {"tools": [WEATHER]},
        ),
        "reasoning_in_history": (
            [USER, {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"}, USER2],
            {},
        ),
        "reasoning_content_field": (
            [USER, {"role": "assistant", "content": "4", "reasoning_content": "2 and 2"}],
            {},
        ),
        # transformers reads `reasoning` as reasoning_content
        "reasoning_field": ([USER, {"role": "assistant", "content": "4", "reasoning": "2 and 2"}, USER2], {}),
    },
    "gemma3": {
        "content_parts": (
            [
                {"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " What is this? "}]},
            ],
            {},
        ),
    },
    "phi4-mini": {
        "tools_in_system": (
            [{"role": "system", "content": "You call tools.", "tools": json.dumps([WEATHER])}, USER2],
            {},
        ),
    },
    "smollm3": {
        "no_think_flag": ([USER], {"enable_thinking": False}),
        "no_think_in_system": ([{"role": "system", "content": "Be brief. /no_think"}, USER, ASSISTANT], {}),
        "system_override": ([{"role": "system", "content": "Only this./system_override"}, USER], {}),
        "xml_tools": ([USER2], {"xml_tools": [WEATHER["function"]], "enable_thinking": False}),
        "python_tools": ([USER2], {"python_tools": ["def get_weather(city: str) -> dict: ..."]}),
        "tool_message": ([USER2, {"role": "tool", "content": "21 C"}], {}),
    },
    "llama3.1": {
        "tools_in_user_message": ([SYSTEM, USER2], {"tools": [WEATHER], "date_string": "26 Jul 2024"}),
        "tools_in_system": (
            [USER2],
            {"tools": [WEATHER], "tools_in_user_message": False, "date_string": "26 Jul 2024"},
        ),
        "builtin_tools": ([USER], {"builtin_tools": ["brave_search", "wolfram_alpha"]}),
        "tool_call_and_result": (
            [
                USER2,
                {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},  # OpenAI style
                {"role": "ipython", "content": '{"temp": 21}'},
            ],
            {"tools": [WEATHER]},
        ),
    },
    "llama3.2": {
        "date_string": ([SYSTEM, USER], {"date_string": "01 Jan 2025"}),
        "tools": ([USER2], {"tools": [WEATHER], "date_string": "01 Jan 2025"}),
    },
}

CASES = [
    (family, name, messages, kwargs, add)
    for family in FAMILIES
    for name, (messages, kwargs) in [
        *((n, (m, {})) for n, m in PLAIN.items()),
        *EXTRA.get(family, {}).items(),
    ]
    for add in (True, False)
]


@cache
def _hf_tokenizer_json() -> str:
    tok = HfTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(["What is 2+2? The weather in Paris.", "You are brief."] * 5, trainer)
    return tok.to_str()


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    dirs = {}
    for family, (file, specials) in FAMILIES.items():
        path = tmp_path_factory.mktemp(family)
        (path / "tokenizer.json").write_text(_hf_tokenizer_json(), encoding="utf-8")
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            **specials,
            "chat_template": (TEMPLATES / file).read_text(encoding="utf-8"),
        }
        (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
        dirs[family] = path
    return dirs


@cache
def _ours(path: Path) -> Tokenizer:
    return load_tokenizer_from_dir(path)


@cache
def _theirs(path: Path):  # a transformers tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _render_both(path: Path, messages: list[dict], add: bool, kwargs: dict) -> tuple[str, str]:
    theirs = _theirs(path).apply_chat_template(messages, tokenize=False, add_generation_prompt=add, **kwargs)
    ours = _ours(path).apply_chat_template(messages, add_generation_prompt=add, **kwargs)
    return ours, theirs


@pytest.mark.parametrize(
    ("family", "name", "messages", "kwargs", "add"),
    CASES,
    ids=[f"{f}-{n}-{'gen' if a else 'nogen'}" for f, n, _, _, a in CASES],
)
def test_template_matches_transformers(
    model_dirs: dict[str, Path], family: str, name: str, messages: list[dict], kwargs: dict, add: bool
) -> None:
    ours, theirs = _render_both(model_dirs[family], messages, add, kwargs)
    assert ours == theirs
    assert ours  # every template writes something for these conversations


def test_options_change_the_prompt(model_dirs: dict[str, Path]) -> None:
    # The keyword arguments reach the template: each one changes what it writes.
    qwen = _ours(model_dirs["qwen3"])
    off = qwen.apply_chat_template([USER], enable_thinking=False)
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen.apply_chat_template([USER]).endswith("<|im_start|>assistant\n")
    with_tools = qwen.apply_chat_template([USER], tools=[WEATHER])
    assert '"name": "get_weather"' in with_tools and "<tools>" in with_tools
    smol = _ours(model_dirs["smollm3"])
    assert "Reasoning Mode: /no_think" in smol.apply_chat_template([USER], enable_thinking=False)
    assert "Reasoning Mode: /think" in smol.apply_chat_template([USER])
    llama = _ours(model_dirs["llama3.2"])
    assert "Today Date: 01 Jan 2025" in llama.apply_chat_template([USER], date_string="01 Jan 2025")


def test_gemma3_refuses_what_transformers_refuses(model_dirs: dict[str, Path]) -> None:
    messages = [USER, USER]
    with pytest.raises(ModelFileError, match="roles must alternate"):
        _ours(model_dirs["gemma3"]).apply_chat_template(messages)
    with pytest.raises(Exception, match="roles must alternate"):
        _theirs(model_dirs["gemma3"]).apply_chat_template(messages, tokenize=False)


def test_tool_use_template_is_picked_with_tools(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text(_hf_tokenizer_json(), encoding="utf-8")
    config = {
        "eos_token": "<|im_end|>",
        "chat_template": [
            {"name": "default", "template": "plain:{{ messages[0].content }}"},
            {"name": "tool_use", "template": "tools:{{ tools | length }}:{{ messages[0].content }}"},
        ],
    }
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = load_tokenizer_from_dir(tmp_path)
    assert tok.apply_chat_template([USER]) == "plain:What is 2+2?"
    assert tok.apply_chat_template([USER], tools=[WEATHER]) == "tools:1:What is 2+2?"
    assert tok.apply_chat_template([USER], tools=[]) == "tools:0:What is 2+2?"  # as transformers: not None


PROBES = [
    # what a template sees besides the messages: tools/documents (None unless given), the
    # special tokens of tokenizer_config.json, the messages as transformers normalizes them
    "{{ tools is none }}|{{ documents is none }}|{{ bos_token }}|{{ eos_token }}|{{ pad_token }}",
    "{% for m in messages %}{{ m | tojson }}{% endfor %}",
    "{{ namespace(a=1).a }}{{ dict(b=2) | tojson }}{{ enable_thinking is defined }}",
]


@pytest.mark.parametrize("probe", PROBES)
def test_template_variables_match_transformers(model_dirs: dict[str, Path], probe: str) -> None:
    path = model_dirs["gemma3"]
    messages = [
        USER,
        {"role": "assistant", "content": None, "reasoning": "r", "tool_calls": [TOOL_CALL]},
        {"role": "assistant", "content": "x", "thinking": "t"},
    ]
    ours = _ours(path)._template
    assert ours is not None
    theirs = _theirs(path).apply_chat_template(messages, tokenize=False, chat_template=probe)
    assert type(ours)(probe, special_tokens=ours.special_tokens).render(messages, False) == theirs
