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
              depth_range: Tuple[int, int] = (8, 48), slicewise: bool = False,
              through_margin: bool = False) -> CropSpec:
    """Crop = box + margin (mm), clipped to the image; network grid fixed in 2D, spacing-aware in 3D.

    In 3D the in-plane axes (J, I) are resampled to `size3d`; the slice axis K keeps a depth such
    that its spacing is never finer than the native one nor the in-plane output spacing (thick
    slices are not interpolated into fake detail), clipped to `depth_range`. `slicewise` (a 2D
    network run per slice): no margin through-plane (unless `through_margin`: the multi-view network
    slices the crop along the other axes too, and those planes need the margin) and the native slices,
    at most depth_range[1].
    """
    m = margin_voxels(margin_mm, spacing_kji)
    lo, hi = [], []
    for a in range(3):
        if a == box.axis or (slicewise and a == 0 and not through_margin):
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
        target_z = spacing_kji[0] if slicewise else max(spacing_kji[0], inplane_out)
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
    return to_grid(_region(array, spec), spec, order)


def native_region(array: np.ndarray, spec: CropSpec) -> np.ndarray:
    """The crop region of an image-grid array, without resampling (slice axis dropped in 2D)."""
    return _region(array, spec)


def to_grid(region: np.ndarray, spec: CropSpec, order: int = 1) -> np.ndarray:
    """A native-region array (slice axis dropped in 2D) resampled to spec.out_shape (float32)."""
    sub = region.astype(np.float32, copy=False)
    scale, offset = _scale(sub.shape, spec.out_shape)
    return ndimage.affine_transform(sub, scale, offset, output_shape=spec.out_shape, order=order,
                                    mode="nearest", prefilter=False)


def to_region(values: np.ndarray, spec: CropSpec, order: int = 1) -> np.ndarray:
    """Network-grid `values` resampled onto the native crop region (slice axis dropped in 2D)."""
    scale, offset = _scale(spec.out_shape, spec.region_shape)
    return ndimage.affine_transform(values.astype(np.float32, copy=False), scale, offset,
                                    output_shape=spec.region_shape, order=order, mode="nearest",
                                    prefilter=False)


def region_box_mask(spec: CropSpec) -> np.ndarray:
    """True on the user box inside the native crop region (slice axis dropped in 2D)."""
    inside = np.zeros(tuple(h - l for l, h in zip(spec.region_lo, spec.region_hi)), dtype=bool)
    inside[spec.box_in_region] = True
    return inside if spec.axis is None else np.take(inside, 0, axis=spec.axis)


def paste_region(region: np.ndarray, spec: CropSpec, image_shape: Sequence[int],
                 out: Optional[np.ndarray] = None, dtype=np.float32) -> np.ndarray:
    """Put a native-region array (as from to_region) onto the image grid; zero outside the user box."""
    if out is None:
        out = np.zeros(tuple(image_shape), dtype=dtype)
    if spec.axis is not None:
        region = np.expand_dims(region, spec.axis)
    rel = spec.box_in_region
    out[spec.region_slices][rel] = region[rel]
    return out


def paste(values: np.ndarray, spec: CropSpec, image_shape: Sequence[int], order: int = 1,
          out: Optional[np.ndarray] = None) -> np.ndarray:
    """Resample network-grid `values` back onto the image grid; zero outside the user box."""
    return paste_region(to_region(values, spec, order), spec, image_shape, out)


def region_voxels(voxels: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Image voxel indices (n, 3) as indices of the native crop region (slice axis dropped in 2D)."""
    rel = np.asarray(voxels, dtype=np.int64).reshape(-1, 3) - np.asarray(spec.region_lo)
    return rel if spec.axis is None else np.delete(rel, spec.axis, axis=1)


def grid_voxels(voxels: np.ndarray, spec: CropSpec) -> np.ndarray:
    """Image voxel indices (n, 3) mapped to the nearest voxel of the network grid (n, 2 or 3).

    Points are mapped one by one (not resampled as an image), so a thin scribble never vanishes on a
    coarser grid; the inverse of the voxel-centre convention of `extract`.
    """
    rel = region_voxels(voxels, spec).astype(float)
    n_from = np.asarray(spec.region_shape, dtype=float)
    n_to = np.asarray(spec.out_shape, dtype=float)
    grid = np.rint((rel + 0.5) * n_to / n_from - 0.5).astype(np.int64)
    return np.clip(grid, 0, n_to.astype(np.int64) - 1)


def grid_spacing(spec: CropSpec, spacing_kji: Sequence[float]) -> Tuple[float, ...]:
    """Physical spacing (mm) of the network grid of `spec` (slice axis dropped in 2D)."""
    native = [s for a, s in enumerate(spacing_kji) if a != spec.axis]
    return tuple(float(s) * r / o for s, r, o in zip(native, spec.region_shape, spec.out_shape))


def native_spacing(spec: CropSpec, spacing_kji: Sequence[float]) -> Tuple[float, ...]:
    """Spacing (mm) of the native crop region's axes (slice axis dropped in 2D)."""
    return tuple(float(s) for a, s in enumerate(spacing_kji) if a != spec.axis)


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
