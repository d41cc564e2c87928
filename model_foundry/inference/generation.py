"""Text generation for causal language models: greedy decoding and sampling, batched.

Any model with `supports_generation` works through `decode_step` (see `BaseLanguageModel`):
transformers keep a key/value cache, other architectures may re-run the whole sequence. Prompts
of different lengths are left-padded into one batch, so every row's newest token sits in the
last column; positions count real tokens only, so a padded prompt continues exactly as it
would alone.

A transformer with `block_size` B conditions each new token on the last B tokens (prompt and
generated so far), as it was trained to: the whole prompt is used whatever `max_new_tokens` is,
and once the text outgrows B the window slides. Learned and rotary positions cannot be shifted
inside a key/value cache, so a slide drops the cache and recomputes the window; cached and
uncached decoding therefore stay identical. Only a prompt longer than B loses its first tokens,
with a warning. Recurrent models carry a state of any length and never slide.

How the next token is chosen, in this order:
- `temperature` 0 takes the most likely token (greedy); otherwise the logits are divided by it
  (below 1 sharpens the distribution, above 1 flattens it);
- `top_k` keeps only the k most likely tokens;
- `top_p` (nucleus sampling) keeps the smallest set of most likely tokens whose probability
  adds up to at least p (the most likely token always stays);
- a token is drawn from what is left, renormalised.
"""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.models.base import BaseLanguageModel
from model_foundry.models.recurrent import RecurrentLanguageModel

StepFunction = Callable[[Tensor, Tensor, Any], tuple[Tensor, Any]]


