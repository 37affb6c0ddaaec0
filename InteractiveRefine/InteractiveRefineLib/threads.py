"""CPU threads for torch: one default for every command, `--threads N` to override.

torch's default (one thread per core) oversubscribes a loaded machine: with another job on one of two
cores, commands ran 2-5x slower than with one thread (issue 14; benchmarks/large_volume/summary.md has
the measurement). The default is the number of idle cores (cores minus the 1-minute load), at least 1
and at most MAX_DEFAULT (beyond that the small networks here gain little).
"""
from __future__ import annotations

import argparse
import os

MAX_DEFAULT = 4


def default_threads() -> int:
    cores = os.cpu_count() or 1
    try:
        busy = int(round(os.getloadavg()[0]))
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0
    return max(1, min(MAX_DEFAULT, cores - busy))


def set_threads(n: int = 0) -> int:
    """Use `n` torch threads (0: default_threads()); returns the number set."""
    import torch

    n = int(n) if n and n > 0 else default_threads()
    torch.set_num_threads(n)
    return n


def threads_arg(text: str) -> int:
    """argparse type of --threads: a whole number >= 0 (0: the default)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads >= 0 (0: automatic), got {text!r}")
    return n


THREADS_HELP = "CPU threads for torch (default 0: the idle cores, 1 to 4)"
