"""Compute device choice: CUDA when present, CPU otherwise, or forced."""
from __future__ import annotations

import logging

import torch

from .errors import AdaptiveSegError

log = logging.getLogger(__name__)

CHOICES = ("auto", "cuda", "cpu")
#: torch.OutOfMemoryError exists from torch 2.5; torch.cuda.OutOfMemoryError (the same class there) before.
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


def choose_device(preference: str = "auto") -> torch.device:
    """'auto' -> CUDA if available else CPU; 'cpu' forces the CPU; 'cuda' falls back to CPU with a warning."""
    pref = (preference or "auto").lower()
    if pref not in CHOICES and not pref.startswith("cuda:"):
        raise AdaptiveSegError(f"unknown device {preference!r}; use one of {CHOICES}")
    if pref == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if pref == "auto" else pref)
    if pref != "auto":
        log.warning("CUDA was requested but is not available; using the CPU")
    return torch.device("cpu")


PRECISIONS = ("auto", "fp32")


def cpu_bf16_supported() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX) for oneDNN's convolutions;
    without it bfloat16 is emulated and slower than float32."""
    try:  # private torch functions (oneDNN's own check accepts AVX512 without BF16, which emulates it)
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        return bool(native and torch.backends.mkldnn.is_available())
    except (AttributeError, RuntimeError):  # absent in some builds: float32
        return False


def bf16_applies(bf16_cpu: bool, device) -> bool:
    """Whether bfloat16 asked for the CPU (use_bf16_cpu) applies on `device` (a torch.device or its name): the
    box networks compute in bfloat16 on the CPU only."""
    return bool(bf16_cpu) and torch.device(device).type == "cpu"


def use_bf16_cpu(precision: str) -> bool:
    """'auto': the box networks' CPU inference in bfloat16 where the CPU has it natively; 'fp32': never."""
    if not isinstance(precision, str) or precision.lower() not in PRECISIONS:
        raise AdaptiveSegError(f"unknown precision {precision!r}; use one of {PRECISIONS}")
    return precision.lower() == "auto" and cpu_bf16_supported()
