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
