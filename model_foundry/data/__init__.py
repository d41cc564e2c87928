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
from model_foundry.data.batches import BatchStream
from model_foundry.data.collators import CausalLMCollator, LabelledCollator, MaskedLMCollator, TrimmingCollator
from model_foundry.data.conll import TokenExample
from model_foundry.data.labelled import (LabelSet, SequenceExample, encode_sequence, encode_words,
                                         read_sequence_examples, read_token_examples)
from model_foundry.data.sources import DATA_FORMATS, guess_format, iter_texts, resolve_paths
from model_foundry.data.tensor_files import TensorFileDataset, load_tensor_file
from model_foundry.data.token_cache import TokenFile, TokenizerLike, split_train_val, tokenize_to_cache
from model_foundry.data.windows import CausalWindows, MaskedWindows

__all__ = ["BatchStream", "CausalLMCollator", "CausalWindows", "DATA_FORMATS", "LabelSet", "LabelledCollator",
           "MaskedLMCollator", "MaskedWindows", "SequenceExample", "TensorFileDataset", "TokenExample", "TokenFile",
           "TokenizerLike", "TrimmingCollator", "encode_sequence", "encode_words", "guess_format", "iter_texts",
           "load_tensor_file", "read_sequence_examples", "read_token_examples", "resolve_paths", "split_train_val",
           "tokenize_to_cache"]
