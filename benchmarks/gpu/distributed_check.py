"""Part 3 of benchmarks/gpu/check.sh: the DDP and FSDP2 code paths on one device, against one plain process.

With one GPU, `foundry train --nproc 1` starts one worker, and the package treats a world of one
process as a process alone (`process_group` yields `Workers()` when WORLD_SIZE is 1): no process
group, no DDP, no FSDP, no NCCL. So this script joins a process group of one itself, the way
`training.distributed.process_group` does (NCCL on CUDA plus a gloo group for host values, gloo on
the CPU), and hands the trainer a `Workers` that does not count as alone: the model is wrapped in
DDP or sharded with FSDP2 and every collective of the multi-process path runs (device and host
all-reduces, object gathers and broadcasts, FSDP's full state-dict gathering for checkpoints).

Each case is trained in this one process three times, from the same config: plain (`Workers()`),
DDP and FSDP; per-step losses (log_interval 1) and final weights are compared with the plain run.
The FSDP checkpoints are then loaded in one process (`load_model`, `evaluate_run`).

    python -m torch.distributed.run --standalone --nproc-per-node 1 benchmarks/gpu/distributed_check.py \
        --work DIR [--steps 60] [--cases gpt_fp32,gpt_bf16,bert_fp32,classifier_fp32] [--csv FILE]
    python benchmarks/gpu/distributed_check.py compare RUN_A RUN_B     # two finished runs
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import yaml

import model_foundry
import model_foundry.training.run as run_module
from model_foundry.training.distributed import Workers, worker_device

LINES = ["the cat sat on the mat and the dog sat on the log .",
         "a bird sang in the tree while the sun rose over the hill .",
         "she sells sea shells by the sea shore every summer morning .",
         "to be or not to be , that is the question we ask ."]
SENTIMENT = [("a good film", 1), ("great fun", 1), ("i loved it", 1), ("a bad film", 0), ("awful fun", 0),
             ("i hated it", 0)] * 12
# Loose bounds for the printed verdict: one device, one process, so only kernel nondeterminism
# (atomics in embedding backward, reduction order) separates the runs.
# FSDP computes bf16/fp16 with gathered low-precision weights (its MixedPrecisionPolicy) where one
# process casts under autocast, so those runs agree to the low precision only.
LOSS_RTOL = {"fp32": 1e-4, "bf16": 2e-2, "fp16": 2e-2}
WEIGHT_ATOL = {"fp32": 1e-3, "bf16": 5e-2, "fp16": 5e-2}


@dataclass(frozen=True)
class GroupOfOne(Workers):
    """A real process group of one process that the trainer treats as several: DDP / FSDP wrap the
    model and every collective runs."""

    @property
    def alone(self) -> bool:
        return False

    def wrap(self, model, strategy, precision="fp32"):
        wrapped = super().wrap(model, strategy, precision)
        print(f"  [{strategy}] training through {type(wrapped).__module__}.{type(wrapped).__name__}",
              file=sys.__stdout__, flush=True)
        return wrapped


CURRENT: list[Workers] = [Workers()]


@contextlib.contextmanager
def given_workers(device_name: str, clean_exits: tuple = ()):
    """Stands in for `training.distributed.process_group`: the group joined once in `main`."""
    yield CURRENT[0]


def join_group() -> GroupOfOne:
    """What `process_group` does for WORLD_SIZE > 1, for a world of one."""
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
    if os.environ["WORLD_SIZE"] != "1":
        raise SystemExit("distributed_check.py runs as one process (--nproc-per-node 1)")
    device = worker_device("auto")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    host_group = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    print(f"joined a process group of 1: backend {dist.get_backend()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
          + f", host group {'gloo (separate)' if device.type == 'cuda' else 'the default one'}")
    return GroupOfOne(rank=0, world_size=1, device=device, host_group=host_group)


# ---- configs ----------------------------------------------------------------------------------------------
def base_config(work: Path, arch: str, steps: int, precision: str, **sections) -> dict:
    corpus = work / "corpus.txt"
    if not corpus.is_file():
        corpus.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    config = {
        "experiment": {"name": f"dist_{arch}", "seed": 7, "output_dir": str(work / "experiments")},
        "tokenizer": {"type": "char", "vocab_size": 64},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.1},
        "model": {"architecture": arch, "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64, "dropout": 0.0},
        "training": {"max_steps": steps, "batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 3e-3,
                     "warmup_steps": 3, "eval_interval": steps, "eval_iters": 2, "log_interval": 1,
                     "device": "auto", "precision": precision},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def case_config(name: str, work: Path, steps: int) -> dict:
    arch, _, precision = name.partition("_")
    precision, _, compiled = precision.partition("_")
    if arch == "gpt":
        config = base_config(work, "gpt", steps, precision)
    elif arch == "bert":
        config = base_config(work, "bert", steps, precision, training={"gradient_accumulation_steps": 1})
    elif arch == "classifier":
        data = work / "sentiment.tsv"
        data.write_text("sentence\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in SENTIMENT) + "\n", encoding="utf-8")
        config = base_config(work, "gpt", steps, precision,
                             experiment={"name": "dist_classifier", "kind": "finetuning"},
                             task={"type": "sequence_classification", "head_dropout": 0.0},
                             training={"batch_size": 2, "gradient_accumulation_steps": 3},
                             data={"train": {"path": str(data)}, "val": {"path": str(data)}, "format": "tsv",
                                   "text_column": "sentence", "label_column": "label"})
        config["data"].pop("val_fraction")
    else:
        raise SystemExit(f"unknown case {name!r}")
    if compiled in ("compile", "graphs"):  # graphs: compiled to CUDA graphs (compile_mode reduce-overhead)
        config["training"]["compile"] = True
        config["training"]["compile_mode"] = "reduce-overhead" if compiled == "graphs" else "default"
    return config


# ---- comparing runs ---------------------------------------------------------------------------------------
def train_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics" / "train.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def compare_runs(one: Path, two: Path) -> dict:
    """Per-step losses (max relative difference) and final weights (max absolute difference)."""
    from safetensors.torch import load_file

    rows_one, rows_two = train_rows(one), train_rows(two)
    same_steps = [r["step"] for r in rows_one] == [r["step"] for r in rows_two]
    losses = [(float(a["loss"]), float(b["loss"])) for a, b in zip(rows_one, rows_two)]
    rel = max((abs(a - b) / max(abs(a), 1e-12) for a, b in losses), default=math.nan)
    first_step_off = next((int(r["step"]) for r, (a, b) in zip(rows_one, losses) if a != b), None)
    w_one = load_file(one / "checkpoints" / "last" / "model.safetensors")
    w_two = load_file(two / "checkpoints" / "last" / "model.safetensors")
    worst, worst_name = 0.0, ""
    for name, tensor in w_one.items():
        if name not in w_two:
            return {"steps_match": same_steps, "max_rel_loss_diff": rel, "max_abs_weight_diff": math.inf,
                    "worst_weight": f"missing {name}", "rows": len(rows_two), "first_differing_step": first_step_off}
        diff = (w_two[name].float() - tensor.float()).abs().max().item() if tensor.numel() else 0.0
        if diff > worst:
            worst, worst_name = diff, name
    extra = sorted(set(w_two) - set(w_one))
    return {"steps_match": same_steps and len(rows_one) == len(rows_two), "rows": len(rows_two),
            "max_rel_loss_diff": rel, "first_differing_step": first_step_off,
            "max_abs_weight_diff": worst,
            "worst_weight": worst_name + (f" (+{len(extra)} extra keys)" if extra else "")}


def val_loss(run_dir: Path) -> float | None:
    import json

    path = run_dir / "results.json"
    if not path.is_file():
        return None
    results = json.loads(path.read_text())
    return (results.get("val") or {}).get("loss")


def verdict(precision: str, comparison: dict) -> str:
    ok = (comparison["steps_match"] and comparison["max_rel_loss_diff"] <= LOSS_RTOL[precision]
          and comparison["max_abs_weight_diff"] <= WEIGHT_ATOL[precision])
    return "ok" if ok else "DIFFERENT"


def print_comparison(label: str, precision: str, comparison: dict) -> None:
    print(f"  {label:22s} rows {comparison['rows']:3d} steps match {comparison['steps_match']!s:5s} | "
          f"max rel loss diff {comparison['max_rel_loss_diff']:.2e} (first differing step "
          f"{comparison['first_differing_step']}) | max abs weight diff {comparison['max_abs_weight_diff']:.2e} "
          f"({comparison['worst_weight']}) -> {verdict(precision, comparison)} "
          f"(bounds {LOSS_RTOL[precision]:g} / {WEIGHT_ATOL[precision]:g})")


# ---- main ---------------------------------------------------------------------------------------------------
def train_once(config: dict, out: Path, workers: Workers) -> float:
    """Train; the run's own output (a line per step) goes to OUT.log, whose tail is shown on failure."""
    CURRENT[0] = workers
    start = time.perf_counter()
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        try:
            model_foundry.train(config, out=out)
        except BaseException:
            traceback.print_exc()
            raise
        finally:
            handle.flush()
    return time.perf_counter() - start


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def check_fsdp_checkpoint(single: Path, fsdp: Path) -> None:
    """The FSDP run's checkpoint in one process: load_model and evaluate_run, against the plain run."""
    from model_foundry.inference.evaluate import evaluate_run

    loaded = model_foundry.load_model(fsdp, checkpoint="last")
    reference = model_foundry.load_model(single, checkpoint="last")
    state, ref_state = loaded.state_dict(), reference.state_dict()
    worst = max((state[k].float() - v.float()).abs().max().item() for k, v in ref_state.items() if v.numel())
    print(f"  fsdp checkpoint: load_model({fsdp.name}, 'last') -> {type(loaded).__name__}, "
          f"{sum(p.numel() for p in loaded.parameters()):,} parameters, same keys {state.keys() == ref_state.keys()}, "
          f"max abs diff to the plain run {worst:.2e}")
    ev_fsdp, ev_single = (evaluate_run(str(d), split="val", checkpoint="last") for d in (fsdp, single))
    print(f"  evaluate_run val loss: fsdp {ev_fsdp['loss']:.6f}, plain {ev_single['loss']:.6f}, "
          f"rel diff {abs(ev_fsdp['loss'] - ev_single['loss']) / ev_single['loss']:.2e}")


