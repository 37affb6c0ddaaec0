"""Label-free pseudo-objects for class-agnostic box training: regions that follow real image edges.

A Felzenszwalb superpixel of any slice is an "object"; so is a superpixel merged with its neighbours
(non-convex), and the neighbours of a superpixel without it (a ring around a cavity, an object with a
hole). The network then learns "the region whose boundary the box encloses", not organ appearance.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

KINDS = ("single", "merged", "ring")


def superpixel_map(slice_: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Superpixel labels (1..n) of a 2D slice at a random scale (coarse and fine objects)."""
    x = np.asarray(slice_, dtype=np.float64)
    lo, hi = np.percentile(x, [0.5, 99.5])
    x = np.clip((x - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    scale = float(np.exp(rng.uniform(np.log(40), np.log(400))))
    return felzenszwalb(x, scale=scale, sigma=0.8, min_size=int(rng.integers(20, 80))) + 1


def _neighbours(seg: np.ndarray, region: np.ndarray) -> np.ndarray:
    ring = ndimage.binary_dilation(region, iterations=2) & ~region
    return np.unique(seg[ring])


def kind_probabilities(ring_share: float = 0.2) -> np.ndarray:
    """Chances of KINDS: `ring_share` for rings, the rest split 5:3 between single and merged (0.2: 0.5, 0.3, 0.2,
    the recipe of sessions 8-14)."""
    return np.round([(1 - ring_share) * 5 / 8, (1 - ring_share) * 3 / 8, ring_share], 12)


def pseudo_object(slice_: np.ndarray, rng: np.random.Generator, min_pixels: int = 40,
                  max_fraction: float = 0.2, kind: Optional[str] = None,
                  ring_share: float = 0.2) -> Optional[np.ndarray]:
    """A boolean mask of one pseudo-object in `slice_`, or None when the slice offers none.

    The object stays off the slice border (a box must enclose it) and is one connected piece.
    """
    seg = superpixel_map(slice_, rng)
    h, w = seg.shape
    border = np.unique(np.concatenate([seg[0], seg[-1], seg[:, 0], seg[:, -1]]))
    ids, counts = np.unique(seg, return_counts=True)
    limit = max_fraction * seg.size
    ok = [i for i, c in zip(ids, counts) if min_pixels <= c <= limit and i not in border]
    if not ok:
        return None
    kind = kind or KINDS[int(rng.choice(3, p=kind_probabilities(ring_share)))]
    seed = seg == ok[int(rng.integers(len(ok)))]
    if kind == "single":
        return seed
    nbrs = [n for n in _neighbours(seg, seed) if n not in border]
    if not nbrs:
        return seed
    if kind == "merged":
        pick = rng.choice(nbrs, size=min(len(nbrs), int(rng.integers(1, 3))), replace=False)
        obj = seed | np.isin(seg, pick)
    else:  # ring: the seed's neighbours around it, the seed itself a hole
        obj = np.isin(seg, nbrs) & ~seed
    lab, n = ndimage.label(obj)
    if n == 0:
        return None
    if n > 1:  # keep the largest connected piece
        sizes = ndimage.sum(obj, lab, range(1, n + 1))
        obj = lab == 1 + int(np.argmax(sizes))
    if obj.sum() < min_pixels or obj.sum() > limit:
        return seed
    return obj
