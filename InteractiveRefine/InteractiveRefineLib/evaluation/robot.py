"""A simulated user (robot) for evaluation: corrective scribbles from a reference label.

Each round it finds the largest mis-segmented connected region inside the box (under-segmented:
reference object the result missed -> a foreground scribble; over-segmented -> background) and draws
one stroke inside it, on one slice as a radiologist would: the slice where that region is largest,
along the region's skeleton away from its border, from its deepest point outwards, at most
`max_length_mm` long. Deterministic for a given seed.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..core.prompts import Box


@dataclass(frozen=True)
class RobotScribble:
    voxels: np.ndarray  # (n, 3) int64 image indices (k, j, i)
    label: str  # 'fg' or 'bg'
    region_voxels: int  # size of the error region it corrects
    slice_axis: int
    slice_index: int


def error_regions(pred: np.ndarray, ref: np.ndarray, box: Box):
    """(under, over) error masks restricted to the box (the only place a scribble may go)."""
    inside = box.mask(pred.shape)
    pred = np.asarray(pred, bool)
    ref = np.asarray(ref, bool)
    return ref & ~pred & inside, pred & ~ref & inside


def largest_error(pred: np.ndarray, ref: np.ndarray, box: Box):
    """(component mask, 'fg' or 'bg') of the largest connected error region in the box, or None.

    Components are face-connected (6 in 3D); voxel count decides, under-segmentation wins a tie.
    """
    best = None
    for mask, label in zip(error_regions(pred, ref, box), ("fg", "bg")):
        if not mask.any():
            continue
        comp, n = ndimage.label(mask)
        sizes = np.bincount(comp.ravel())[1:]
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[2]:
            best = (comp == k + 1, label, int(sizes[k]))
    return None if best is None else best[:2]


def _stroke(region: np.ndarray, spacing: Sequence[float], max_length_mm: float, core: float,
            rng: np.random.Generator) -> np.ndarray:
    """Pixels (m, 2) of a stroke inside a 2D region: along its skeleton, within the core, from the
    deepest point outwards (breadth first along the skeleton) until max_length_mm."""
    from skimage.morphology import skeletonize

    depth = ndimage.distance_transform_edt(region, sampling=spacing)
    deep = depth >= core * depth.max()
    skel = skeletonize(region) & deep
    if not skel.any():
        skel = deep
    cand = np.argwhere(skel & (depth >= 0.9 * depth[skel].max()))
    start = tuple(cand[rng.integers(len(cand))])
    step = float(np.mean(spacing))
    budget = max(1, int(max_length_mm / step))
    seen = {start}
    order = [start]
    queue = deque([start])
    while queue and len(order) < budget:
        p = queue.popleft()
        for dj in (-1, 0, 1):
            for di in (-1, 0, 1):
                q = (p[0] + dj, p[1] + di)
                if q in seen or not (0 <= q[0] < skel.shape[0] and 0 <= q[1] < skel.shape[1]) or not skel[q]:
                    continue
                seen.add(q)
                order.append(q)
                queue.append(q)
                if len(order) >= budget:
                    break
            if len(order) >= budget:
                break
    return np.array(order, dtype=np.int64)


def next_scribble(pred: np.ndarray, ref: np.ndarray, box: Box, spacing_kji: Sequence[float],
                  rng: np.random.Generator, max_length_mm: float = 30.0, core: float = 0.5,
                  slice_axis: Optional[int] = None) -> Optional[RobotScribble]:
    """The robot's next scribble for result `pred` against reference `ref` (full-grid masks), or None
    when nothing inside the box is wrong.

    slice_axis: the axis of the slices it draws on; default the box's axis for a 2D box, else the axis
    with the coarsest spacing (the acquisition's slices). core: the stroke keeps to pixels at least this
    fraction of the region's maximal depth from its border.
    """
    found = largest_error(pred, ref, box)
    if found is None:
        return None
    region, label = found
    axis = box.axis if box.axis is not None else (
        slice_axis if slice_axis is not None else int(np.argmax(spacing_kji)))
    other = tuple(a for a in range(3) if a != axis)
    k = int(np.argmax(region.sum(axis=other)))
    plane = np.take(region, k, axis=axis)
    spacing2 = [float(spacing_kji[a]) for a in other]
    px = _stroke(plane, spacing2, max_length_mm, core, rng)
    vox = np.insert(px, axis, k, axis=1)
    return RobotScribble(vox, label, int(region.sum()), axis, k)


def robot_rounds(session, ref: np.ndarray, rounds: int, rng: np.random.Generator) -> list:
    """Drive an InteractiveSession's current object for up to `rounds` rounds (robot scribble + supervised
    refinement each); the Dice after the start and after each round (it stops early when nothing is wrong).
    The session needs `ref` as its object's reference for the Dice."""
    dices = [session.dice()]
    for _ in range(rounds):
        stroke = next_scribble(session.mask(), ref, session.state().box, session.image.spacing_kji, rng)
        if stroke is None:
            break
        session.add_scribble(stroke.voxels, stroke.label)
        session.refine()
        dices.append(session.dice())
    return dices
