"""Training-step speed of our GPT and BERT against `transformers`' GPT-2 and BERT, same weights.

Run by hand (not a test): `python benchmarks/train_step_vs_transformers.py [--steps 20] [--device cpu|cuda]
[--precision fp32|bf16]` (defaults: the CPU in fp32).
Both models start from identical weights (converted with `models/hf_conversion.py`) and see the same
batches; steps alternate between the two so machine noise hits both alike. Prints the median
forward+backward+AdamW step time of each and the ratio (ours / theirs; below 1 means we are faster),
plus the largest loss difference as a check that both computed the same thing. On CUDA each step
ends with a device synchronisation before its clock stops; bf16 runs both under the same autocast.
"""
from __future__ import annotations

import argparse
import contextlib
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
    # BERT's default positions are rotary, which Hugging Face BERT cannot express: learned ones here.
    ours = create_model(arch, pad_token_id=0, **SHAPE, **({"positional": "learned"} if arch == "bert" else {}))
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


def timed_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict,
               device: torch.device = torch.device("cpu"), precision: str = "fp32") -> tuple[float, float]:
    batch = {k: v.to(device) for k, v in batch.items()}
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16"
                else contextlib.nullcontext())
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, float(loss.detach())


def compare(arch: str, steps: int, device: torch.device = torch.device("cpu"), precision: str = "fp32") -> None:
    ours, theirs = (m.to(device) for m in twin_models(arch))
    optimizers = [torch.optim.AdamW(m.parameters(), lr=1e-4) for m in (ours, theirs)]
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {"ours": [], "transformers": []}
    loss_gap = 0.0
    for step in range(steps + 2):  # the first two steps warm up allocators and are not counted
        ours_batch, hf_batch = batches_for(arch, generator)
        t_ours, l_ours = timed_step(ours, optimizers[0], ours_batch, device, precision)
        t_hf, l_hf = timed_step(theirs, optimizers[1], hf_batch, device, precision)
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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this machine has no CUDA device")
    device = torch.device(args.device)
    torch.manual_seed(0)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {where}, "
          f"batch {BATCH} x {SHAPE['block_size']}, {SHAPE['n_layer']}x{SHAPE['n_head']}x{SHAPE['n_embd']}, "
          f"{args.precision}")
    for arch in args.arch:
        compare(arch, args.steps, device, args.precision)


if __name__ == "__main__":
    main()
