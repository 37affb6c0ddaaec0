"""argparse types of the command lines' numbers: one wording for every command (`error: ...`, exit 2)."""
from __future__ import annotations

import argparse


def non_negative_int(text: str, what: str = "a whole number", note: str = "") -> int:
    """argparse type: a whole number >= 0 (--threads, --rounds)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected {what} >= 0{note}, got {text!r}")
    return n


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (steps, batch sizes, intervals)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n <= 0:
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, got {text!r}")
    return n


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (time budgets, intervals)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 < v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return v


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (0: off, e.g. a time limit)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (0 <= v < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return v
