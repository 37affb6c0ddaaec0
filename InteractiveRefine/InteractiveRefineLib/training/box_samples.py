"""Training samples for the class-agnostic 2D box network (also run slice by slice in 3D boxes).

Each sample is (network input (C, H, W), target (H, W)) for one box on one slice:
- "tight": a labelled structure's own box on one of its slices (what a 2D box prompt looks like);
- "slab": one slice of a structure's 3D box, the box being the 3D box's in-plane extent (what the
  network sees inside a 3D box run slice by slice: loose on end slices, possibly empty);
- "pseudo": a label-free pseudo-object (pseudo_objects.py) of any training slice;
- "union" (a share of tight and slab samples): a structure together with 1-3 structures touching it, one
  object made of parts that look different (a kidney's cortex, medulla and sinus; a brain lobe's parcels),
  which must fill its box although no single part does.
Boxes are jittered, margins random, intensities transformed widely (MR sequences, CT windows).
The target is the object inside the box: outside it nothing is ever predicted.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from ..core.geometry import native_region, normalize, to_grid
from ..core.prompts import Box, validate_box
from ..engine.inference import plan_for, stack_input
from .augment import augment_geometry
from .box_sources import Volume
from .pseudo_objects import pseudo_object

MIN_AREA = 20  # voxels of a structure's slice to count as a tight-box sample


def augment_intensity_wide(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random window, monotone curve, gamma, inversion, contrast and noise of a crop (any units)."""
    x = x.astype(np.float32, copy=True)
    lo, hi = np.percentile(x, [0.5, 99.5])
    if rng.random() < 0.3:  # a narrower window, as a CT soft-tissue / bone window clips
        a, b = np.sort(rng.uniform(0.0, 1.0, size=2))
        x = np.clip(x, lo + a * 0.4 * (hi - lo), hi - (1 - b) * 0.4 * (hi - lo))
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        u = (x - lo) / (hi - lo)
        if rng.random() < 0.4:  # a random monotone curve: other MR sequences order tissues alike
            knots = np.concatenate([[0.0], np.sort(rng.uniform(0, 1, 4)), [1.0]])
            u = np.interp(u, np.linspace(0, 1, 6), knots)
        u = u ** rng.uniform(0.6, 1.7)
        if rng.random() < 0.15:  # T1-like vs T2-like contrast
            u = 1.0 - u
        x = u.astype(np.float32)
    x = x * rng.uniform(0.8, 1.2)
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.05), size=x.shape).astype(np.float32)
    if rng.random() < 0.2:
        x = ndimage.gaussian_filter(x, rng.uniform(0.3, 1.0))
    return x.astype(np.float32)


def _isotropic(spacing_kji) -> bool:
    s = np.asarray(spacing_kji, dtype=float)
    return float(s.max() / s.min()) < 2.0


def _plane_bounds(plane: np.ndarray, axis: int, k: int, offset=(0, 0, 0)) -> Tuple[List[int], List[int]]:
    """(lo, hi) of the 2D box around a mask `plane` lying on slice `k` along `axis` (+ `offset`)."""
    rows, cols = np.nonzero(plane)
    lo, hi = [0, 0, 0], [0, 0, 0]
    lo[axis], hi[axis] = offset[axis] + k, offset[axis] + k + 1
    for a, idx in zip([a for a in range(3) if a != axis], (rows, cols)):
        lo[a], hi[a] = offset[a] + int(idx.min()), offset[a] + int(idx.max()) + 1
    return lo, hi


def _jitter(lo: List[int], hi: List[int], axis: int, shape, rng: np.random.Generator) -> Optional[Box]:
    """The box, exact (30%) or each in-plane bound moved by up to 2 voxels + 10% of the extent."""
    amount = 0.0 if rng.random() < 0.3 else 0.1
    lo, hi = list(lo), list(hi)
    for a in range(3):
        if a == axis or amount <= 0:
            continue
        j = int(round(2 + amount * (hi[a] - lo[a])))
        lo[a] += int(rng.integers(-j, j + 1))
        hi[a] += int(rng.integers(-j, j + 1))
        lo[a], hi[a] = max(0, lo[a]), min(int(shape[a]), hi[a])
        if hi[a] - lo[a] < 2:
            return None
    try:
        return validate_box(Box(tuple(lo), tuple(hi), axis), shape)
    except Exception:  # noqa: BLE001 - a jitter that breaks the box: the caller retries
        return None


