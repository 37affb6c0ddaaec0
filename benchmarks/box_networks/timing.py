"""Shared pieces of this folder's latency scripts: the evaluation structures they time, and a median time."""
import time
from collections import defaultdict

import numpy as np

from InteractiveRefineLib.training.box_sources import load_sources


def eval_structures(hip: int, per_group: int):
    """(volume, mask) of each labelled structure (20 voxels at least) of the evaluation volumes
    (box_sources.py "eval"; `hip` held-out hippocampus subjects), at most `per_group` volumes per group."""
    seen = defaultdict(int)
    for v in load_sources("eval", limit=hip):
        seen[v.group] += 1
        if seen[v.group] > per_group:
            continue
        for label in v.label_ids:
            m = v.labels == label
            if m.sum() >= 20:
                yield v, m


def median_seconds(run, repeats: int) -> float:
    """Median wall time of `repeats` calls of `run` after one warm-up call (one-off allocations per shape)."""
    run()
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        t.append(time.perf_counter() - t0)
    return float(np.median(t))
