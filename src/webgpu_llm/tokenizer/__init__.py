"""Tokenizers (GGUF vocabularies as llama.cpp reads them, or Hugging Face tokenizer.json),
chat templates and streaming detokenization."""

from webgpu_llm.tokenizer.from_gguf import load_tokenizer_from_gguf
from webgpu_llm.tokenizer.from_hf_dir import load_tokenizer_from_dir
from webgpu_llm.tokenizer.stream import StreamDecoder
from webgpu_llm.tokenizer.tokenizer import Tokenizer

__all__ = ["StreamDecoder", "Tokenizer", "load_tokenizer_from_dir", "load_tokenizer_from_gguf"]
