"""Automatic query range: keep the 3D connected component consistent with the support position.

The network segments every query slice; look-alike tissue far from the organ (another organ of similar
appearance, a slice far above or below) forms separate 3D components. The support mask, placed on the
query's slice plane, says roughly where the organ sits in-plane: the component with the most voxels inside
that (dilated) footprint is kept; if no component touches it, the largest one is kept.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

FOOTPRINT_DILATION = 0.05  # fraction of the slice size added around the support footprint


def keep_consistent_component(mask: np.ndarray, footprint: np.ndarray, axis: int = 0) -> np.ndarray:
    """mask (K, J, I) bool; footprint: in-plane bool map of the support mask on the query slice grid."""
    mask = np.asarray(mask, dtype=bool)
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    r = max(1, int(round(FOOTPRINT_DILATION * max(footprint.shape))))
    fp = ndimage.binary_dilation(footprint, iterations=r) if footprint.any() else footprint
    fp3 = np.expand_dims(fp, axis)
    inside = ndimage.sum(mask & fp3, lab, range(1, n + 1))
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    best = int(np.argmax(inside)) if inside.max() > 0 else int(np.argmax(sizes))
    return lab == best + 1
