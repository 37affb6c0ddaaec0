"""User prompts as plain data in voxel index space (K, J, I)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .errors import PromptError


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in voxel indices (K, J, I): `lo` inclusive, `hi` exclusive.

    `axis` None means a 3D box; an axis (0, 1 or 2) means a 2D box on the slice `lo[axis]` of that
    axis (then `hi[axis] == lo[axis] + 1`).
    """

    lo: Tuple[int, int, int]
    hi: Tuple[int, int, int]
    axis: Optional[int] = None

    @property
    def dim(self) -> int:
        return 3 if self.axis is None else 2

    @property
    def size(self) -> Tuple[int, int, int]:
        return tuple(h - l for l, h in zip(self.lo, self.hi))

    @property
    def slices(self) -> Tuple[slice, slice, slice]:
        return tuple(slice(l, h) for l, h in zip(self.lo, self.hi))

    @property
    def slice_index(self) -> Optional[int]:
        return None if self.axis is None else self.lo[self.axis]

    def in_plane_axes(self) -> Tuple[int, ...]:
        return tuple(a for a in range(3) if a != self.axis)

    def mask(self, shape: Sequence[int]) -> np.ndarray:
        """The box as a boolean mask on an image grid of `shape` (clipped to it)."""
        inside = np.zeros(tuple(shape), bool)
        inside[self.slices] = True
        return inside


def whole_indices(values, what: str = "voxel index") -> Tuple[int, ...]:
    """Voxel indices as ints; PromptError for NaN, Inf, strings or non-integers. The one rule of every
    prompt (box bounds, scribble voxels, slice indices, label ids): never silently round or truncate."""
    try:
        arr = np.asarray(values)
    except ValueError:  # ragged
        raise PromptError(f"{what} must be whole numbers; got {values!r}") from None
    if arr.dtype.kind not in "iuf":  # strings, booleans, objects: a wrong field, not an index
        raise PromptError(f"{what} must be whole numbers; got {values!r}")
    arr = arr.astype(float).ravel()
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"{what} must be finite whole numbers; got {values!r}")
    if not np.all(arr == np.round(arr)):
        raise PromptError(f"{what} must be whole numbers (voxel indices, not millimetres); got {values!r}")
    return tuple(int(v) for v in arr)


def make_box(lo: Sequence[int], hi: Sequence[int], axis: Optional[int] = None) -> Box:
    """Build a box from bounds (hi exclusive); for a 2D box the slice is lo[axis].

    Bounds must be whole voxel indices, as for scribbles (12.7 is refused, not truncated to 12)."""
    lo = whole_indices(lo, "box lower bound")
    hi = whole_indices(hi, "box upper bound")
    if axis is not None:
        axis = whole_indices([axis], "box axis")[0]
    if len(lo) != 3 or len(hi) != 3:
        raise PromptError(f"a box needs three lower and three upper bounds; got {lo}, {hi}")
    if axis is not None:
        if axis not in (0, 1, 2):
            raise PromptError(f"2D box axis must be 0, 1 or 2; got {axis}")
        hi = tuple(lo[a] + 1 if a == axis else hi[a] for a in range(3))
    return Box(lo, hi, axis)


