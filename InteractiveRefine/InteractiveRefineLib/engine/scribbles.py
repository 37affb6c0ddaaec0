"""Foreground / background scribbles: voxel sets in image index space (K, J, I), hard constraints."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Tuple

import numpy as np

from ..core.errors import PromptError
from ..core.geometry import CropSpec, grid_voxels, region_voxels
from ..core.prompts import Box

LABELS = ("fg", "bg")


def _empty() -> np.ndarray:
    return np.zeros((0, 3), dtype=np.int64)


def as_voxels(voxels) -> np.ndarray:
    """Voxel indices as an (n, 3) int64 array; PromptError when they are not whole numbers or empty."""
    arr = np.asarray(voxels)
    if arr.size == 0:
        raise PromptError("the scribble is empty: it holds no voxel")
    if arr.ndim == 1 and arr.size == 3:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise PromptError(f"a scribble is a list of (k, j, i) voxel indices; got an array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise PromptError("scribble voxel indices must be finite numbers")
    if not np.all(arr == np.round(arr)):
        raise PromptError("scribble voxel indices must be whole numbers (voxel indices, not millimetres)")
    return np.unique(arr.astype(np.int64), axis=0)


def kept_in_box(fg: np.ndarray, bg: np.ndarray, box: Box) -> Tuple[np.ndarray, np.ndarray]:
    """The scribble masks a session takes from painted ones: inside the box (on a 2D box's slice), and not
    marked both foreground and background."""
    inside = box.mask(fg.shape)
    both = fg & bg
    return fg & inside & ~both, bg & inside & ~both


def check_in_box(voxels: np.ndarray, box: Box, shape: Sequence[int]) -> None:
    """PromptError naming the first offending voxel if any voxel lies outside the image or the box."""
    shape = np.asarray(shape)
    outside_image = np.any((voxels < 0) | (voxels >= shape), axis=1)
    if outside_image.any():
        v = tuple(int(c) for c in voxels[np.argmax(outside_image)])
        raise PromptError(f"{int(outside_image.sum())} scribble voxel(s) lie outside the image of shape "
                          f"{tuple(int(s) for s in shape)}, e.g. {v}")
    outside_box = np.any((voxels < np.asarray(box.lo)) | (voxels >= np.asarray(box.hi)), axis=1)
    if outside_box.any():
        v = tuple(int(c) for c in voxels[np.argmax(outside_box)])
        where = "box" if box.axis is None else f"box (slice {box.slice_index} of axis {box.axis})"
        raise PromptError(f"{int(outside_box.sum())} scribble voxel(s) lie outside the {where} "
                          f"{box.lo}-{box.hi}, e.g. {v}; outside the box is background already")


@dataclass(frozen=True)
class Scribbles:
    """All scribbles of one object: foreground and background voxel sets (each (n, 3) int64, unique)."""

    fg: np.ndarray = field(default_factory=_empty)
    bg: np.ndarray = field(default_factory=_empty)

    @property
    def count(self) -> Tuple[int, int]:
        return len(self.fg), len(self.bg)

    @property
    def empty(self) -> bool:
        return len(self.fg) == 0 and len(self.bg) == 0

    def added(self, voxels, label: str, box: Box, shape: Sequence[int]) -> "Scribbles":
        """A copy with `voxels` added to `label` ('fg' or 'bg'), validated against the image and the box.

        A voxel already scribbled with the other label is refused (PromptError): which one the user meant
        is ambiguous; undo the earlier scribble instead.
        """
        if label not in LABELS:
            raise PromptError(f"scribble label must be 'fg' or 'bg'; got {label!r}")
        vox = as_voxels(voxels)
        check_in_box(vox, box, shape)
        other = self.bg if label == "fg" else self.fg
        if len(other):
            clash = rows_in(vox, other)
            if clash.any():
                v = tuple(int(c) for c in vox[np.argmax(clash)])
                raise PromptError(f"{int(clash.sum())} voxel(s) of this {label} scribble are already scribbled "
                                  f"{'bg' if label == 'fg' else 'fg'}, e.g. {v}; undo that scribble first")
        mine = self.fg if label == "fg" else self.bg
        merged = np.unique(np.concatenate([mine, vox]), axis=0)
        return Scribbles(merged, self.bg) if label == "fg" else Scribbles(self.fg, merged)

    def masks(self, shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        """(fg, bg) boolean masks on an image grid of `shape`."""
        return _mask(self.fg, shape), _mask(self.bg, shape)


def rows_in(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bool per row of `a`: the row occurs in `b`."""
    bset = {tuple(r) for r in b.tolist()}
    return np.array([tuple(r) in bset for r in a.tolist()], dtype=bool)


def _mask(voxels: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    m = np.zeros(tuple(shape), dtype=bool)
    if len(voxels):
        m[tuple(voxels.T)] = True
    return m


def grid_masks(points_fg: np.ndarray, points_bg: np.ndarray, shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """(fg, bg) masks on a 2D/3D grid from point indices already on it; a grid voxel hit by both labels
    (two scribbles resampled onto one coarse voxel) is left unconstrained rather than guessed."""
    fg = _mask(points_fg, shape)
    bg = _mask(points_bg, shape)
    both = fg & bg
    return fg & ~both, bg & ~both


def region_masks(scribbles: Scribbles, spec: CropSpec) -> Tuple[np.ndarray, np.ndarray]:
    """(fg, bg) masks on the native crop region of `spec` (slice axis dropped in 2D)."""
    return grid_masks(region_voxels(scribbles.fg, spec), region_voxels(scribbles.bg, spec), spec.region_shape)


def network_masks(scribbles: Scribbles, spec: CropSpec) -> Tuple[np.ndarray, np.ndarray]:
    """(fg, bg) masks on the network grid of `spec` (each voxel mapped to its nearest grid voxel)."""
    return grid_masks(grid_voxels(scribbles.fg, spec), grid_voxels(scribbles.bg, spec), spec.out_shape)
