"""Write only what changed: the extent of the voxels where a new mask differs from the old one.

Rewriting a whole segment after every click is slow on large volumes and makes Slicer redraw every
slice; the bridge writes the sub-block returned here instead.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ..core.errors import PromptError

Extent = Tuple[Tuple[int, int, int], Tuple[int, int, int]]


def changed_extent(old: Optional[np.ndarray], new: np.ndarray) -> Optional[Extent]:
    """(lo, hi) in (K, J, I), hi exclusive, of the voxels where `new` differs from `old`; None if nothing
    changed. `old` None means an empty segment."""
    new = np.asarray(new, dtype=bool)
    old = np.zeros_like(new) if old is None else np.asarray(old, dtype=bool)
    if old.shape != new.shape:
        raise PromptError(f"mask shapes differ: {old.shape} and {new.shape}")
    diff = old != new
    if not diff.any():
        return None
    lo, hi = [], []
    for axis in range(diff.ndim):
        other = tuple(a for a in range(diff.ndim) if a != axis)
        idx = np.flatnonzero(diff.any(axis=other))
        lo.append(int(idx[0]))
        hi.append(int(idx[-1]) + 1)
    return tuple(lo), tuple(hi)


def crop(mask: np.ndarray, extent: Extent) -> np.ndarray:
    lo, hi = extent
    return np.asarray(mask)[tuple(slice(a, b) for a, b in zip(lo, hi))]