def validate_box(box: Box, shape: Sequence[int]) -> Box:
    """Clip `box` to an image of `shape`; raise PromptError if it is empty, outside, or too small.

    A box partly outside the image is clipped (users often drag past the edge). Each in-box axis needs
    at least 2 voxels: a single voxel or a line holds no object extent to segment.
    """
    if len(shape) != 3:
        raise PromptError(f"boxes apply to 3D images; got image shape {tuple(shape)}")
    box = Box(whole_indices(box.lo, "box lower bound"), whole_indices(box.hi, "box upper bound"), box.axis)
    if box.axis is not None:
        if box.axis not in (0, 1, 2):
            raise PromptError(f"2D box axis must be 0, 1 or 2; got {box.axis}")
        if box.hi[box.axis] - box.lo[box.axis] != 1:
            raise PromptError(f"a 2D box lies on one slice: its extent along axis {box.axis} must be 1, "
                              f"got lo {box.lo}, hi {box.hi}")
    if any(h <= l for l, h in zip(box.lo, box.hi)):
        raise PromptError(f"box is empty: lo {box.lo}, hi {box.hi}")
    lo = tuple(max(0, l) for l in box.lo)
    hi = tuple(min(int(s), h) for s, h in zip(shape, box.hi))
    if any(h <= l for l, h in zip(lo, hi)):
        raise PromptError(f"box lo {box.lo} hi {box.hi} lies outside the image of shape {tuple(shape)}")
    clipped = Box(lo, hi, box.axis)
    axes = clipped.in_plane_axes()
    small = [a for a in axes if clipped.size[a] < 2]
    if small:
        what = "a single voxel" if len(small) == len(axes) else ("a line" if len(small) == len(axes) - 1
                                                                   else "too thin")
        raise PromptError(f"box {clipped.lo}-{clipped.hi} is {what} inside the image (axis {small} has "
                          f"extent < 2 voxels); draw a box around the object")
    return clipped


def box_from_mask(mask: np.ndarray, axis: Optional[int] = None, slice_index: Optional[int] = None) -> Box:
    """Tight bounding box of a binary mask: 3D (axis None) or 2D on `slice_index` of `axis`."""
    mask = np.asarray(mask, dtype=bool)
    if axis is not None:
        if slice_index is None:
            raise PromptError("a 2D box from a mask needs the slice index")
        plane = np.take(mask, slice_index, axis=axis)
        if not plane.any():
            raise PromptError(f"the mask is empty on slice {slice_index} of axis {axis}")
        idx = np.nonzero(plane)
        lo2 = [int(i.min()) for i in idx]
        hi2 = [int(i.max()) + 1 for i in idx]
        lo, hi = lo2[:], hi2[:]
        lo.insert(axis, slice_index)
        hi.insert(axis, slice_index + 1)
        return Box(tuple(lo), tuple(hi), axis)
    if not mask.any():
        raise PromptError("the mask is empty: no box can be derived")
    idx = np.nonzero(mask)
    return Box(tuple(int(i.min()) for i in idx), tuple(int(i.max()) + 1 for i in idx), None)


def expand_box(box: Box, shape: Sequence[int], fraction: float = 0.1, minimum: int = 2) -> Box:
    """`box` grown on each side of each in-box axis by `fraction` of its size (at least `minimum` voxels),
    clipped to the image: room for a refinement to grow an object that fills its bounding box."""
    lo, hi = list(box.lo), list(box.hi)
    for a in box.in_plane_axes():
        pad = max(int(minimum), int(np.ceil(fraction * (hi[a] - lo[a]))))
        lo[a], hi[a] = max(0, lo[a] - pad), min(int(shape[a]), hi[a] + pad)
    return Box(tuple(lo), tuple(hi), box.axis)


def main_object(mask: np.ndarray, min_fraction: float = 0.01) -> np.ndarray:
    """`mask` without stray fragments: 3D connected components smaller than `min_fraction` of the
    largest. Reference labels carry a few 1-4 voxel specks that would stretch a box far beyond the
    organ a user would draw it around."""
    from scipy import ndimage

    mask = np.asarray(mask, dtype=bool)
    components, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    keep = sizes >= min_fraction * sizes.max()
    keep[0] = False
    return keep[components]


def jitter_box(box: Box, amount: int, shape: Sequence[int], rng: np.random.Generator) -> Box:
    """Move each in-plane bound of `box` by a uniform integer in [-amount, amount], kept valid."""
    if amount <= 0:
        return box
    lo, hi = list(box.lo), list(box.hi)
    for a in box.in_plane_axes():
        lo[a] = int(np.clip(lo[a] + rng.integers(-amount, amount + 1), 0, shape[a] - 2))
        hi[a] = int(np.clip(hi[a] + rng.integers(-amount, amount + 1), lo[a] + 2, shape[a]))
    return Box(tuple(lo), tuple(hi), box.axis)