class BoxSampler:
    """Draws 2D box samples from labelled volumes (by group) and pseudo-objects.

    Args:
        volumes: training volumes (box_sources.load_sources("train")).
        input_cfg: the model's input settings (grid size, margin, box channel).
        group_weights: relative frequency of each group (missing groups: 1); "pseudo" included.
        slab_fraction: share of labelled samples drawn as slices of 3D boxes.
        pseudo_by_group: draw a pseudo-object's image from a random group, then a random volume of it (else
            any volume: the 200 hippocampus subjects then gave 87% of the pseudo-objects, the abdomen 6%).
        union_fraction: share of labelled samples whose object is a union of touching structures.
        ring_share: share of pseudo-objects that are rings (a region around a hole).
    """

    def __init__(self, volumes: Sequence[Volume], input_cfg: Dict, group_weights: Optional[Dict[str, float]] = None,
                 slab_fraction: float = 0.4, pseudo_by_group: bool = False, union_fraction: float = 0.0,
                 ring_share: float = 0.2):
        self.volumes = list(volumes)
        self.ring_share = ring_share
        self.cfg = input_cfg
        self.slab_fraction = slab_fraction
        self.pseudo_by_group = pseudo_by_group
        self.union_fraction = union_fraction
        self.touching = [touching_labels(v.labels, v.label_ids) if union_fraction > 0 else {} for v in self.volumes]
        self.by_group: Dict[str, List[int]] = {}
        self.bounds: List[Dict[int, Tuple[slice, ...]]] = []
        self.structures: Dict[str, List[Tuple[int, int, Tuple[slice, ...]]]] = {}
        for vi, v in enumerate(self.volumes):
            self.by_group.setdefault(v.group, []).append(vi)
            objs = ndimage.find_objects(v.labels.astype(np.int32))
            self.bounds.append({l: objs[l - 1] for l in v.label_ids if l - 1 < len(objs) and objs[l - 1] is not None})
            for l, bb in self.bounds[-1].items():
                self.structures.setdefault(v.group, []).append((vi, l, bb))
        groups = sorted(self.structures) + ["pseudo"]
        w = dict(group_weights or {})
        self.groups = groups
        p = np.array([float(w.get(g, 1.0)) for g in groups])
        if not p.sum() > 0:
            from ..core.errors import ModelError
            raise ModelError(f"every sampling weight of the groups in the training data ({', '.join(groups)}) is 0")
        self.p = p / p.sum()

    def sample(self, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        for _ in range(50):
            g = self.groups[int(rng.choice(len(self.groups), p=self.p))]
            out = self._pseudo(rng) if g == "pseudo" else self._labelled(g, rng)
            if out is not None:
                return out
        raise RuntimeError("no usable training sample in 50 draws")

    def _labelled(self, group: str, rng: np.random.Generator):
        items = self.structures[group]
        vi, l, bb = items[int(rng.integers(len(items)))]
        v = self.volumes[vi]
        parts = [l]
        if self.union_fraction > 0 and rng.random() < self.union_fraction:
            parts = self.union(vi, l, rng)
            bb = tuple(slice(min(self.bounds[vi][p][a].start for p in parts),
                             max(self.bounds[vi][p][a].stop for p in parts)) for a in range(3))
        if rng.random() < self.slab_fraction:
            axis = 0
            k = int(rng.integers(bb[0].start, bb[0].stop))
            lo = [k, bb[1].start, bb[2].start]
            hi = [k + 1, bb[1].stop, bb[2].stop]
        else:
            axis = int(rng.integers(3)) if _isotropic(v.image.spacing_kji) else 0
            sub = np.isin(v.labels[bb], parts)
            areas = sub.sum(axis=tuple(a for a in range(3) if a != axis))
            ks = np.nonzero(areas >= MIN_AREA)[0]
            if len(ks) == 0:
                return None
            k_rel = int(ks[int(rng.integers(len(ks)))])
            lo, hi = _plane_bounds(np.take(sub, k_rel, axis=axis), axis, k_rel, [b.start for b in bb])
        box = _jitter(lo, hi, axis, v.image.shape, rng)
        if box is None:
            return None
        return self._crop(v, box, lambda spec: np.isin(native_region(v.labels, spec), parts), rng)

    def union(self, vi: int, label: int, rng: np.random.Generator) -> List[int]:
        """`label` and 1-3 structures grown from it, each touching one already taken (fewer if none touch)."""
        parts = [label]
        for _ in range(int(rng.integers(1, 4))):
            options = sorted({n for p in parts for n in self.touching[vi].get(p, ())} - set(parts))
            if not options:
                break
            parts.append(options[int(rng.integers(len(options)))])
        return parts

    def pseudo_volume(self, rng: np.random.Generator) -> Volume:
        """The image a pseudo-object is drawn from."""
        if not self.pseudo_by_group:
            return self.volumes[int(rng.integers(len(self.volumes)))]
        members = self.by_group[sorted(self.by_group)[int(rng.integers(len(self.by_group)))]]
        return self.volumes[members[int(rng.integers(len(members)))]]

    def _pseudo(self, rng: np.random.Generator):
        v = self.pseudo_volume(rng)
        axis = int(rng.integers(3)) if _isotropic(v.image.spacing_kji) else 0
        n = v.image.shape[axis]
        k = int(rng.integers(int(0.1 * n), max(int(0.9 * n), int(0.1 * n) + 1)))
        plane = np.take(v.image.array, k, axis=axis).astype(np.float32)
        if plane.max() <= plane.min():
            return None
        obj = pseudo_object(plane, rng, ring_share=self.ring_share)
        if obj is None:
            return None
        lo, hi = _plane_bounds(obj, axis, k)
        box = _jitter(lo, hi, axis, v.image.shape, rng)
        if box is None:
            return None
        full = np.expand_dims(obj, axis)
        return self._crop(v, box, lambda spec: _plane_region(full, spec, axis), rng)

    def _crop(self, v: Volume, box: Box, target_region, rng: np.random.Generator):
        margin = float(self.cfg["margin_mm"]) * rng.uniform(0.5, 1.5)
        spec = plan_for(box, v.image, self.cfg, margin)
        x = normalize(augment_intensity_wide(to_grid(native_region(v.image.array, spec), spec), rng))
        x = stack_input(x, spec, self.cfg)
        inside = x[-1] > 0.5 if self.cfg.get("box_channel") else np.ones(x.shape[1:], bool)
        y = (to_grid(target_region(spec).astype(np.float32), spec) >= 0.5) & inside
        return augment_geometry(x, y.astype(np.int64), rng)


def touching_labels(labels: np.ndarray, label_ids: Sequence[int]) -> Dict[int, List[int]]:
    """For each of `label_ids`, the others of `label_ids` sharing a face with it (6-connectivity)."""
    top = int(labels.max()) + 1
    wanted = np.zeros(top, bool)
    wanted[[l for l in label_ids if 0 < l < top]] = True
    codes = []
    for axis in range(labels.ndim):
        n = labels.shape[axis]
        a = np.take(labels, np.arange(n - 1), axis=axis)
        b = np.take(labels, np.arange(1, n), axis=axis)
        keep = (a != b) & wanted[a] & wanted[b]
        codes.append(np.unique(a[keep].astype(np.int64) * top + b[keep]))
    out: Dict[int, set] = {}
    for code in np.unique(np.concatenate(codes)).tolist():
        a, b = divmod(code, top)
        out.setdefault(a, set()).add(b)
        out.setdefault(b, set()).add(a)
    return {k: sorted(v) for k, v in out.items()}


def _plane_region(full: np.ndarray, spec, axis: int) -> np.ndarray:
    """The 2D crop region of a one-slice mask `full` (extent 1 along `axis`)."""
    sl = list(spec.region_slices)
    sl[axis] = slice(0, 1)
    return np.take(full[tuple(sl)], 0, axis=axis)