@torch.no_grad()
def generate(model: nn.Module, input_ids: Tensor | Sequence[Sequence[int]], *, max_new_tokens: int = 50,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             stop_token_ids: Sequence[int] = (), pad_id: int | None = None, use_cache: bool = True,
             generator: torch.Generator | None = None) -> list[list[int]]:
    """The new tokens generated after each prompt (one list per prompt, the prompt not repeated).

    `input_ids` is a (batch, time) tensor of unpadded prompts or a list of token-id lists of any
    lengths. A row stops at its first token in `stop_token_ids`, which is not included in its
    output; generation ends when every row has stopped or after `max_new_tokens`. Each token is
    chosen from the last `block_size` tokens of its row (see the module docstring); a prompt
    longer than that is cut to its last `block_size` tokens, with one warning line on stderr.
    `pad_id` fills the left padding (default: the model's pad_token_id, else 0; padded
    positions are masked, so its value never matters). `use_cache=False` re-runs the model on
    the whole sequence at every step (slow; the cached result is the same). `generator` makes
    sampling reproducible.
    """
    check_generation_settings(model, max_new_tokens, temperature, top_k, top_p)
    block_size = context_size(model)
    prompts = prompts_in_context(prompt_lists(input_ids), block_size)
    pad_id = pad_id if pad_id is not None else getattr(model.config, "pad_token_id", None) or 0
    ids, mask = left_padded(prompts, pad_id, next(model.parameters()).device)
    step = model.decode_step if use_cache else uncached_step(model)
    stop_ids = torch.tensor(list(stop_token_ids), dtype=torch.long, device=ids.device)
    with eval_mode(model):
        choose = partial(choose_next, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
        new_tokens = decode_tokens(step, ids, mask, max_new_tokens, stop_ids, pad_id, choose, block_size)
    return [until_stop(row, stop_token_ids) for row in new_tokens.tolist()]


def generate_text(model: nn.Module, tokenizer, prompts: list[str], **kwargs) -> list[str]:
    """The text generated after each prompt, by `generate` (its keyword arguments pass through).

    Prompts are encoded as pretraining saw text: raw ids, no special tokens. An empty prompt
    starts from the end-of-document token, which precedes every document but the first in the
    pretraining stream. Generation stops at that token unless `stop_token_ids` says otherwise.
    """
    encoded = [tokenizer.encode(prompt) or [tokenizer.eos_id] for prompt in prompts]
    kwargs.setdefault("stop_token_ids", (tokenizer.eos_id,))
    kwargs.setdefault("pad_id", tokenizer.pad_id)
    continuations = generate(model, encoded, **kwargs)
    return [continuation_text(tokenizer, ids, new) for ids, new in zip(encoded, continuations)]


def continuation_text(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text of `new_ids` as it continues the prompt.

    Decoding the new ids alone can differ from their place in the whole text (a unigram piece
    loses its leading space, a byte-level BPE character may span the boundary), so the whole
    sequence is decoded and the prompt's text removed from its front.
    """
    whole = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    prompt = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    if whole.startswith(prompt):
        return whole[len(prompt):]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def check_generation_settings(model: nn.Module, max_new_tokens: int, temperature: float,
                              top_k: int | None, top_p: float | None) -> None:
    if not getattr(model, "supports_generation", False):
        kind = getattr(model, "model_type", type(model).__name__)
        raise UserError(f"A {kind!r} model does not generate text (it has no causal language-model head); "
                        "generate with a gpt, hybrid or recurrent language model (use fill-mask for bert).")
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens is {max_new_tokens}; it must be 0 or more.")
    if temperature < 0:
        raise UserError(f"temperature is {temperature}; it must be 0 (greedy) or positive.")
    if top_k is not None and top_k < 1:
        raise UserError(f"top_k is {top_k}; it must be at least 1 (or unset to keep every token).")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p is {top_p}; it must be in (0, 1] (or unset to keep every token).")


def prompt_lists(input_ids: Tensor | Sequence[Sequence[int]]) -> list[list[int]]:
    prompts = input_ids.tolist() if isinstance(input_ids, Tensor) else [list(map(int, p)) for p in input_ids]
    if not prompts:
        raise UserError("generate needs at least one prompt.")
    empty = [i for i, prompt in enumerate(prompts) if not prompt]
    if empty:
        raise UserError(f"Prompt {empty[0]} is empty; every prompt needs at least one token to continue "
                        "(generate_text starts an empty text from the end-of-document token).")
    return prompts


def context_size(model: nn.Module) -> int | None:
    """The most tokens the model can condition on (`block_size`), or None without a limit.

    A recurrent model's `block_size` only sets the window it was trained on; its state carries
    any length, so it is not cut.
    """
    if isinstance(model, RecurrentLanguageModel):
        return None
    return getattr(model.config, "block_size", None)


def prompts_in_context(prompts: list[list[int]], block_size: int | None) -> list[list[int]]:
    """Each prompt cut on the left to the model's context, saying so on stderr when any is cut.

    The model cannot read more than `block_size` tokens, and the CLI prints the whole prompt,
    so a silent cut would look as if the whole prompt had been used.
    """
    if block_size is None:
        return prompts
    dropped = [len(prompt) - block_size for prompt in prompts if len(prompt) > block_size]
    if dropped:
        whose = "a prompt's first" if len(dropped) == 1 else f"{len(dropped)} prompts' first"
        print(f"warning: dropped {whose} {', '.join(map(str, dropped))} token(s): a prompt longer than the "
              f"model's context (model.block_size: {block_size}) keeps its last {block_size} tokens.",
              file=sys.stderr)
    return [prompt[-block_size:] for prompt in prompts]


def left_padded(prompts: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """(ids, attention_mask), both (batch, longest prompt), with padding on the left.

    The mask is None when every prompt has the same length: with nothing padded the model needs
    no mask, and a decoding step then skips building one.
    """
    longest = max(len(prompt) for prompt in prompts)
    if all(len(prompt) == longest for prompt in prompts):
        return torch.tensor(prompts, dtype=torch.long, device=device), None
    ids = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        mask[row, longest - len(prompt):] = 1
    return ids.to(device), mask.to(device)


def uncached_step(model: nn.Module) -> StepFunction:
    """The base class's decode step, which re-runs the whole sequence, whatever the model overrides."""
    return lambda ids, mask, cache: BaseLanguageModel.decode_step(model, ids, mask, cache)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run with dropout off, then give the model back in the mode it came in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def decode_tokens(step: StepFunction, ids: Tensor, mask: Tensor | None, steps: int, stop_ids: Tensor, pad_id: int,
                  choose: Callable[[Tensor], Tensor], block_size: int | None) -> Tensor:
    """The (batch, n <= steps) new tokens; a row that has stopped is filled with `pad_id` after its stop token.

    `window` and `mask` hold the tokens the model conditions on, at most `block_size` columns
    (`mask` None: no prompt is padded; the tokens after a row's stop are its own business, never
    masked); `cache` (when not None) covers all of them but the newest column, which is `step_input`.
    """
    batch = ids.size(0)
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    new_tokens: list[Tensor] = []
    window, step_input, cache = ids, ids, None
    stops = bool(stop_ids.numel())  # without stop tokens no row stops: no check, no sync with the device
    for _ in range(steps):
        logits, cache = step(step_input, mask, cache)
        next_ids = choose(logits)
        if stops:
            next_ids = next_ids.masked_fill(finished, pad_id)
            finished |= torch.isin(next_ids, stop_ids)
        new_tokens.append(next_ids)
        if stops and bool(finished.all()):
            break
        step_input = next_ids[:, None]
        window = torch.cat((window, step_input), dim=1)
        if mask is not None:
            mask = torch.cat((mask, mask.new_ones(batch, 1)), dim=1)
        if block_size is not None and window.size(1) > block_size:
            window = window[:, -block_size:]
            mask = mask[:, -block_size:] if mask is not None else None
            step_input, cache = window, None  # positions shift: recompute the window from scratch
    if not new_tokens:
        return ids.new_empty(batch, 0)
    return torch.stack(new_tokens, dim=1)


def until_stop(tokens: list[int], stop_token_ids: Sequence[int]) -> list[int]:
    """`tokens` up to (not including) the first stop token."""
    for index, token in enumerate(tokens):
        if token in stop_token_ids:
            return tokens[:index]
    return tokens


def choose_next(logits: Tensor, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None = None) -> Tensor:
    """One token id per row of `logits` (batch, vocab), by the rules in the module docstring."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        logits = keep_top_k(logits, top_k)
    if top_p is not None:
        logits = keep_top_p(logits, top_p)
    probabilities = torch.softmax(logits, dim=-1)
    return torch.multinomial(probabilities, num_samples=1, generator=generator).squeeze(-1)


def keep_top_k(logits: Tensor, k: int) -> Tensor:
    """`logits` with all but the k largest per row set to -inf (exactly k kept, even with ties)."""
    values, indices = logits.topk(min(k, logits.size(-1)), dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def keep_top_p(logits: Tensor, p: float) -> Tensor:
    """`logits` with -inf outside the smallest set of most likely tokens whose probability reaches p.

    Sorted by probability, a token is dropped when the tokens before it already reach p; the
    most likely token has nothing before it, so it always stays.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probabilities = torch.softmax(sorted_logits, dim=-1)
    before = probabilities.cumsum(dim=-1) - probabilities
    sorted_logits = sorted_logits.masked_fill(before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
