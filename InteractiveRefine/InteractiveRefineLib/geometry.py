"""Crop a box (+ margin) out of an image, resample it to the network grid, and paste results back.

All indices are in numpy order (K, J, I). Resampling uses the voxel-centre convention: network voxel o
of a region of L image voxels resampled to N samples sits at image index lo + (o + 0.5) * L / N - 0.5,
so cropping and pasting back are exact inverses up to interpolation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from .prompts import Box


@dataclass(frozen=True)
class CropSpec:
    """Where a network input comes from: an image region and the grid it is resampled to.

    region_lo/region_hi: the crop in image indices (K, J, I), hi exclusive, inside the image.
    axis: None for a 3D crop; for a 2D crop the slice axis (the region has extent 1 there).
    out_shape: the network grid, (H, W) in 2D or (D, H, W) in 3D.
    box: the (clipped) user box; only voxels inside it receive the prediction.
    """

    region_lo: Tuple[int, int, int]
    region_hi: Tuple[int, int, int]
    axis: Optional[int]
    out_shape: Tuple[int, ...]
    box: Box

    @property
    def region_slices(self) -> Tuple[slice, slice, slice]:
        return tuple(slice(l, h) for l, h in zip(self.region_lo, self.region_hi))

    @property
    def box_in_region(self) -> Tuple[slice, slice, slice]:
        """The user box as slices of the region (K, J, I)."""
        return tuple(slice(b - r, e - r) for b, e, r in zip(self.box.lo, self.box.hi, self.region_lo))

    @property
    def region_shape(self) -> Tuple[int, ...]:
        """Region size along the resampled axes (the slice axis dropped in 2D)."""
        return tuple(h - l for a, (l, h) in enumerate(zip(self.region_lo, self.region_hi)) if a != self.axis)


def margin_voxels(margin_mm: float, spacing_kji: Sequence[float]) -> Tuple[int, int, int]:
    """A margin in mm as a whole number of voxels per axis (at least 1 where margin_mm > 0)."""
    return tuple(int(math.ceil(margin_mm / s)) if margin_mm > 0 else 0 for s in spacing_kji)


def plan_crop(box: Box, image_shape: Sequence[int], spacing_kji: Sequence[float], margin_mm: float = 10.0,
              size2d: Tuple[int, int] = (96, 96), size3d: int = 48,
              depth_range: Tuple[int, int] = (8, 48)) -> CropSpec:
    """Crop = box + margin (mm), clipped to the image; network grid fixed in 2D, spacing-aware in 3D.

    In 3D the in-plane axes (J, I) are resampled to `size3d`; the slice axis K keeps a depth such
    that its spacing is never finer than the native one nor the in-plane output spacing (thick
    slices are not interpolated into fake detail), clipped to `depth_range`.
    """
    m = margin_voxels(margin_mm, spacing_kji)
    lo, hi = [], []
    for a in range(3):
        if a == box.axis:
            lo.append(box.lo[a])
            hi.append(box.hi[a])
        else:
            lo.append(max(0, box.lo[a] - m[a]))
            hi.append(min(int(image_shape[a]), box.hi[a] + m[a]))
    if box.axis is not None:
        out_shape = tuple(int(s) for s in size2d)
    else:
        extent = [(h - l) * s for l, h, s in zip(lo, hi, spacing_kji)]
        inplane_out = max(extent[1], extent[2]) / size3d
        target_z = max(spacing_kji[0], inplane_out)
        depth = int(np.clip(round(extent[0] / target_z), depth_range[0], depth_range[1]))
        out_shape = (depth, size3d, size3d)
    return CropSpec(tuple(lo), tuple(hi), box.axis, out_shape, box)


def _region(array: np.ndarray, spec: CropSpec) -> np.ndarray:
    sub = array[spec.region_slices]
    return sub if spec.axis is None else np.take(sub, 0, axis=spec.axis)


def _scale(n_from: Sequence[int], n_to: Sequence[int]):
    scale = np.array([f / t for f, t in zip(n_from, n_to)], dtype=float)
    return scale, 0.5 * scale - 0.5


def extract(array: np.ndarray, spec: CropSpec, order: int = 1) -> np.ndarray:
    """The region of `array` resampled to spec.out_shape (float32)."""
    sub = _region(array, spec).astype(np.float32, copy=False)
    scale, offset = _scale(sub.shape, spec.out_shape)
    return ndimage.affine_transform(sub, scale, offset, output_shape=spec.out_shape, order=order,
                                    mode="nearest", prefilter=False)


def paste(values: np.ndarray, spec: CropSpec, image_shape: Sequence[int], order: int = 1,
          out: Optional[np.ndarray] = None) -> np.ndarray:
    """Resample network-grid `values` back onto the image grid; zero outside the user box."""
    if out is None:
        out = np.zeros(tuple(image_shape), dtype=np.float32)
    region_shape = spec.region_shape
    scale, offset = _scale(spec.out_shape, region_shape)
    back = ndimage.affine_transform(values.astype(np.float32, copy=False), scale, offset,
                                    output_shape=region_shape, order=order, mode="nearest", prefilter=False)
    if spec.axis is not None:
        back = np.expand_dims(back, spec.axis)
    rel = spec.box_in_region
    out[spec.region_slices][rel] = back[rel]
    return out


def normalize(crop: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Per-crop intensity normalisation: clip to percentiles [low, high], then zero mean, unit std."""
    lo, hi = np.percentile(crop, [low, high])
    x = np.clip(crop, lo, hi).astype(np.float32)
    std = float(x.std())
    return (x - float(x.mean())) / (std if std > 1e-6 else 1.0)


def ijk_to_lps_matrix(spacing: Sequence[float], origin: Sequence[float], direction) -> np.ndarray:
    """4x4 matrix from (i, j, k) voxel indices to LPS mm (ITK/NIfTI-reader convention)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, dtype=float).reshape(3, 3) * np.asarray(spacing, dtype=float)[None, :]
    m[:3, 3] = np.asarray(origin, dtype=float)
    return m


def ijk_to_ras_matrix(spacing: Sequence[float], origin: Sequence[float], direction) -> np.ndarray:
    """4x4 matrix from (i, j, k) voxel indices to RAS mm (3D Slicer's convention): LPS with x, y negated."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps_matrix(spacing, origin, direction)
