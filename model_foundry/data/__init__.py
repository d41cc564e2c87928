"""Data: corpora on disk -> token ids -> packed windows or padded rows -> batches.

`sources` finds and streams the texts, `token_cache` tokenizes them once into a memory-mapped
file, `windows` cuts packed training examples from it, `tensor_files` reads `.pt` datasets of already
tokenized `.pt` data, `collators` turn examples into padded batches (and mask them for masked
LM), and `batches` streams those batches in an exactly resumable, rank-sharded order.
Sentence-level objectives read whole text units instead of packed windows (`text_units`) and cut
two spans of each (`span_pairs`).
For finetuning, `labelled` (with `conll`) reads labelled examples, keeps the label vocabulary and
encodes texts and word sequences for a model.
"""
from __future__ import annotations

import importlib
from typing import Any

# Each public name and the module that defines it, imported on first use (PEP 562): the torch-free
# modules (long_lines, sources, token_cache) then load without torch, which tokenizer training and
# the token cache's worker processes never need.
_MODULE_OF = {
    "BatchStream": "batches",
    "CausalLMCollator": "collators", "LabelledCollator": "collators", "MaskedLMCollator": "collators",
    "TrimmingCollator": "collators",
    "TokenExample": "conll",
    "LabelSet": "labelled", "SequenceExample": "labelled", "encode_sequence": "labelled", "encode_words": "labelled",
    "read_sequence_examples": "labelled", "read_token_examples": "labelled",
    "DATA_FORMATS": "sources", "guess_format": "sources", "iter_texts": "sources", "resolve_paths": "sources",
    "TensorFileDataset": "tensor_files", "load_tensor_file": "tensor_files",
    "TokenFile": "token_cache", "TokenizerLike": "token_cache", "split_train_val": "token_cache",
    "tokenize_to_cache": "token_cache",
    "CausalWindows": "windows", "MaskedWindows": "windows",
}


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value


__all__ = ["BatchStream", "CausalLMCollator", "CausalWindows", "DATA_FORMATS", "LabelSet", "LabelledCollator",
           "MaskedLMCollator", "MaskedWindows", "SequenceExample", "TensorFileDataset", "TokenExample", "TokenFile",
           "TokenizerLike", "TrimmingCollator", "encode_sequence", "encode_words", "guess_format", "iter_texts",
           "load_tensor_file", "read_sequence_examples", "read_token_examples", "resolve_paths", "split_train_val",
           "tokenize_to_cache"]
