"""Automatic query range (`--range auto`), in two steps.

1. Component (keep_consistent_component): the network segments every query slice; look-alike tissue far from
   the organ (another organ of similar appearance, a slice far above or below) forms separate 3D components.
   The support mask, placed on the query's slice plane, says roughly where the organ sits in-plane: the
   component with the most voxels inside that (dilated) footprint is kept; if no component touches it, the
   largest one is kept.
2. Window (place_window): a window of the support organ's length, placed along the slice axis by network,
   image and position cues (below); the segmenter then segments its slices again with their chunk's support
   slice and repeats step 1. A label drawn on fewer than 3 support slices (one drawn slice, as in the panel)
   gives no length: the window's length is then estimated from the drawn cross-section (one_slice_extent).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .protocol import chunk_fractions

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


# -- where the organ lies along the slice axis (`--range auto`) -------------------------------------------------
# The network alone marks look-alike tissue on slices without the organ (heart above the liver, bowel below the
# kidneys), so its per-slice area places the organ's window badly (mean error 3-5 slices). Three cues are
# combined for each candidate window centre c (window = the support organ's length, support_extents):
#   net(c): the kept component's area summed over the window, / its maximum over c;
#   img(c): normalised cross-correlation of the support slices at 1/6, 1/2, 5/6 of the support organ with the
#           query slices at the same fractions of the window (whole network-grid slices), mean of the three;
#   pos(c): the support organ's relative position in its scan carried to the query, -((c - c_pos) / (L / 4))^2 / 2.
# score = net + IMAGE_WEIGHT img + POSITION_WEIGHT pos; the window's slices are then segmented with the support
# slice of their chunk (the protocol's chunks over the window). Weights chosen on TRAINING patients of all 5
# folds, setting 2 (leave-one-fold-out chose the same weights on every fold): 48.4 (window on the largest
# cross-section) -> 57.3, reference range 62.4 (benchmarks/fewshot_auto_range).
IMAGE_WEIGHT = 8.0
POSITION_WEIGHT = 0.1
CHUNK_FRACTIONS = tuple(chunk_fractions())  # the protocol's chunk support fractions: 1/6, 1/2, 5/6

# One drawn support slice: without a window the kept component reached onto slices without the organ (heart
# above the liver, bowel below the kidneys: 37.5% of the labelled voxels on training pairs). An organ's length
# grows with its cross-section, less than proportionally: over the 4 organs of the 12 CHAOS training and
# validation patients of InteractiveRefine's split, length L (first to last slice, mm) against the largest
# cross-section A (mm^2) fits log L = log LENGTH_C + LENGTH_POWER log sqrt(A) (liver ~176 mm, kidneys ~110-120,
# spleen ~108). The window is ONE_SLICE_SCALE times that long (its ends hold the organ's smallest cross-sections)
# and placed by place_window with the one support slice compared with the window's middle, the support slice's
# relative position in its scan, and ONE_SLICE_IMAGE_WEIGHT. Scale and weights chosen on TRAINING patients of
# all 5 folds (setting-2 per-fold models, 20 pairs without the InteractiveRefine test patients, 80 cases; every
# fold chose the same scale and image weight leaving itself out): Dice 43.3 -> 51.1 (leave-one-fold-out 50.6),
# voxels on slices without the organ 40082 -> 7001 per case; benchmarks/fewshot_auto_range/single_slice.py.
LENGTH_C = 20.51
LENGTH_POWER = 0.426
ONE_SLICE_SCALE = 0.8
ONE_SLICE_IMAGE_WEIGHT = 2.0


def _window(n: int, centre: float, extent: float) -> np.ndarray:
    keep = np.zeros(n, dtype=bool)
    lo, hi = int(np.floor(centre - extent / 2 + 0.5)), int(np.ceil(centre + extent / 2 - 0.5))
    keep[max(lo, 0):hi + 1] = True
    return keep


def _unit_rows(a: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    return a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-6)


def place_window(area: np.ndarray, query_slices: np.ndarray, support_slices, extent: float,
                 centre_fraction: float, image_weight: float = IMAGE_WEIGHT,
                 position_weight: float = POSITION_WEIGHT) -> np.ndarray:
    """Bool per query slice: the window of `extent` slices where the organ most likely lies.

    area: per-slice area of the kept prediction; query_slices (n, S, S) and support_slices (3, S, S): images on
    the network grid (z-scored per volume), the support's at CHUNK_FRACTIONS of its organ; centre_fraction:
    the support organ's centre slice / the support's number of slices."""
    n = int(area.shape[0])
    cs = np.arange(0, n, 0.5)
    net = np.array([area[_window(n, c, extent)].sum() for c in cs], dtype=float)
    net /= max(net.max(), 1.0)
    sims = _unit_rows(np.asarray(support_slices)) @ _unit_rows(np.asarray(query_slices)).T  # (3, n)
    img = np.zeros(cs.size)
    for j, fr in enumerate(CHUNK_FRACTIONS[:len(sims)] if len(sims) == 3 else (0.5,)):
        z = np.clip(np.rint(cs - extent / 2 + fr * extent).astype(int), 0, n - 1)
        img += sims[j][z] / len(sims)
    pos = -0.5 * ((cs - centre_fraction * n) / max(extent / 4, 1.0)) ** 2
    score = net + image_weight * img + position_weight * pos
    return _window(n, float(cs[int(np.argmax(score))]), extent)


def one_slice_extent(area_mm2: float, slice_mm: float) -> float:
    """The window's length in query slices for a label drawn on one support slice: ONE_SLICE_SCALE times the
    organ length expected from its drawn cross-section `area_mm2` (LENGTH_C, LENGTH_POWER); `slice_mm`: the
    query's slice spacing."""
    return ONE_SLICE_SCALE * LENGTH_C * math.sqrt(max(float(area_mm2), 0.0)) ** LENGTH_POWER / float(slice_mm)
