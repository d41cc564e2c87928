"""Fill-mask: the most likely tokens at each `[MASK]` of a text, from a masked language model.

`[MASK]` in the text means the tokenizer's own mask token, whatever its spelling (`<mask>` for
bpe and unigram tokenizers; that spelling works too). The model sees `[cls] text [sep]`, the
way masked-LM pretraining windows start with [cls] and documents end with [sep].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.inference.generation import eval_mode
from model_foundry.models.base import masked_lm_logits

MASK_PLACEHOLDER = "[MASK]"
# In these tokenizers a word's token carries the space before it ("Ġcat", "▁cat"), so the mask,
# which stands for such a token, takes the space before it too (as RoBERTa's <mask> does).
SPACE_PREFIXED_KINDS = ("bpe", "unigram")


@torch.no_grad()
def fill_mask(model: nn.Module, tokenizer, text: str, top_k: int = 5) -> list[list[dict]]:
    """For each mask in `text`, in order, the `top_k` most likely tokens, most likely first.

    A candidate is `{"token": its text, "token_id", "probability", "sequence": the text with
    this mask filled in}`. Other masks stay masked in `sequence`; each mask is predicted from
    the text with every mask in place.
    """
    if top_k < 1:
        raise UserError(f"top_k is {top_k}; fill-mask needs at least 1 candidate per mask.")
    check_can_fill_masks(model)
    text_ids = masked_text_ids(tokenizer, text)
    input_ids = torch.tensor([[tokenizer.cls_id, *text_ids, tokenizer.sep_id]],
                             device=next(model.parameters()).device)
    check_fits(model, input_ids.size(1))
    with eval_mode(model):
        logits = masked_lm_logits(model, input_ids, torch.ones_like(input_ids))[0]
    mask_positions = [i for i, token in enumerate(text_ids) if token == tokenizer.mask_id]
    probabilities = torch.softmax(logits[1:-1].float(), dim=-1)  # drop the [cls] and [sep] rows
    return [candidates(tokenizer, text_ids, position, probabilities[position], top_k)
            for position in mask_positions]


def check_can_fill_masks(model: nn.Module) -> None:
    """Masked LMs and models with an extra MLM head (`masked_lm_logits`) fill masks; others cannot."""
    if hasattr(model, "masked_lm_logits") or getattr(model, "default_task", None) == "masked_lm":
        return
    kind = getattr(model, "model_type", type(model).__name__)
    raise UserError(f"A {kind!r} model was not trained to fill masks (its objective is "
                    f"{getattr(model, 'default_task', 'unknown')!r}); use a bert or hybrid masked language model "
                    "(use generate for gpt).")


def masked_text_ids(tokenizer, text: str) -> list[int]:
    """The ids of `text` (no special tokens) with each `[MASK]` as the tokenizer's mask id."""
    pieces = text.replace(tokenizer.mask_token, MASK_PLACEHOLDER).split(MASK_PLACEHOLDER)
    if len(pieces) == 1:
        raise UserError(f"The text has no mask to fill: write {MASK_PLACEHOLDER} where a token is missing, "
                        f"e.g. \"the cat {MASK_PLACEHOLDER} on the mat\".")
    if tokenizer.kind in SPACE_PREFIXED_KINDS:
        pieces = [piece.rstrip() for piece in pieces[:-1]] + pieces[-1:]
    # The tokenizer matches its special tokens whole in raw text, so the mask is never split.
    return tokenizer.encode(tokenizer.mask_token.join(pieces))


def check_fits(model: nn.Module, length: int) -> None:
    block_size = getattr(model.config, "block_size", None)
    if block_size is not None and length > block_size:
        raise UserError(f"The text is {length} tokens with [cls] and [sep], longer than the model's block_size "
                        f"({block_size}); shorten it around the mask.")


def candidates(tokenizer, text_ids: list[int], position: int, probabilities: Tensor, top_k: int) -> list[dict]:
    """The `top_k` most likely tokens at `position`, each with the text it makes."""
    top = probabilities.topk(min(top_k, probabilities.numel()))
    result = []
    for probability, token_id in zip(top.values.tolist(), top.indices.tolist()):
        filled = [*text_ids[:position], token_id, *text_ids[position + 1:]]
        result.append({"token": tokenizer.decode([token_id]), "token_id": token_id, "probability": probability,
                       "sequence": tokenizer.decode(filled)})
    return result
