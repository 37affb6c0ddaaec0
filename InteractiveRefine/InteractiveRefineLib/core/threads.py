"""CPU threads for torch: one default for every command, `--threads N` to override.

torch's default (one thread per core) oversubscribes a loaded machine: with other jobs on the two cores
(load 3.5-6), a liver-sized 3D box took 2.8 s with 2 threads against 1.6 s with 1, and FewShotSeg on a
300-slice CT did not finish in 5 minutes with 2 threads against 44 s with 1
(benchmarks/large_volume/summary.md). The default is therefore the number of idle cores (cores minus the
1-minute load average), at least 1 and at most MAX_DEFAULT (beyond that the small networks here gain
little); --threads N overrides it.
"""
from __future__ import annotations

import os

from .argtypes import non_negative_int

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
    return non_negative_int(text, "a whole number of threads", " (0: automatic)")


THREADS_HELP = "CPU threads for torch (default 0: the idle cores, 1 to 4)"
