"""Model FLOPs utilisation (MFU): the training FLOP/s a run achieves over what its device could do.

FLOPs are estimated, not measured, the way PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT
count them, so MFU is comparable across libraries and does not reward wasted work (padding,
recomputation): per trained token, 6 FLOPs for each weight that multiplies (2 in the forward pass,
4 in the backward pass), plus, for every attention layer, 12 x width x context for the scores and
their weighted sum (full attention: causal masking is not discounted).

The peak is the device's dense datasheet FLOP/s at the precision the run trains in, for common NVIDIA
GPUs. A CPU has no datasheet figure that holds for a given thread count, so its peak is measured: a
short probe of large matrix products in the run's dtype with the process's threads, once per
machine, thread count, dtype and torch version, cached in `~/.cache/model_foundry/cpu_peak_flops.json`.
The trainer asks for the peak when it starts training (before its clock starts, so no log window
pays for the probe), not when it is built, and a process measures at most once per dtype and thread
count (a sweep's runs share it), so building a trainer neither spends a second on the probe nor
writes to the home directory. The environment variable
MODEL_FOUNDRY_CPU_PEAK_FLOPS states the CPU's peak instead (FLOP/s; 0: unknown, MFU left empty),
for a machine too busy to measure itself, and for test suites.
Elsewhere (Apple's MPS, an unlisted GPU) MFU is None.
"""
from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from model_foundry.errors import UserError
from model_foundry.models.backbones.attention import SelfAttention

CPU_PEAK_ENV = "MODEL_FOUNDRY_CPU_PEAK_FLOPS"

# Dense peaks (no 2:4 sparsity), FLOP/s, from NVIDIA's datasheets, keyed by a pattern of
# `torch.cuda.get_device_name` (whole words, so "A100" is not an "A10", nor an "RTX A1000" an A100).
# fp32 is the CUDA-core rate; tf32 applies when `torch.set_float32_matmul_precision` lets matmuls use
# it. A precision a GPU only emulates (bf16 before Ampere) is absent: its MFU is unknown.
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    r"G?H200": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},
    r"H100 PCIe": {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12},
    r"H100 NVL": {"bf16": 835e12, "fp16": 835e12, "tf32": 418e12, "fp32": 60e12},
    r"H100(?! PCIe| NVL)": {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12},  # SXM
    r"A100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    r"L40S": {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
    r"L4": {"bf16": 121e12, "fp16": 121e12, "tf32": 60e12, "fp32": 30.3e12},
    r"A10G?": {"bf16": 125e12, "fp16": 125e12, "tf32": 62.5e12, "fp32": 31.2e12},  # the A10's datasheet
    r"V100": {"fp16": 125e12, "fp32": 15.7e12},  # SXM2
    r"T4": {"fp16": 65e12, "fp32": 8.1e12},
}


@dataclass(frozen=True)
class TrainingFlops:
    """Training FLOPs per token of a model: `per_token(context)` = weights + attention x context."""

    weights: float  # 6 x the parameters that multiply
    attention: float  # 12 x the summed width of the attention layers, per position of context

    @classmethod
    def of(cls, model: nn.Module) -> TrainingFlops:
        """Count a model's multiplying weights and attention layers.

        Every parameter counts once (a tied one too) except embedding tables used only for lookups,
        which cost no multiplications; an embedding tied to the output layer does count.
        Attention is counted for our own `SelfAttention` layers only (GPT, BERT, hybrids, ELECTRA's
        two stacks); other models (recurrent, Hugging Face backbones) get the weights term alone.
        """
        linear = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
        lookup_only = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)} - linear
        weights = sum(p.numel() for p in model.parameters() if id(p) not in lookup_only)
        width = sum(m.n_embd for m in model.modules() if isinstance(m, SelfAttention))
        return cls(weights=6.0 * weights, attention=12.0 * width)

    def per_token(self, context: int) -> float:
        """FLOPs of one trained token in a sequence of `context` positions (forward and backward)."""
        return self.weights + self.attention * context


# The CPU probe: products of square matrices of each size, repeated for at least PROBE_SECONDS each.
# Both sizes, because a small product may not use every thread (oneDNN runs a 1024-square bf16
# product on one thread) and a large one may not fit the caches of a small CPU.
PROBE_SIZES = (1024, 2048)
PROBE_SECONDS = 0.3
# A probe whose threads had less than this share of their cores ran beside other work: its figure
# is too low, so it serves this run but is not cached.
IDLE_SHARE = 0.8


