"""Graph-cut CRF: network probabilities + contrast-sensitive smoothness + hard constraints, by max-flow.

Energy of a binary labelling y (1 = object):

    E(y) = sum_i -log P(y_i | network) + lam * sum_{i~j, y_i != y_j} exp(-(I_i - I_j)^2 / (2 sigma^2)) / d_ij

with d_ij the physical distance of neighbours i, j divided by the finest spacing (so an in-plane
neighbour at the finest spacing has d = 1 and thick-slice neighbours are coupled more weakly).
Scribbled voxels and voxels outside the user box are clamped to their label. Solved exactly by
PyMaxflow (Boykov-Kolmogorov). Used after the network (post-processing) and inside image-specific
fine-tuning (label update), on the network grid or the native grid.
"""
from __future__ import annotations

import itertools
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import PromptError

HARD = 1e9  # capacity of a hard (unbreakable) terminal link
DEFAULT_LAMBDA = 3.0
CONNECTIVITY = {2: (4, 8), 3: (6, 10, 26)}
DEFAULT_CONNECTIVITY = {2: 8, 3: 6}


def neighbour_offsets(ndim: int, connectivity: int) -> List[Tuple[int, ...]]:
    """Half of the neighbour offsets (one per undirected edge): 2D 4 or 8; 3D 6, 10 (in-plane 8 +
    through-plane 2, axis 0 being through-plane) or 26."""
    if connectivity not in CONNECTIVITY[ndim]:
        raise ValueError(f"connectivity {connectivity} is not valid in {ndim}D; use one of {CONNECTIVITY[ndim]}")
    out = []
    for d in itertools.product((-1, 0, 1), repeat=ndim):
        if d <= (0,) * ndim:  # keep the lexicographically positive half
            continue
        if connectivity in (8, 26) or sum(map(abs, d)) == 1 or (connectivity == 10 and d[0] == 0):
            out.append(d)
    return out


def shifted_pairs(shape: Sequence[int], d: Sequence[int]):
    """Slices (src, dst) such that x[dst] is the neighbour at offset d of x[src]."""
    src, dst = [], []
    for n, k in zip(shape, d):
        if k == 0:
            src.append(slice(None))
            dst.append(slice(None))
        elif k > 0:
            src.append(slice(0, n - k))
            dst.append(slice(k, n))
        else:
            src.append(slice(-k, n))
            dst.append(slice(0, n + k))
    return tuple(src), tuple(dst)


def contrast_sigma(x: np.ndarray) -> float:
    """Default contrast scale: root mean squared difference of axis neighbours (the image's own noise +
    edge level, so the pairwise term means the same whatever the intensity units)."""
    sq = []
    for a in range(x.ndim):
        if x.shape[a] > 1:
            sq.append(float(np.mean(np.diff(x, axis=a) ** 2)))
    return math.sqrt(max(float(np.mean(sq)) if sq else 0.0, 1e-12))


def edge_weights(x: np.ndarray, spacing: Sequence[float], lam: float, sigma: float, connectivity: int):
    """[(offset, src, dst, weight array over src)] of the contrast-sensitive pairwise term."""
    unit = float(min(spacing))
    out = []
    for d in neighbour_offsets(x.ndim, connectivity):
        src, dst = shifted_pairs(x.shape, d)
        dist = math.sqrt(sum((k * s) ** 2 for k, s in zip(d, spacing))) / unit
        w = lam * np.exp(-(x[dst] - x[src]) ** 2 / (2.0 * sigma ** 2)) / dist
        out.append((d, src, dst, w))
    return out


def crf_segment(probability: np.ndarray, intensity: np.ndarray, spacing: Sequence[float], *,
                lam: float = DEFAULT_LAMBDA, sigma: Optional[float] = None, connectivity: Optional[int] = None,
                fg_seeds: Optional[np.ndarray] = None, bg_seeds: Optional[np.ndarray] = None,
                eps: float = 1e-4) -> np.ndarray:
    """Minimum-energy labelling (bool, True = object) of a 2D or 3D grid.

    Args:
        probability: P(object) per voxel from the network (any float array in [0, 1]).
        intensity: the image on the same grid (any units; `sigma` defaults to its contrast_sigma).
        spacing: physical spacing per axis (mm).
        lam: weight of the pairwise term relative to the unary (nats). 0 = threshold at 0.5.
        sigma: contrast scale in intensity units (default: contrast_sigma(intensity)).
        connectivity: 2D 4 or 8 (default 8); 3D 6 (default), 10 or 26.
        fg_seeds, bg_seeds: bool masks clamped to object / background (scribbles, outside the box).
        eps: probabilities are clipped to [eps, 1 - eps] so a confident network never gives an
            infinite cost that would override the smoothness term or another seed.
    """
    import maxflow  # PyMaxflow

    p = np.asarray(probability, dtype=np.float64)
    x = np.asarray(intensity, dtype=np.float64)
    if p.shape != x.shape or p.ndim not in (2, 3) or len(spacing) != p.ndim:
        raise ValueError(f"CRF needs a 2D/3D probability and intensity of one shape with a spacing per axis; "
                         f"got {p.shape}, {x.shape}, spacing {tuple(spacing)}")
    ndim = p.ndim
    connectivity = DEFAULT_CONNECTIVITY[ndim] if connectivity is None else int(connectivity)
    fg = np.zeros(p.shape, bool) if fg_seeds is None else np.asarray(fg_seeds, bool)
    bg = np.zeros(p.shape, bool) if bg_seeds is None else np.asarray(bg_seeds, bool)
    if (fg & bg).any():
        raise PromptError(f"{int((fg & bg).sum())} voxel(s) are clamped both to object and to background")
    p = np.clip(p, eps, 1.0 - eps)
    # Source side = object: a voxel on the sink side (background) pays its source capacity.
    cost_bg, cost_fg = -np.log1p(-p), -np.log(p)
    cost_bg[fg] = HARD
    cost_fg[bg] = HARD
    low = np.minimum(cost_bg, cost_fg)  # only the difference matters; keeps capacities small
    g = maxflow.GraphFloat()
    nodes = g.add_grid_nodes(p.shape)
    if lam > 0:
        if sigma is None:
            sigma = contrast_sigma(x)
        for d, src, _dst, w in edge_weights(x, spacing, lam, sigma, connectivity):
            full = np.zeros(p.shape)
            full[src] = w
            struct = np.zeros((3,) * ndim)
            struct[tuple(1 + k for k in d)] = 1.0
            g.add_grid_edges(nodes, weights=full, structure=struct, symmetric=True)
    g.add_grid_tedges(nodes, cost_bg - low, cost_fg - low)
    g.maxflow()
    return ~g.get_grid_segments(nodes)