def run_cases(args: argparse.Namespace) -> int:
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    run_module.process_group = given_workers
    group = join_group()
    rows, failures = [], 0
    csv_handle = open(args.csv, "w", newline="") if args.csv else None
    writer = None
    try:
        for case in args.cases.split(","):
            config = case_config(case, work, args.steps)
            precision = config["training"]["precision"]
            (work / "configs").mkdir(exist_ok=True)
            (work / "configs" / f"{case}.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
            task = config.get("task", {}).get("type", "")
            print(f"\n== {case}: {config['model']['architecture']} {task}"
                  f" {precision}, {args.steps} steps, batch {config['training']['batch_size']} x "
                  f"{config['training']['gradient_accumulation_steps']}", flush=True)
            runs = {}
            for strategy in ("single", "ddp", "fsdp"):
                out = work / f"{case}_{strategy}"
                config["training"]["distributed"] = "ddp" if strategy == "single" else strategy
                try:
                    seconds = train_once(config, out, Workers() if strategy == "single" else group)
                    runs[strategy] = out
                    print(f"  trained {strategy:6s} in {seconds:5.1f} s, val loss {val_loss(out)}", flush=True)
                except Exception as error:  # noqa: BLE001 - report and go on with the other runs
                    failures += 1
                    print(f"  {strategy} FAILED ({type(error).__name__}: {error}); the end of {out.name}.log:\n"
                          + tail(out.parent / f"{out.name}.log"), flush=True)
                    rows.append({"case": case, "strategy": strategy, "precision": precision, "status": "failed"})
            CURRENT[0] = Workers()
            if "single" not in runs:
                continue
            for strategy in ("ddp", "fsdp"):
                if strategy not in runs:
                    continue
                comparison = compare_runs(runs["single"], runs[strategy])
                print_comparison(f"{strategy} vs single", precision, comparison)
                rows.append({"case": case, "strategy": strategy, "precision": precision,
                             "status": verdict(precision, comparison), **comparison,
                             "val_loss": val_loss(runs[strategy]), "val_loss_single": val_loss(runs["single"])})
            if "fsdp" in runs and case in args.load_check.split(","):
                try:
                    check_fsdp_checkpoint(runs["single"], runs["fsdp"])
                except Exception:  # noqa: BLE001
                    failures += 1
                    print("  loading the fsdp checkpoint FAILED:")
                    traceback.print_exc()
            if csv_handle is not None:
                columns = ["case", "strategy", "precision", "status", "rows", "steps_match", "max_rel_loss_diff",
                           "first_differing_step", "max_abs_weight_diff", "worst_weight", "val_loss",
                           "val_loss_single"]
                if writer is None:
                    writer = csv.DictWriter(csv_handle, columns, extrasaction="ignore")
                    writer.writeheader()
                writer.writerows(r for r in rows if r["case"] == case)
                csv_handle.flush()
    finally:
        if csv_handle is not None:
            csv_handle.close()
        dist.barrier()
        dist.destroy_process_group()
    bad = [r for r in rows if r["status"] != "ok"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} comparisons within bounds"
          + (": " + ", ".join(f"{r['case']}/{r['strategy']} {r['status']}" for r in bad) if bad else ""))
    return 1 if failures or bad else 0


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        parser = argparse.ArgumentParser(description="compare two finished runs step by step")
        parser.add_argument("command")
        parser.add_argument("one", type=Path)
        parser.add_argument("two", type=Path)
        parser.add_argument("--precision", default="fp32", choices=sorted(LOSS_RTOL))
        args = parser.parse_args()
        comparison = compare_runs(args.one, args.two)
        print_comparison(f"{args.two.name} vs {args.one.name}", args.precision, comparison)
        return 0 if verdict(args.precision, comparison) == "ok" else 1
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="a scratch directory for the runs")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cases", default="gpt_fp32,gpt_bf16,bert_fp32,classifier_fp32",
                        help="comma-separated: ARCH_PRECISION[_compile], ARCH in gpt, bert, classifier")
    parser.add_argument("--load-check", default="gpt_fp32", help="cases whose fsdp checkpoint is loaded back")
    parser.add_argument("--csv", help="write the comparisons here")
    return run_cases(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
