"""Tokenizers: train one of four kinds on a corpus, save it as tokenizer.json, load it back.

    tok = train_tokenizer("bpe", 8000, files=["corpus.txt"])
    tok.save("run/tokenizer")            # -> run/tokenizer/tokenizer.json
    tok = FoundryTokenizer.load("run/tokenizer")
    tok.encode("hello")                  # raw ids, no special tokens
    tok.encode_for_model("a", "b")       # [cls] a [sep] b [sep]

Every kind reserves ids 0..4 for pad, unk, cls (= bos), sep (= eos) and mask.
"""
from pathlib import Path

from model_foundry.tokenizer.foundry_tokenizer import FoundryTokenizer
from model_foundry.tokenizer.hf_tokenizer import HFTokenizer, is_hf_tokenizer_dir
from model_foundry.tokenizer.kinds import TOKENIZER_TYPES
from model_foundry.tokenizer.training import train_tokenizer


def load_any_tokenizer(path: str | Path) -> FoundryTokenizer | HFTokenizer:
    """Ours (a bare tokenizer.json) or a Hugging Face one (saved with tokenizer_config.json beside it)."""
    return HFTokenizer.load(path) if is_hf_tokenizer_dir(path) else FoundryTokenizer.load(path)


__all__ = ["FoundryTokenizer", "HFTokenizer", "TOKENIZER_TYPES", "load_any_tokenizer", "train_tokenizer"]
