"""Training episodes: 1-way 1-shot (support slice + mask, query slice + mask) on the network grid.

Two kinds, mixed per batch:
- supervised: a base organ, the support from one patient and the query from another, at the same relative
  position in the organ's slice range (as at test time);
- superpixel (label-free): a random superpixel of one slice is the pseudo-organ; support and query are two
  independent augmentations of that slice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from InteractiveRefineLib.core.errors import DatasetError
from InteractiveRefineLib.core.image_io import Image

from ..engine.augment import AugmentConfig, augment_pair
from ..engine.slices import NETWORK_SIZE, image_slices, to_network
from .superpixels import superpixels

MIN_ORGAN_PIXELS = 16  # on the 128 grid: smaller cross-sections are edge slices, too small to learn from


@dataclass
class Volume:
    """One training volume on the network grid: images (n, 1, S, S), labels (n, S, S), usable slices."""

    case_id: str
    images: torch.Tensor
    labels: torch.Tensor
    allowed: np.ndarray
    superpixels: Dict[int, np.ndarray]


def prepare_volume(case_id: str, image: Image, label: np.ndarray, allowed: np.ndarray,
                   with_superpixels: bool = True, size: int = NETWORK_SIZE, axis: int = 0) -> Volume:
    """Slices along `axis` on the network grid; `allowed` has one entry per slice along that axis."""
    imgs, grid = image_slices(image, axis, size)
    lab = np.moveaxis(np.asarray(label, dtype=np.float32), axis, 0)
    labs = to_network(lab, grid, mode="nearest")[:, 0].round().long()
    sp = {}
    if with_superpixels:
        for k in np.flatnonzero(allowed):
            s = superpixels(imgs[k, 0].numpy())
            if s.max() > 0:
                sp[int(k)] = s
    return Volume(case_id, imgs, labs, np.asarray(allowed, dtype=bool), sp)


class EpisodeSampler:
    """Draws batches of episodes from prepared volumes with a seeded generator."""

    def __init__(self, volumes: Sequence[Volume], base: Sequence[int], p_superpixel: float = 0.5,
                 seed: int = 0, augment: AugmentConfig = AugmentConfig()):
        self.volumes = list(volumes)
        self.base = [int(b) for b in base]
        self.rng = np.random.default_rng(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.augment = augment
        self.organ_slices: Dict[int, List[tuple]] = {}
        for lab in self.base:
            per_vol = []
            for vi, v in enumerate(self.volumes):
                area = (v.labels == lab).sum((1, 2)).numpy()
                z = np.flatnonzero((area >= MIN_ORGAN_PIXELS) & v.allowed)
                if z.size:
                    per_vol.append((vi, z))
            if per_vol:
                self.organ_slices[lab] = per_vol
        self.sp_slices = [(vi, k) for vi, v in enumerate(self.volumes) for k in v.superpixels]
        self.p_superpixel = p_superpixel if self.organ_slices else 1.0
        if not self.sp_slices:
            self.p_superpixel = 0.0
        if not self.sp_slices and not self.organ_slices:
            raise DatasetError("no training episodes possible: no usable organ slices and no superpixels")

    def _supervised(self):
        labels = list(self.organ_slices)  # base labels in order, those with usable slices
        lab = labels[self.rng.integers(len(labels))]
        per_vol = self.organ_slices[lab]
        a, b = self.rng.choice(len(per_vol), size=2, replace=len(per_vol) < 2)
        r = self.rng.uniform(0, 1)
        va, za = per_vol[a]
        vb, zb = per_vol[b]
        ka = int(za[min(int(r * len(za)), len(za) - 1)])
        kb = int(zb[min(int(r * len(zb)), len(zb) - 1)])
        sa, sb = self.volumes[va], self.volumes[vb]
        return (sa.images[ka], (sa.labels[ka] == lab).float()[None],
                sb.images[kb], (sb.labels[kb] == lab).float()[None])

    def _superpixel(self):
        vi, k = self.sp_slices[self.rng.integers(len(self.sp_slices))]
        v = self.volumes[vi]
        sp = v.superpixels[k]
        sid = 1 + self.rng.integers(sp.max())
        m = torch.from_numpy((sp == sid).astype(np.float32))[None]
        return v.images[k], m, v.images[k], m

    def sample(self, batch: int) -> Dict[str, torch.Tensor]:
        items = [self._superpixel() if self.rng.uniform() < self.p_superpixel else self._supervised()
                 for _ in range(batch)]
        si, sm, qi, qm = (torch.stack(t) for t in zip(*items))
        si, sm = augment_pair(si, sm, self.augment, self.gen)
        qi, qm = augment_pair(qi, qm, self.augment, self.gen)
        return {"support_img": si, "support_mask": sm, "query_img": qi, "query_mask": qm}


def prepare_case_volumes(dataset, case_ids: Sequence[str], setting: int, excluded: Sequence[int],
                         size: int = NETWORK_SIZE, progress: Optional[callable] = None) -> List[Volume]:
    """Load and prepare training volumes of a Decathlon dataset (axial slices, setting-aware)."""
    from ..engine.protocol import allowed_slices
    out = []
    for cid in case_ids:
        image, label = dataset.load(cid)
        allowed = allowed_slices(label, setting, excluded, axis=0)
        out.append(prepare_volume(cid, image, label, allowed, size=size))
        if progress:
            progress(cid)
    return out

