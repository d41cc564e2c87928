"""Device and numeric precision: `auto` picks what the hardware does well."""
from __future__ import annotations

import contextlib

import torch

from model_foundry.errors import UserError


def resolve_device(name: str) -> torch.device:
    """`auto` prefers CUDA, then Apple's MPS, then the CPU; asking for a missing device is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise UserError(f"training.device is {name!r} but this machine has no {name.upper()} device; "
                        "use device: auto or cpu.")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """bf16 only pays on CPUs with AVX512-BF16 or AMX; elsewhere it is emulated and slower than fp32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cuda_has_native_bf16(device: torch.device) -> bool:
    """bf16 runs natively on NVIDIA GPUs of compute capability 8.0 (Ampere) and newer, and on ROCm.

    `torch.cuda.is_bf16_supported()` also says yes where bf16 is only emulated (a T4, a V100), which is
    slower than fp16; this asks about native support only.
    """
    if torch.version.hip:
        return True
    index = device.index if device.index is not None else torch.cuda.current_device()
    return torch.cuda.get_device_capability(index)[0] >= 8


def resolve_precision(name: str, device: torch.device) -> str:
    """`auto`: bf16 where the hardware runs it natively (GPUs since Ampere, CPUs with AVX512-BF16 or AMX),
    fp16 with loss scaling on older CUDA GPUs, fp32 elsewhere (other CPUs, Apple's MPS)."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise UserError("training.precision fp16 needs a GPU (CPU autocast supports bf16); "
                            "use precision: bf16 or auto.")
        return name
    if device.type == "cuda":
        return "bf16" if cuda_has_native_bf16(device) else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def precision_note(name: str, device: torch.device, resolved: str) -> str | None:
    """What a run should say about the precision `auto` chose, when it is a surprise: fp16 on a GPU
    without native bf16. The trainer prints it once at the start of a run; evaluation and scoring,
    which also resolve `auto`, do not repeat it."""
    if name == "auto" and resolved == "fp16":
        return (f"training.precision auto: {torch.cuda.get_device_name(device)} has no native bf16, so training "
                "runs in fp16 with loss scaling (set precision: fp32 to avoid fp16).")
    return None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The autocast context for a forward pass (a no-op in fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Loss scaling is needed for fp16 only; a disabled scaler keeps the loop uniform."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")
