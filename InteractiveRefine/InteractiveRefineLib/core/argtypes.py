"""argparse types of the command lines' numbers: one wording for every command (`error: ...`, exit 2)."""
from __future__ import annotations

import argparse


def _whole(text: str, zero_ok: bool, what: str = "a whole number", note: str = "") -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0 or (n == 0 and not zero_ok):
        raise argparse.ArgumentTypeError(f"expected {what} {'>=' if zero_ok else '>'} 0{note}, got {text!r}")
    return n


def _number(text: str) -> float:
    """`text` as a float; NaN (which fails every range check) when it is not a number."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _finite(text: str, zero_ok: bool) -> float:
    v = _number(text)
    if not ((v >= 0 if zero_ok else v > 0) and v < float("inf")):  # NaN fails both
        raise argparse.ArgumentTypeError(f"expected a number {'>=' if zero_ok else '>'} 0, got {text!r}")
    return v


def non_negative_int(text: str, what: str = "a whole number", note: str = "") -> int:
    """argparse type: a whole number >= 0 (--threads, --rounds)."""
    return _whole(text, True, what, note)


def positive_int(text: str) -> int:
    """argparse type: a whole number > 0 (steps, batch sizes, intervals)."""
    return _whole(text, False)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (time budgets, intervals)."""
    return _finite(text, False)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0 (0: off, e.g. a time limit)."""
    return _finite(text, True)


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1] (a share of samples)."""
    v = _finite(text, True)
    if v > 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return v


def open_fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1 (a probability cut)."""
    v = _number(text)
    if not 0 < v < 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return v
