"""Volumes as stacks of network-sized 2D slices, and back.

A volume is cut along one array axis (0 = K, axial for an axial scan). Each slice is padded to a square
field of view in mm (so a non-square or anisotropic slice keeps its shape) and resized to S x S, the
network grid. Support and query volumes of different size, spacing or modality meet on this grid, which
is how "different size" works without a separate resampling step. Intensities are normalised per volume
(percentile clip, zero mean, unit variance), as in InteractiveRefine.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from InteractiveRefineLib.core.errors import ImageError, PromptError
from InteractiveRefineLib.core.geometry import normalize
from InteractiveRefineLib.core.image_io import Image

NETWORK_SIZE = 128


@dataclass(frozen=True)
class SliceGrid:
    """How native slices (rows, cols) map onto the S x S network grid: pad (before, after) per axis, then resize."""

    axis: int
    rows: int
    cols: int
    pad_rows: Tuple[int, int]
    pad_cols: Tuple[int, int]
    size: int

    @property
    def padded(self) -> Tuple[int, int]:
        return self.rows + sum(self.pad_rows), self.cols + sum(self.pad_cols)


def check_axis(axis: int) -> int:
    if axis not in (0, 1, 2):
        raise PromptError(f"slice axis must be 0, 1 or 2 (array axes K, J, I); got {axis}")
    return int(axis)


def slice_grid(image: Image, axis: int = 0, size: int = NETWORK_SIZE) -> SliceGrid:
    """Pad plan giving each slice a square field of view (in mm) before resizing to size x size."""
    axis = check_axis(axis)
    shape = [s for a, s in enumerate(image.shape) if a != axis]
    spacing = [s for a, s in enumerate(image.spacing_kji) if a != axis]
    extent = [n * sp for n, sp in zip(shape, spacing)]
    side = max(extent)
    pads = []
    for n, sp in zip(shape, spacing):
        total = int(round(side / sp)) - n
        total = max(total, 0)
        pads.append((total // 2, total - total // 2))
    return SliceGrid(axis, shape[0], shape[1], pads[0], pads[1], size)


def _move(array: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(array, axis, 0)


def normalized_volume(image: Image) -> np.ndarray:
    a = np.asarray(image.array, dtype=np.float32)
    if not np.isfinite(a).all():
        raise ImageError(f"image contains NaN or Inf values ({int((~np.isfinite(a)).sum())} voxels); "
                         "fix or mask them before segmenting")
    return normalize(a)


def to_network(stack: np.ndarray, grid: SliceGrid, mode: str = "bilinear") -> torch.Tensor:
    """(n, rows, cols) native slices -> (n, 1, S, S) float tensor on the network grid.

    Images are padded with their minimum (background); masks (mode 'area' or 'nearest') with 0.
    """
    x = torch.as_tensor(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    fill = float(x.min()) if mode == "bilinear" and x.numel() else 0.0
    x = F.pad(x, (grid.pad_cols[0], grid.pad_cols[1], grid.pad_rows[0], grid.pad_rows[1]), value=fill)
    kw = {"align_corners": False} if mode == "bilinear" else {}
    return F.interpolate(x, size=(grid.size, grid.size), mode=mode, **kw)


def from_network(prob: torch.Tensor, grid: SliceGrid) -> np.ndarray:
    """(n, S, S) probabilities on the network grid -> (n, rows, cols) on the native slice grid (bilinear)."""
    x = F.interpolate(prob[:, None].float(), size=grid.padded, mode="bilinear", align_corners=False)[:, 0]
    r0, c0 = grid.pad_rows[0], grid.pad_cols[0]
    return x[:, r0:r0 + grid.rows, c0:c0 + grid.cols].cpu().numpy()


def image_slices(image: Image, axis: int = 0, size: int = NETWORK_SIZE) -> Tuple[torch.Tensor, SliceGrid]:
    """All slices of a normalised volume on the network grid: (n_slices, 1, S, S) and the grid."""
    grid = slice_grid(image, axis, size)
    return to_network(_move(normalized_volume(image), grid.axis), grid), grid


def volume_from_slices(prob_slices: np.ndarray, grid: SliceGrid) -> np.ndarray:
    """(n_slices, rows, cols) -> the (K, J, I) array with the slice axis put back."""
    return np.moveaxis(prob_slices, 0, grid.axis)
