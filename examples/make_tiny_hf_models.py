"""Write tiny random Hugging Face models with their tokenizers, for the hf_* examples and the tests.

    python examples/make_tiny_hf_models.py   # -> experiments/tiny_hf/{bert,llama,gpt2} and sentiment/*.tsv

Nothing is downloaded: each model is built from a config (2 layers, hidden size 32) with random
weights, and its tokenizer is a word-level vocabulary of the words below. They learn a toy task in
a few steps; swap `model.hf_name_or_path` for a real model directory or hub name to do real work.
"""
from __future__ import annotations

import sys
from pathlib import Path

WORDS = ("good great fine nice happy love best bad awful poor sad hate worst movie film plot actor the a "
         "was is it this very not").split()
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}


def word_tokenizer(specials: list[str], template: tuple[str, str] | None, **roles: str):
    """A PreTrainedTokenizerFast over WORDS: `specials` first, then the words; `template` is
    (single, pair) in `tokenizers` TemplateProcessing syntax, None for no special tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*specials, *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=roles.get("unk_token", specials[0])))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if template is not None:
        used = {token for token in specials if token in " ".join(template)}
        backend.post_processor = processors.TemplateProcessing(
            single=template[0], pair=template[1], special_tokens=[(token, vocab[token]) for token in sorted(used)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, **roles)


def write_bert(directory: Path) -> None:
    from transformers import BertConfig, BertModel

    tokenizer = word_tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
                               ("[CLS] $A [SEP]", "[CLS] $A [SEP] $B:1 [SEP]:1"), pad_token="[PAD]",
                               unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=64, pad_token_id=0, **TINY)
    BertModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def write_llama(directory: Path) -> None:
    """Llama has no pad token, like the real ones: the framework pads with eos."""
    from transformers import LlamaConfig, LlamaModel

    tokenizer = word_tokenizer(["<unk>", "<s>", "</s>"], ("<s> $A", "<s> $A <s> $B"),
                               unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=len(tokenizer), max_position_embeddings=64, num_key_value_heads=2,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None, **TINY)
    LlamaModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def write_gpt2(directory: Path) -> None:
    """GPT-2: one special token for everything, no template, no pad."""
    from transformers import GPT2Config, GPT2Model

    tokenizer = word_tokenizer(["<|endoftext|>"], None, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                               eos_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                        bos_token_id=0, eos_token_id=0)
    GPT2Model(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)


POSITIVE = ["good movie", "great film", "the plot was nice", "love this actor", "best film", "very happy"]
NEGATIVE = ["bad movie", "awful film", "the plot was poor", "hate this actor", "worst film", "very sad"]


def write_sentiment(directory: Path, rows: tuple[tuple[str, int], ...] = (("train", 96), ("dev", 24))) -> None:
    """Toy labelled sentences in the tiny vocabulary: sentence<TAB>label, alternating 0 and 1."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in rows:
        lines = [f"{(POSITIVE if i % 2 else NEGATIVE)[i // 2 % 6]}\t{i % 2}" for i in range(count)]
        (directory / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(lines) + "\n", encoding="utf-8")


WRITERS = {"bert": write_bert, "llama": write_llama, "gpt2": write_gpt2}


def write_tiny_models(root: str | Path, names: tuple[str, ...] = tuple(WRITERS)) -> dict[str, Path]:
    """Write each named tiny model into root/<name>; returns their directories."""
    import torch

    torch.manual_seed(0)
    directories = {}
    for name in names:
        directories[name] = Path(root) / name
        WRITERS[name](directories[name])
    return directories


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "experiments/tiny_hf")
    for name, path in write_tiny_models(target).items():
        print(f"wrote {name}: {path}")
    write_sentiment(target / "sentiment")
    print(f"wrote toy data: {target / 'sentiment'}")
