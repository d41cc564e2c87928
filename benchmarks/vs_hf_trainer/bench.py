"""Training throughput of `foundry train` beside the Hugging Face `transformers.Trainer` on the same GPT, one process.

Run by hand (not a test), from the repository root:

    python benchmarks/vs_hf_trainer/bench.py [--steps 100] [--rounds 3] [--device auto] [--tiny]

The shape is the benchmark GPT's: 6 layers, 6 heads, 384 wide, context 256, batch 16, vocabulary 8192
(`--tiny`: 2 layers, 2 heads, 64 wide, context 64, batch 8, vocabulary 512, to check the script
quickly). Each round runs, one after the other so machine noise hits all alike:

- `foundry train` with the package's defaults (precision auto, dropout 0, cosine schedule, AdamW,
  clipping at 1.0), its own tokens/s from metrics/train.csv;
- `transformers.Trainer` at its defaults: `GPT2LMHeadModel` with GPT-2's dropout 0.1 (resid, embd,
  attn), fp32, the default optimizer, linear schedule and clipping;
- the same Trainer with dropout 0 and the precision foundry picks on this device (`bf16=True` where
  it runs natively: Ampere+ GPUs, CPUs with AVX512-BF16 or AMX; fp16 on older GPUs; fp32 elsewhere);
- the plain nanoGPT-style loop of benchmarks/hot_loop/bench.py (imported, on this shape: the
  model foundry builds, fused AdamW, one `loss.item()` per log interval).

foundry and both Trainers train on the same rows: random token ids in rows of context + 1 tokens,
saved once as a `.pt` dataset for foundry (with a char tokenizer of exactly the vocabulary size)
and served to the Trainer as a torch Dataset of the same rows' first `context` tokens (GPT-2 shifts
its labels inside the model). Every step is batch x context tokens on every side. The plain loop
draws random windows of the same shape (speed does not depend on the tokens).

Prints, per loop, the median over rounds of the median tokens/s of its log windows (one window per
log interval, steps // 10 steps; the first, with warm-up, left out), foundry's ratio to it, and the
MFU at the loop's own precision where the device's peak is known; then the speed targets.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import inspect
import tempfile
import time
from pathlib import Path

import torch
import transformers

import model_foundry
from model_foundry.models import create_model
from model_foundry.tokenizer.training import train_tokenizer
from model_foundry.training.flops import TrainingFlops, model_flops_utilisation, peak_flops
from model_foundry.training.precision import resolve_device, resolve_precision

# Model keys as foundry's `model` section and `create_model` take them; vocab, batch beside.
SHAPES = {
    "benchmark": ({"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256}, 16, 8192),
    "tiny": ({"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64}, 8, 512),
}
HOT_LOOP = Path(__file__).resolve().parent.parent / "hot_loop" / "bench.py"
FOUNDRY, TRAINER_DEFAULT, TRAINER_FAST, PLAIN = ("foundry train", "HF Trainer, defaults",
                                                 "HF Trainer, no dropout", "plain loop (hot_loop)")
TARGETS = {TRAINER_DEFAULT: 2.5, TRAINER_FAST: 1.2}  # the speed targets: foundry >= 2.5x and >= 1.2x these


def import_hot_loop():
    """benchmarks/hot_loop/bench.py as a module (benchmarks is no package, and `bench` is this file's name)."""
    spec = importlib.util.spec_from_file_location("hot_loop_bench", HOT_LOOP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hot_loop = import_hot_loop()  # the plain loop, and its median of per-run medians
median_of_medians = hot_loop.median_of_medians


def make_data(folder: Path, shape: dict, batch: int, vocab: int, steps: int) -> tuple[Path, Path, torch.Tensor]:
    """(tokenizer dir, .pt dataset, rows): a char tokenizer of exactly `vocab` tokens (5 specials and
    vocab - 5 CJK characters) and batch x steps random rows of block_size + 1 ordinary token ids."""
    tokenizer = train_tokenizer("char", vocab, texts=["".join(chr(0x4E00 + i) for i in range(vocab - 5))])
    if tokenizer.vocab_size != vocab:
        raise RuntimeError(f"the stand-in char tokenizer has {tokenizer.vocab_size} tokens, not {vocab}")
    tokenizer_dir = folder / "tokenizer"
    tokenizer.save(tokenizer_dir)
    first_ordinary = max(tokenizer.special_ids) + 1
    rows = torch.randint(first_ordinary, vocab, (batch * steps, shape["block_size"] + 1),
                         generator=torch.Generator().manual_seed(0))
    data = folder / "rows.pt"
    # The .pt convention: a bool mask with True = PAD; nothing is padded here.
    torch.save({"input_ids": rows, "attention_mask": torch.zeros_like(rows, dtype=torch.bool)}, data)
    return tokenizer_dir, data, rows


def log_interval(steps: int) -> int:
    return max(1, steps // 10)


def foundry_run(tokenizer_dir: Path, data: Path, out: Path, shape: dict, batch: int, steps: int,
                device: str, overrides: list[str]) -> list[float]:
    """`model_foundry.train` at its defaults (or with `overrides`, KEY=VALUE); tokens/s of each log
    window after the first."""
    config = {"experiment": {"name": "vs_hf_trainer", "kind": "pretraining"},
              "tokenizer": {"path": str(tokenizer_dir)},
              "data": {"train": {"path": str(data)}},
              "model": {"architecture": "gpt", **shape}, "task": {"type": "causal_lm"},
              "training": {"max_steps": steps, "batch_size": batch, "eval_interval": steps,
                           "log_interval": log_interval(steps), "device": device, "precision": "auto"}}
    model_foundry.train(config, overrides=overrides, out=out)
    with open(out / "metrics" / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [float(r["tokens_per_sec"]) for r in rows[1:]]


class Rows(torch.utils.data.Dataset):
    """The Trainer's view of the rows: the first block_size tokens; GPT-2 shifts its labels itself."""

    def __init__(self, rows: torch.Tensor, block_size: int):
        self.rows = rows[:, :block_size].contiguous()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.rows[index], "labels": self.rows[index]}


class WindowClock(transformers.TrainerCallback):
    """Tokens/s of each window of `interval` optimizer steps. On CUDA the clock waits for the device
    at window ends only (as foundry's log steps and the plain loop's do), not after every step."""

    def __init__(self, interval: int, tokens_per_step: int, device: torch.device):
        self.interval, self.tokens_per_step, self.device = interval, tokens_per_step, device
        self.rates: list[float] = []
        self.window_start = 0.0

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.window_start = self.now()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.interval == 0:
            now = self.now()
            self.rates.append(self.interval * self.tokens_per_step / (now - self.window_start))
            self.window_start = now


def cpu_keyword() -> str:
    """`use_cpu` (transformers >= 4.34, all of 5.x); `no_cuda` before it."""
    parameters = inspect.signature(transformers.TrainingArguments.__init__).parameters
    return "use_cpu" if "use_cpu" in parameters else "no_cuda"


def trainer_run(rows: torch.Tensor, out: Path, shape: dict, batch: int, vocab: int, steps: int,
                device: torch.device, precision: str | None) -> tuple[list[float], str]:
    """`transformers.Trainer` on the rows; `precision` None: its defaults (dropout 0.1, fp32), else
    dropout 0 at that precision. (tokens/s of each log window after the first, optimizer/schedule)."""
    torch.manual_seed(0)
    no_dropout = {} if precision is None else {"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=shape["block_size"], n_embd=shape["n_embd"],
                                     n_layer=shape["n_layer"], n_head=shape["n_head"],
                                     # GPT-2's 50256 lies outside this vocabulary; neither is used in training.
                                     bos_token_id=vocab - 1, eos_token_id=vocab - 1, **no_dropout)
    model = transformers.GPT2LMHeadModel(config)
    interval = log_interval(steps)
    args = transformers.TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=batch, max_steps=steps, logging_steps=interval,
        save_strategy="no", report_to=[], dataloader_num_workers=0, disable_tqdm=True,
        bf16=precision == "bf16", fp16=precision == "fp16", **{cpu_keyword(): device.type == "cpu"})
    clock = WindowClock(interval, batch * shape["block_size"], device)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(rows, shape["block_size"]),
                                   callbacks=[clock])
    expected = {None: "no", "fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    actual = str(getattr(trainer.accelerator.mixed_precision, "value", trainer.accelerator.mixed_precision))
    if actual != expected:  # accelerate keeps some state per process: check that each Trainer got its own
        raise RuntimeError(f"the Trainer would train in mixed precision {actual!r}, not {expected!r}")
    trainer.train()
    optimizer, schedule = (getattr(v, "value", v) for v in (args.optim, args.lr_scheduler_type))
    return clock.rates[1:], f"{optimizer}, lr {args.learning_rate:g} {schedule}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default 100)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all loops (default 3)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--tiny", action="store_true", help="a small GPT, to check the script quickly")
    parser.add_argument("--foundry-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting for foundry's run, as `foundry train --set` takes it (repeatable), "
                             "e.g. training.compile=true")
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be at least 2: each run needs a log window after the first")
    shape, batch, vocab = SHAPES["tiny" if args.tiny else "benchmark"]
    device = resolve_device(args.device)
    precision = resolve_precision("auto", device)
    # The plain loop reads its model shape and batch from its module: this benchmark's, with foundry's
    # model defaults spelled out (biases, no dropout), so it trains the model foundry trains.
    hot_loop.SHAPE, hot_loop.BATCH = {**shape, "bias": True, "dropout": 0.0}, batch
    precisions = {FOUNDRY: precision, TRAINER_DEFAULT: "fp32", TRAINER_FAST: precision, PLAIN: precision}
    runs: dict[str, list[list[float]]] = {loop: [] for loop in precisions}
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir, data, rows = make_data(Path(tmp), shape, batch, vocab, args.steps)
        for index in range(args.rounds):
            runs[FOUNDRY].append(foundry_run(tokenizer_dir, data, Path(tmp) / f"foundry_{index}", shape, batch,
                                             args.steps, args.device, args.foundry_set))
            rates, trainer_setup = trainer_run(rows, Path(tmp) / f"trainer_{index}", shape, batch, vocab,
                                               args.steps, device, None)
            runs[TRAINER_DEFAULT].append(rates)
            runs[TRAINER_FAST].append(trainer_run(rows, Path(tmp) / f"trainer_fast_{index}", shape, batch, vocab,
                                                  args.steps, device, precision)[0])
            runs[PLAIN].append(hot_loop.plain_run(vocab, args.steps, device, precision, False))
    print_table(runs, precisions, device, shape, batch, vocab, args, trainer_setup)


def print_table(runs: dict[str, list[list[float]]], precisions: dict[str, str], device: torch.device, shape: dict,
                batch: int, vocab: int, args: argparse.Namespace, trainer_setup: str) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"\n{device.type} ({name}), GPT {shape['n_layer']} layers x {shape['n_head']} heads x {shape['n_embd']}, "
          f"context {shape['block_size']}, batch {batch}, vocab {vocab}, {args.steps} steps x {args.rounds} rounds "
          f"(log window {log_interval(args.steps)} steps), torch {torch.__version__}, transformers "
          f"{transformers.__version__}; Trainer: {trainer_setup}; foundry: "
          f"{', '.join(args.foundry_set) or 'its defaults'}")
    per_token = TrainingFlops.of(create_model("gpt", vocab_size=vocab, **shape)).per_token(shape["block_size"])
    foundry = median_of_medians(runs[FOUNDRY])
    print(f"{'loop':24s} {'precision':>9s} {'tokens/s':>10s} {'foundry/loop':>12s} {'mfu':>7s}")
    for loop, results in runs.items():
        rate = median_of_medians(results)
        mfu = model_flops_utilisation(per_token * rate, peak_flops(device, precisions[loop]))
        shown = f"{mfu:.1%}" if mfu is not None else "-"
        print(f"{loop:24s} {precisions[loop]:>9s} {rate:10,.0f} {foundry / rate:12.2f} {shown:>7s}")
    for loop, target in TARGETS.items():
        ratio = foundry / median_of_medians(runs[loop])
        print(f"target: foundry >= {target}x {loop}: {ratio:.2f}x, {'met' if ratio >= target else 'NOT met'}")


if __name__ == "__main__":
    main()