class MatmulProbe(NamedTuple):
    flops: float  # the best FLOP/s over the probe's sizes
    idle: bool  # the largest product kept every thread on its core: nothing else competed


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak FLOP/s at `precision`, or None where it is not known."""
    if device.type == "cpu":
        stated = os.environ.get(CPU_PEAK_ENV)
        return measured_once(precision, torch.get_num_threads()) if stated is None else stated_peak(stated)
    if device.type != "cuda":
        return None
    if precision == "fp32" and torch.get_float32_matmul_precision() != "highest":
        precision = "tf32"
    return gpu_peak_flops(torch.cuda.get_device_name(device), precision)


def gpu_peak_flops(name: str, precision: str) -> float | None:
    """The table's peak for a GPU by its name, None for a GPU or precision it does not list."""
    for pattern, peaks in GPU_PEAK_FLOPS.items():
        if re.search(rf"\b{pattern}\b", name):
            return peaks.get(precision)
    return None


def stated_peak(value: str) -> float | None:
    """The peak MODEL_FOUNDRY_CPU_PEAK_FLOPS states: FLOP/s, or None for 0 (unknown)."""
    try:
        peak = float(value)
    except ValueError:
        peak = math.nan
    if not (math.isfinite(peak) and peak >= 0.0):
        raise UserError(f"{CPU_PEAK_ENV} is {value!r}; it must be the CPU's peak in FLOP/s (for example 2e12), "
                        "or 0 for unknown (MFU left empty). Unset it to measure the peak.")
    return peak or None


@functools.cache
def measured_once(precision: str, threads: int) -> float:
    """`cpu_peak_flops` once per process for a precision and thread count: a probe measured beside other
    work is not cached on disk, and a second run in the process (a sweep, the quickstart) must not
    measure again."""
    return cpu_peak_flops(precision)


def cpu_peak_flops(precision: str, cache: Path | None = None) -> float:
    """This CPU's matrix-product FLOP/s in the run's dtype with the current thread count, from the
    cache or measured (about a second) and cached when nothing else was running."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else torch.float32
    cache = cache or Path.home() / ".cache" / "model_foundry" / "cpu_peak_flops.json"  # beside the quickstart's data
    key = (f"{cpu_name()}|{os.cpu_count()} cores|{torch.get_num_threads()} threads|{dtype}|torch {torch.__version__}"
           f"|probe {'+'.join(map(str, PROBE_SIZES))}")
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    if isinstance(known.get(key), (int, float)):
        return float(known[key])
    probe = measure_matmul_flops(dtype)
    if probe.idle:
        known[key] = probe.flops
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            partial = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
            partial.write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
            partial.replace(cache)
        except OSError:
            pass  # a read-only home: measure again next time
    return probe.flops


def measure_matmul_flops(dtype: torch.dtype, sizes: tuple[int, ...] = PROBE_SIZES,
                         seconds: float = PROBE_SECONDS) -> MatmulProbe:
    """The best FLOP/s of square matrix products of each size in `dtype` (about `seconds` each, after a
    warm-up), and whether the largest one had its threads' cores to itself: the process's CPU time
    kept pace with wall time x threads."""
    generator = torch.Generator().manual_seed(0)
    flops, share = 0.0, 1.0
    for size in sizes:
        a, b = (torch.randn(size, size, generator=generator).to(dtype) for _ in range(2))
        torch.mm(a, b)
        best, spent = float("inf"), 0.0
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        while spent < seconds:
            start = time.perf_counter()
            torch.mm(a, b)
            elapsed = time.perf_counter() - start
            best, spent = min(best, elapsed), spent + elapsed
        share = (time.process_time() - cpu_start) / ((time.perf_counter() - wall_start) * torch.get_num_threads())
        flops = max(flops, 2.0 * size ** 3 / best)
    return MatmulProbe(flops, idle=share >= IDLE_SHARE)


def cpu_name() -> str:
    """The processor's model name (Linux's /proc/cpuinfo), else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_flops_utilisation(flops_per_second: float, peak: float | None) -> float | None:
    """Achieved over peak FLOP/s, a fraction; None when the peak is unknown."""
    return flops_per_second / peak if peak else None
