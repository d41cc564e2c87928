"""`foundry generate`, `foundry fill-mask` and `foundry score`: a trained language model at the command line."""
from __future__ import annotations

import json
from argparse import Namespace

from model_foundry.errors import UserError


def generate(args: Namespace) -> None:
    """Print each prompt followed by its generated continuation."""
    import torch

    from model_foundry.inference.generation import generate_text
    from model_foundry.inference.loading import load_model, load_tokenizer
    from model_foundry.training.precision import resolve_device

    device = resolve_device("auto")
    model = load_model(args.run, args.checkpoint).to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed) if args.seed is not None else None
    continuations = generate_text(model, load_tokenizer(args.run), args.prompt,
                                  max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, generator=generator)
    print("\n\n".join(prompt + continuation for prompt, continuation in zip(args.prompt, continuations)))


def fill_mask(args: Namespace) -> None:
    """Print, for each [MASK] in the text, its candidates: probability, token, and the filled-in text."""
    from model_foundry.inference.fill_mask import fill_mask as fill
    from model_foundry.inference.loading import load_model, load_tokenizer

    results = fill(load_model(args.run, args.checkpoint), load_tokenizer(args.run), args.text, top_k=args.top_k)
    for index, candidates in enumerate(results, start=1):
        if len(results) > 1:
            print(f"mask {index}:")
        width = max(len(repr(c["token"])) for c in candidates)
        for candidate in candidates:
            print(f"  {candidate['probability']:.4f}  {repr(candidate['token']):<{width}}  {candidate['sequence']}")


def score(args: Namespace) -> None:
    """One JSONL row per text: text, log_likelihood, num_tokens, token_logprobs."""
    from model_foundry.inference.pair_evaluation import score_run, texts_of

    if (args.input is None) == (args.text is None):
        raise UserError("Give either --input FILE (one text per line) or --text \"...\" to score.")
    texts = texts_of(args.input) if args.input is not None else args.text
    rows = [json.dumps(result.as_row(), ensure_ascii=False)
            for result in score_run(args.run, texts, args.objective, args.checkpoint, args.batch_size)]
    if args.output is None:
        print("\n".join(rows))
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(rows) + "\n", encoding="utf-8")
