"""Zero-shot scoring: how likely a trained language model finds a text, and minimal-pair judgements.

- Causal models (gpt, recurrent, the hybrid's causal side) give each token's log-probability
  given the tokens before it. The first token is conditioned on the document separator the model
  was trained with (pretraining streams end every document with it), so every token of the text
  is scored.
- Masked models (bert, the hybrid's bidirectional side, an ELECTRA run's generator,
  bidirectional recurrent models) give the pseudo-log-likelihood of Salazar et al. (2020): each
  token is masked in turn and scored from all the others, the text framed as `[cls] text [sep]`
  like the pretraining windows. It costs one forward pass per token (batched).

A text longer than the model's context is scored with a sliding window, never cut: causal
windows move by half a context, and each token is scored once, with at least half a context
before it (or all of the text before it); a masked token sees the window of the context's length
centred on it as far as the text allows. Scores do not depend on the batch size or on padding.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.inference.generation import context_size, eval_mode
from model_foundry.models.base import masked_lm_logits
from model_foundry.tasks.registry import sees_both_directions
from model_foundry.training.precision import autocast, resolve_precision

OBJECTIVES = ("clm", "mlm")


@dataclass
class TextScore:
    """One text's score: the sum of its tokens' log-probabilities (natural log) and each of them."""

    text: str
    log_likelihood: float
    num_tokens: int
    token_logprobs: list[float] = field(repr=False)

    def as_row(self) -> dict:
        return {"text": self.text, "log_likelihood": self.log_likelihood, "num_tokens": self.num_tokens,
                "token_logprobs": self.token_logprobs}


@dataclass
class Query:
    """One forward row: `input_ids`, and (position in the row, token id, text index, token index) to read."""

    input_ids: list[int]
    targets: list[tuple[int, int, int, int]]


def scoring_objective(model: nn.Module, objective: str | None = None) -> str:
    """`clm` or `mlm`: what this model can score with; a hybrid takes either (default `clm`)."""
    if objective is not None and objective not in OBJECTIVES:
        raise UserError(f"--objective {objective!r} is not one of {', '.join(OBJECTIVES)}.")
    task = getattr(model, "default_task", None)
    if task == "hybrid":
        return objective or "clm"
    if task in ("masked_lm", "replaced_token_detection") or (
            task == "causal_lm" and sees_both_directions(getattr(model, "config", None))):
        natural = "mlm"
    elif task == "causal_lm":
        natural = "clm"
    else:
        raise UserError(f"A {getattr(model, 'model_type', type(model).__name__)!r} model trained for {task!r} has no "
                        "language-model head to score texts with; score a pretraining run (gpt, bert, hybrid, "
                        "lstm, gru, rnn, electra).")
    if objective is not None and objective != natural:
        raise UserError(f"--objective {objective} does not fit this {task} model (it scores with {natural}); "
                        "--objective chooses between the two sides of a hybrid only.")
    return natural


@torch.no_grad()
def score_texts(model: nn.Module, tokenizer, texts: Sequence[str], objective: str | None = None,
                batch_size: int = 64, precision: str = "auto") -> list[TextScore]:
    """Each text's log-likelihood under `model` (pseudo-log-likelihood for masked models).

    `objective` picks the hybrid's side (`clm` or `mlm`); other models score with their own.
    `precision` is as `training.precision` (auto: bf16 where the hardware runs it natively).
    """
    objective = scoring_objective(model, objective)
    if batch_size < 1:
        raise UserError(f"--batch-size is {batch_size}; it must be at least 1.")
    encoded = [tokenizer.encode(text) for text in texts]
    for text, ids in zip(texts, encoded):
        if not ids:
            raise UserError(f"The text {text!r} has no tokens to score; remove empty lines from the input.")
    limit = context_size(model)
    if objective == "clm":
        queries = causal_queries(encoded, tokenizer.eos_id, limit)
    else:
        queries = masked_queries(encoded, tokenizer, limit)
    logprobs = [[0.0] * len(ids) for ids in encoded]
    device = next(model.parameters()).device
    with eval_mode(model), autocast(device, resolve_precision(precision, device)):
        for batch in batches(queries, batch_size):
            read_logprobs(model, objective, batch, tokenizer.pad_id, device, logprobs)
    return [TextScore(text, float(sum(values)), len(values), values) for text, values in zip(texts, logprobs)]


def causal_queries(encoded: list[list[int]], separator: int, limit: int | None) -> list[Query]:
    """Rows of `[separator] + text` (windows of `limit` tokens when longer); each token is read once."""
    queries = []
    for text_index, ids in enumerate(encoded):
        stream = [separator, *ids]  # stream[i + 1] is token i, predicted at row position i
        window = len(stream) if limit is None else limit + 1
        step = max(1, (window - 1) // 2)
        scored_to = 0  # tokens [0, scored_to) have their score
        start = 0
        while scored_to < len(ids):
            row = stream[start:start + window]
            first = scored_to - start  # row position predicting token `scored_to`
            targets = [(p, row[p + 1], text_index, start + p) for p in range(first, len(row) - 1)]
            queries.append(Query(row[:-1], targets))
            scored_to = start + len(row) - 1
            start += step
    return queries


def masked_queries(encoded: list[list[int]], tokenizer, limit: int | None) -> list[Query]:
    """One row per token: `[cls] window [sep]` with that token masked."""
    if tokenizer.mask_id is None:
        raise UserError("Masked scoring needs a tokenizer with a mask token such as [MASK].")
    width = None if limit is None else limit - 2
    if width is not None and width < 1:
        raise UserError(f"model.block_size {limit} leaves no room for a token between [cls] and [sep].")
    queries = []
    for text_index, ids in enumerate(encoded):
        for token_index, token in enumerate(ids):
            start = window_start(token_index, len(ids), width)
            window = list(ids[start:start + width] if width is not None else ids)
            window[token_index - start] = tokenizer.mask_id
            row = [tokenizer.cls_id, *window, tokenizer.sep_id]
            queries.append(Query(row, [(token_index - start + 1, token, text_index, token_index)]))
    return queries


def window_start(position: int, length: int, width: int | None) -> int:
    """Where a window of `width` tokens centred on `position` starts, kept inside the text."""
    if width is None or length <= width:
        return 0
    return min(max(0, position - width // 2), length - width)


def batches(queries: list[Query], batch_size: int) -> Iterator[list[Query]]:
    """Batches of similar lengths (sorted), so little compute goes to padding."""
    ordered = sorted(queries, key=lambda query: len(query.input_ids))
    for start in range(0, len(ordered), batch_size):
        yield ordered[start:start + batch_size]


def read_logprobs(model: nn.Module, objective: str, batch: list[Query], pad_id: int, device: torch.device,
                  logprobs: list[list[float]]) -> None:
    """Run one right-padded batch and store the log-probability of every target it holds."""
    width = max(len(query.input_ids) for query in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, query in enumerate(batch):
        input_ids[row, :len(query.input_ids)] = torch.tensor(query.input_ids)
        attention_mask[row, :len(query.input_ids)] = 1
    logits = vocabulary_logits(model, objective, input_ids.to(device), attention_mask.to(device))
    rows, positions, tokens, owners = [], [], [], []
    for row, query in enumerate(batch):
        for position, token, text_index, token_index in query.targets:
            rows.append(row)
            positions.append(position)
            tokens.append(token)
            owners.append((text_index, token_index))
    picked = logits[torch.tensor(rows, device=device), torch.tensor(positions, device=device)].float()
    values = picked.log_softmax(-1).gather(-1, torch.tensor(tokens, device=device)[:, None])[:, 0].tolist()
    for (text_index, token_index), value in zip(owners, values):
        logprobs[text_index][token_index] = value


def vocabulary_logits(model: nn.Module, objective: str, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    if objective == "mlm":
        return masked_lm_logits(model, input_ids, attention_mask)
    return model(input_ids, attention_mask=attention_mask).logits


@dataclass
class PairResult:
    good: TextScore
    bad: TextScore

    @property
    def correct(self) -> bool:
        """The good sentence scores strictly higher; a tie counts as wrong."""
        return self.good.log_likelihood > self.bad.log_likelihood


def judge_pairs(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]], objective: str | None = None,
                batch_size: int = 64, precision: str = "auto") -> list[PairResult]:
    """Score every (good, bad) sentence pair; `PairResult.correct` says whether the model prefers the good one."""
    texts = [text for pair in pairs for text in pair]
    scores = score_texts(model, tokenizer, texts, objective, batch_size, precision)
    return [PairResult(scores[2 * i], scores[2 * i + 1]) for i in range(len(pairs))]


def minimal_pair_accuracy(model: nn.Module, tokenizer, pairs: Sequence[tuple[str, str]],
                          objective: str | None = None, batch_size: int = 64, precision: str = "auto") -> float:
    """The share of pairs whose good sentence scores strictly higher than the bad one (ties are wrong)."""
    if not pairs:
        raise UserError("There are no minimal pairs to judge.")
    results = judge_pairs(model, tokenizer, pairs, objective, batch_size, precision)
    return sum(result.correct for result in results) / len(results)
