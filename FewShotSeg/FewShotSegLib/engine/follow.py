"""Few-shot to find the organ, same-scan propagation to follow it ("follow").

Across patients the network marks look-alike tissue; within one scan, propagation from a correct slice is far
stronger (same-scan propagation: 75-85 Dice against 50-60 across patients). So the middle slice of a few-shot
prediction becomes the annotation of a same-scan propagation through the query itself (propagate.py: with a
box_segmenter its box network carried slice to slice, as `segment --follow` does; the automatic range with its
stops, or a given range). Chosen on TRAINING
patients (4 seeded pairs per fold, the panel's case: one drawn support slice, automatic window): mean of the 4
organs 52.17 -> 60.15 (liver 53.8 -> 79.0, left kidney 49.1 -> 44.3); the largest predicted cross-section as
the seed gave 48.15 (benchmarks/fewshot_auto_range/seed_propagation.md); with propagation's regrowth stop
since, 60.47 (60.74 before its ceiling). Other seed slices (the most confident, ...) and the seed
redone by the box network were no better (seed_rules.md, seed_box_redo.md). After exemplar adaptation the base
network follows, not the adapted copy (every path: `segment`, `evaluate`, the panel; on the same 80 training cases
with adaptation, 64.54 vs 64.00: follow_adapted.md). On the CHAOS protocol, with the
fold's own model only (protocol-clean): reference range 59.46 -> 62.23, automatic range 49.68 -> 49.85
(benchmarks/fewshot_chaos_s2_follow).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from InteractiveRefineLib.core.image_io import Image

from .propagate import propagate
from .segment import FewShotSegmenter


def seed_slice(mask: np.ndarray, axis: int = 0) -> Optional[int]:
    """The middle one of the slices (along `axis`) where `mask` is set; None for an empty mask."""
    on = np.flatnonzero(np.asarray(mask, bool).any(axis=tuple(a for a in range(3) if a != axis)))
    return int(on[len(on) // 2]) if on.size else None


def follow(segmenter: FewShotSegmenter, image: Image, mask: np.ndarray, axis: int = 0,
           slices: Optional[Tuple[int, int]] = None, box_segmenter=None, progress=None, cancel=None,
           **propagate_options) -> np.ndarray:
    """`mask` (a few-shot prediction of one organ on `image`) redone by same-scan propagation from its middle
    slice; `slices` (first, last + 1): propagate through exactly that range (it must hold the seed), else the
    automatic range; `propagate_options`: propagate's own (mode, stops, box exemplar, 3D pass). With the automatic
    range there is no 3D pass unless `box3d_views` is given (follow's range was chosen without it; propagation's
    took it in the sixteenth session). An empty mask is returned as it is."""
    mask = np.asarray(mask, bool)
    along = np.moveaxis(mask, axis, 0)
    lo, hi = (0, len(along)) if slices is None else (int(slices[0]), int(slices[1]))
    z = seed_slice(along[lo:hi])
    if z is None:
        return mask.copy()
    z += lo
    label = np.zeros(mask.shape, np.uint8)
    np.moveaxis(label, axis, 0)[z] = along[z]
    if slices is None and "box3d_views" not in propagate_options:
        propagate_options = dict(propagate_options, box3d_views=None)
    return propagate(segmenter, image, label, z, 1, axis, slices, box_segmenter=box_segmenter,
                     progress=progress, cancel=cancel, **propagate_options).labels == 1
