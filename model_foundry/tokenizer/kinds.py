"""The four kinds of tokenizer and the special tokens each one reserves.

Every kind puts its five special tokens at ids 0..4 in the same role order (pad, unk, cls, sep,
mask), so models, collators and checkpoints can rely on `pad_id == 0` whatever the kind. The
spelling follows the kind's tradition: BERT's `[PAD]` for char and WordPiece, SentencePiece's
`<pad>` for byte-level BPE and unigram.
"""
from __future__ import annotations

from dataclasses import dataclass

from model_foundry.errors import UserError, closest

from model_foundry.config.choices import TOKENIZER_TYPES  # noqa: F401  (re-exported: the tokenizer kinds)


@dataclass(frozen=True)
class SpecialTokens:
    """The spelling of each special-token role. Sequences start with `cls` and end with `sep`,
    so `bos` and `eos` are the same tokens under their generative-model names."""

    pad: str
    unk: str
    cls: str
    sep: str
    mask: str

    @property
    def bos(self) -> str:
        return self.cls

    @property
    def eos(self) -> str:
        return self.sep

    def in_id_order(self) -> list[str]:
        """The tokens in the order that gives them ids 0..4."""
        return [self.pad, self.unk, self.cls, self.sep, self.mask]


BERT_SPECIALS = SpecialTokens(pad="[PAD]", unk="[UNK]", cls="[CLS]", sep="[SEP]", mask="[MASK]")
SENTENCEPIECE_SPECIALS = SpecialTokens(pad="<pad>", unk="<unk>", cls="<s>", sep="</s>", mask="<mask>")

SPECIALS_BY_KIND = {
    "char": BERT_SPECIALS,
    "wordpiece": BERT_SPECIALS,
    "bpe": SENTENCEPIECE_SPECIALS,
    "unigram": SENTENCEPIECE_SPECIALS,
}

# The `tokenizers` model class behind each kind; a saved tokenizer.json names it, which is how a
# loaded file tells its kind without any field of our own.
MODEL_TYPE_BY_KIND = {"char": "WordLevel", "wordpiece": "WordPiece", "bpe": "BPE", "unigram": "Unigram"}
KIND_BY_MODEL_TYPE = {model_type: kind for kind, model_type in MODEL_TYPE_BY_KIND.items()}


def check_kind(kind: str) -> str:
    """Return `kind` if it is a known tokenizer type, else raise a UserError listing them."""
    if kind not in TOKENIZER_TYPES:
        near = closest(str(kind), TOKENIZER_TYPES)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise UserError(f"Unknown tokenizer type {kind!r}; the types are {', '.join(TOKENIZER_TYPES)}.{hint}")
    return kind
