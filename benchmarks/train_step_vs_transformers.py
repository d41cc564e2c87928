"""Training-step speed of our GPT and BERT against `transformers`' GPT-2 and BERT, same weights.

Run by hand (not a test): `python benchmarks/train_step_vs_transformers.py [--steps 20]`.
Both models start from identical weights (converted with `models/hf_conversion.py`) and see the same
batches; steps alternate between the two so machine noise hits both alike. Prints the median
forward+backward+AdamW step time of each and the ratio (ours / theirs; below 1 means we are faster),
plus the largest loss difference as a check that both computed the same thing.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import transformers

from model_foundry.models import create_model
from model_foundry.models.hf_conversion import (bert_config_to_hf, bert_state_dict_to_hf_bert, gpt_config_to_hf,
                                                gpt_state_dict_to_hf_gpt2)

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 256, "vocab_size": 8192}
BATCH = 16


def twin_models(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    ours = create_model(arch, pad_token_id=0, **SHAPE)
    if arch == "gpt":
        theirs = transformers.GPT2LMHeadModel(transformers.GPT2Config(**gpt_config_to_hf(ours.config)))
        theirs.load_state_dict(gpt_state_dict_to_hf_gpt2(ours.state_dict(), ours.config), strict=False)
    else:
        theirs = transformers.BertForMaskedLM(transformers.BertConfig(**bert_config_to_hf(ours.config)))
        theirs.load_state_dict(bert_state_dict_to_hf_bert(ours.state_dict(), ours.config), strict=False)
    return ours.train(), theirs.train()


def batches_for(arch: str, generator: torch.Generator) -> tuple[dict, dict]:
    """The same batch for both: GPT-2 shifts its labels inside the model, ours takes them aligned."""
    ids = torch.randint(5, SHAPE["vocab_size"], (BATCH, SHAPE["block_size"]), generator=generator)
    if arch == "gpt":
        next_tokens = torch.cat([ids[:, 1:], torch.full_like(ids[:, :1], -100)], dim=1)
        return {"input_ids": ids, "labels": next_tokens}, {"input_ids": ids, "labels": ids}
    labels = torch.full_like(ids, -100)
    chosen = torch.rand(ids.shape, generator=generator) < 0.15
    labels[chosen] = ids[chosen]
    batch = {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids)}
    return batch, batch


def timed_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> tuple[float, float]:
    start = time.perf_counter()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, float(loss.detach())


def compare(arch: str, steps: int) -> None:
    ours, theirs = twin_models(arch)
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ours, theirs)]
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"ours": [], "transformers": []}
    loss_gap = 0.0
    for step in range(steps + 2):  # the first two steps warm up allocators and are not counted
        ours_batch, hf_batch = batches_for(arch, generator)
        t_ours, l_ours = timed_step(ours, optimizers[0], ours_batch)
        t_hf, l_hf = timed_step(theirs, optimizers[1], hf_batch)
        if step >= 2:
            times["ours"].append(t_ours)
            times["transformers"].append(t_hf)
            loss_gap = max(loss_gap, abs(l_ours - l_hf))
    ours_s, hf_s = statistics.median(times["ours"]), statistics.median(times["transformers"])
    tokens = BATCH * SHAPE["block_size"]
    print(f"{arch:5s} ours {ours_s * 1000:7.1f} ms/step ({tokens / ours_s:8,.0f} tok/s) | transformers "
          f"{hf_s * 1000:7.1f} ms/step ({tokens / hf_s:8,.0f} tok/s) | ratio {ours_s / hf_s:.2f} | "
          f"max loss diff {loss_gap:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--arch", choices=["gpt", "bert"], nargs="*", default=["gpt", "bert"])
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"batch {BATCH} x {SHAPE['block_size']}, {SHAPE['n_layer']}x{SHAPE['n_head']}x{SHAPE['n_embd']}, fp32")
    for arch in args.arch:
        compare(arch, args.steps)


if __name__ == "__main__":
    main()
