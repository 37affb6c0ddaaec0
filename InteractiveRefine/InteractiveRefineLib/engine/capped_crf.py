"""The graph-cut CRF on at most `max_voxels` nodes, whatever the crop size.

Max-flow needs ~340 bytes per node (PyMaxflow grid, 6 neighbours), so a liver-sized box on a 512 x 512 x
300 CT (12 M voxels) took 11 GB and 51 s at native resolution. Above the cap the cut runs on a coarser
grid of the same region (finest axes coarsened first, so thick slices are not coarsened further), and the
labels are interpolated back (linear, threshold 0.5: a smooth boundary at native resolution). Scribbled
voxels are mapped point by point, so a thin scribble never vanishes on the coarse grid; the caller clamps
them again at native resolution.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from .crf import crf_segment

MAX_CRF_VOXELS = 1_000_000  # ~0.35 GB of max-flow graph, ~1.5 s; see benchmarks/large_volume/summary.md
BYTES_PER_CRF_VOXEL = 340


def coarse_shape(shape: Sequence[int], spacing: Sequence[float], max_voxels: int) -> Tuple[int, ...]:
    """The largest grid of the region with at most `max_voxels` voxels, reached by coarsening the finest
    axes first (a common target spacing t: each axis gets spacing max(native, t))."""
    shape = tuple(int(n) for n in shape)
    if int(np.prod(shape, dtype=np.int64)) <= max_voxels:
        return shape
    extent = [n * s for n, s in zip(shape, spacing)]

    def grid(t):
        return tuple(max(1, min(n, math.ceil(e / max(s, t)))) for n, e, s in zip(shape, extent, spacing))
    lo, hi = min(spacing), max(extent)
    for _ in range(60):  # bisection on the target spacing
        mid = 0.5 * (lo + hi)
        if int(np.prod(grid(mid), dtype=np.int64)) > max_voxels:
            lo = mid
        else:
            hi = mid
    return grid(hi)


def _resample(a: np.ndarray, out_shape: Sequence[int], order: int) -> np.ndarray:
    """Voxel-centre resampling (as geometry.to_grid) of `a` to `out_shape`."""
    scale = np.array([f / t for f, t in zip(a.shape, out_shape)], dtype=float)
    return ndimage.affine_transform(a, scale, 0.5 * scale - 0.5, output_shape=tuple(out_shape), order=order,
                                    mode="nearest", prefilter=False)


def _axis_weights(n_from: int, n_to: int):
    """Linear interpolation of one axis (voxel-centre convention, edges clamped): (i0, i1, w1)."""
    pos = np.clip((np.arange(n_to) + 0.5) * n_from / n_to - 0.5, 0, n_from - 1)
    i0 = np.floor(pos).astype(np.int64)
    return i0, np.minimum(i0 + 1, n_from - 1), (pos - i0).astype(np.float32)


def _interp_matrix(n_from: int, n_to: int) -> np.ndarray:
    """(n_from, n_to) matrix of the linear interpolation of one axis: x @ M resamples the last axis."""
    i0, i1, w = _axis_weights(n_from, n_to)
    m = np.zeros((n_from, n_to), np.float32)
    cols = np.arange(n_to)
    np.add.at(m, (i0, cols), 1 - w)
    np.add.at(m, (i1, cols), w)
    return m


def upsample_labels(lab: np.ndarray, out_shape: Sequence[int], slab: int = 8) -> np.ndarray:
    """Bool labels on `out_shape` from coarse labels: linear interpolation >= 0.5, as an order-1
    affine_transform would give, but separable (in-plane axes as small matrix products) and slab by slab
    along the first axis: a whole 512 x 512 x 300 image in about a second, float temporaries of one slab."""
    a = lab.astype(np.float32)
    out = np.empty(tuple(out_shape), bool)
    i0, i1, w = _axis_weights(a.shape[0], int(out_shape[0]))
    mats = [_interp_matrix(a.shape[ax], int(out_shape[ax])) for ax in range(1, a.ndim)]
    for start in range(0, out.shape[0], slab):
        sl = slice(start, min(start + slab, out.shape[0]))
        ww = w[sl].reshape((-1,) + (1,) * (a.ndim - 1))
        part = a[i0[sl]] * (1 - ww) + a[i1[sl]] * ww  # coarse in-plane: small
        n = part.shape[0]
        if a.ndim == 3:  # rows, then columns, each one 2D product (stacked matmul is 6x slower)
            t = np.ascontiguousarray(part.transpose(0, 2, 1)).reshape(-1, part.shape[1]) @ mats[0]
            part = np.ascontiguousarray(t.reshape(n, part.shape[2], -1).transpose(0, 2, 1))
        cols = part.reshape(-1, part.shape[-1]) @ mats[-1]
        out[sl] = cols.reshape((n,) + tuple(out_shape[1:])) >= 0.5
    return out


def _points(mask: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
    """Each True voxel of `mask` mapped to its nearest coarse voxel (a bool mask on `out_shape`)."""
    out = np.zeros(tuple(out_shape), bool)
    if not mask.any():  # the usual case for the background scribbles inside a huge box: skip the scan
        return out
    idx = np.nonzero(mask)
    if idx[0].size:
        coarse = tuple(np.clip(np.rint((i + 0.5) * o / n - 0.5).astype(np.int64), 0, o - 1)
                       for i, n, o in zip(idx, mask.shape, out_shape))
        out[coarse] = True
    return out


def capped_crf(probability: np.ndarray, intensity: np.ndarray, spacing: Sequence[float], *,
               inside: np.ndarray, fg_seeds: np.ndarray, bg_seeds: np.ndarray,
               max_voxels: int = MAX_CRF_VOXELS, **crf_kw) -> np.ndarray:
    """crf.crf_segment on a grid of at most `max_voxels` voxels; bool labels on the grid of `intensity`.

    probability: P(object) on any grid of the same region (e.g. the network's), resampled straight to the
    grid of the cut (never through the full native grid: that alone took a second on a liver box).
    inside: the user box on the intensity grid (outside is background); fg_seeds / bg_seeds: scribbles
    (bg_seeds may include the outside of the box). Other keywords go to crf_segment.
    """
    native = tuple(intensity.shape)
    shape = coarse_shape(native, spacing, max_voxels)
    p = probability.astype(np.float32, copy=False)
    p = p if p.shape == shape else _resample(p, shape, 1)
    if shape == native:
        return crf_segment(p, intensity, spacing, fg_seeds=fg_seeds, bg_seeds=bg_seeds, **crf_kw)
    c_spacing = [s * n / o for s, n, o in zip(spacing, native, shape)]
    x = _resample(intensity.astype(np.float32, copy=False), shape, 1)
    out_box = _resample(inside.astype(np.uint8), shape, 0) == 0
    fg = _points(fg_seeds & inside, shape)
    bg = (_points(bg_seeds & inside, shape) | out_box) & ~fg
    lab = crf_segment(p, x, c_spacing, fg_seeds=fg, bg_seeds=bg, **crf_kw)
    return upsample_labels(lab, native)


def crf_bytes(shape: Sequence[int], max_voxels: int = MAX_CRF_VOXELS) -> int:
    """Peak bytes of the max-flow graph of capped_crf on a region of `shape`."""
    return BYTES_PER_CRF_VOXEL * min(int(np.prod(shape, dtype=np.int64)), int(max_voxels))
