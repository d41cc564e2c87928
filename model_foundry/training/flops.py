"""Model FLOPs utilisation (MFU): the training FLOP/s a run achieves over what its device could do.

FLOPs are estimated, not measured, the way PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT
count them, so MFU is comparable across libraries and does not reward wasted work (padding,
recomputation): per trained token, 6 FLOPs for each weight that multiplies (2 in the forward pass,
4 in the backward pass), plus, for every attention layer, 12 x width x context for the scores and
their weighted sum (full attention: causal masking is not discounted).

The peak is the device's dense datasheet FLOP/s at the precision the run trains in. It is known for
common NVIDIA GPUs only; elsewhere (the CPU, Apple's MPS, an unlisted GPU) MFU is None.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from model_foundry.models.backbones.attention import SelfAttention

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


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak FLOP/s at `precision`, or None where it is not known."""
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


def model_flops_utilisation(flops_per_second: float, peak: float | None) -> float | None:
    """Achieved over peak FLOP/s, a fraction; None when the peak is unknown."""
    return flops_per_second / peak if peak else None
