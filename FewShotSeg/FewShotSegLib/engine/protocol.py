"""The standard CHAOS T2-SPIR few-shot protocol (SSL-ALPNet / RP-Net / ADNet / Q-Net), written out.

- Folds: the 20 patient ids sorted numerically, as a circular list; fold f tests patients [4f, 4f+4) and
  uses the next one (index 4f+4, wrapping) as the fixed support; the other 15 patients train.
- Test organs: liver (1), right kidney (2), left kidney (3), spleen (4), in two groups that are trained for
  separately: "upper" (liver, spleen) and "lower" (kidneys). A group's models never use its organs as
  supervised classes; the other group's organs are the labelled base classes.
- Setting 1: training slices may show the test organs (as background). Setting 2: every training slice that
  contains a test-group organ is removed, from the supervised and from the superpixel episodes.
- Support slices: the support patient's slices containing the organ, split into 3 chunks; chunk p uses the
  slice at fraction (2p + 1) / 6 of that list, computed as SSL-ALPNet's released code does
  (dataloaders/ManualAnnoDatasetv2.py, get_support: pct = 1/(2n) + p (1 - 1/n)/(n - 1), index int(pct * len)).
- Query: the organ's slice range [z_min, z_max] in the reference label; slice z uses chunk
  int((z - z_min) // ((z_max - z_min) / 3)), clipped to 0..2, and 0 when z_min == z_max (SSL-ALPNet's
  dataloaders/common.py, ValidationDataset). The last slice z_max lands in chunk 3 and is clipped to 2.
- Dice: 3D, per query volume, over the organ's slice range.
"""
from __future__ import annotations

import re
from typing import Dict, List, Sequence, Tuple

import numpy as np

from InteractiveRefineLib.core.errors import DatasetError, PromptError

CHAOS_GROUPS: Dict[str, Tuple[int, ...]] = {"upper": (1, 4), "lower": (2, 3)}
N_FOLDS = 5
N_CHUNKS = 3


def sort_ids(case_ids: Sequence[str]) -> List[str]:
    """Numeric order of the trailing number in each id (chaos_2 before chaos_10)."""
    def key(cid):
        nums = re.findall(r"\d+", cid)
        return (int(nums[-1]) if nums else -1, cid)
    return sorted(case_ids, key=key)


def fold_cases(case_ids: Sequence[str], fold: int, n_folds: int = N_FOLDS) -> Dict[str, object]:
    """{'query': [...], 'support': id, 'train': [...]} of one fold (see the module docstring)."""
    ids = sort_ids(case_ids)
    if len(ids) < n_folds + 1:
        raise DatasetError(f"{n_folds}-fold cross-validation needs at least {n_folds + 1} cases; got {len(ids)}")
    if not 0 <= fold < n_folds:
        raise DatasetError(f"fold must be in 0..{n_folds - 1}; got {fold}")
    edges = np.linspace(0, len(ids), n_folds + 1).astype(int)
    query = ids[edges[fold]:edges[fold + 1]]
    support = ids[edges[fold + 1] % len(ids)]
    train = [c for c in ids if c not in query and c != support]
    return {"query": query, "support": support, "train": train}


def base_labels(group: str, groups: Dict[str, Tuple[int, ...]] = CHAOS_GROUPS) -> Tuple[int, ...]:
    """Supervised training classes of a group's models: every other group's organs."""
    return tuple(sorted(lab for g, labs in groups.items() if g != group for lab in labs))


def allowed_slices(label: np.ndarray, setting: int, excluded: Sequence[int], axis: int = 0) -> np.ndarray:
    """Boolean per slice: may this training slice be used? Setting 2 drops slices showing an excluded label."""
    if setting not in (1, 2):
        raise DatasetError(f"setting must be 1 or 2; got {setting}")
    n = label.shape[axis]
    if setting == 1 or not excluded:
        return np.ones(n, dtype=bool)
    other = tuple(a for a in range(3) if a != axis)
    return ~np.isin(label, list(excluded)).any(axis=other)


def organ_slices(label: np.ndarray, organ: int, axis: int = 0) -> np.ndarray:
    """Sorted indices of the slices along `axis` that contain `organ`."""
    other = tuple(a for a in range(3) if a != axis)
    return np.flatnonzero((label == organ).any(axis=other))


def chunk_fractions(n_chunks: int = N_CHUNKS) -> List[float]:
    """SSL-ALPNet's support fractions, with its floating-point arithmetic (1/6, 1/2, 5/6 for 3 chunks)."""
    if n_chunks == 1:
        return [0.5]
    half = 1 / (n_chunks * 2)
    interval = (1.0 - 1.0 / n_chunks) / (n_chunks - 1)
    return [half + interval * p for p in range(n_chunks)]


def support_chunk_slices(support_label: np.ndarray, organ: int, n_chunks: int = N_CHUNKS,
                         axis: int = 0) -> List[int]:
    """The support slice of each chunk: index int(fraction_p * len) of the organ's slice list."""
    z = organ_slices(support_label, organ, axis)
    if z.size == 0:
        raise PromptError(f"label {organ} is absent from the support volume")
    return [int(z[int(f * len(z))]) for f in chunk_fractions(n_chunks)]


def query_chunk_of(z: int, z_min: int, z_max: int, n_chunks: int = N_CHUNKS) -> int:
    """SSL-ALPNet's chunk of query slice z: int((z - z_min) // ((z_max - z_min) / n)), clipped to 0..n-1."""
    if z_max == z_min:
        return 0
    part = int((z - z_min) // ((z_max - z_min) / n_chunks))
    return min(max(part, 0), n_chunks - 1)


def query_chunks(z_min: int, z_max: int, n_chunks: int = N_CHUNKS) -> np.ndarray:
    """Chunk of each query slice z_min..z_max (inclusive), by SSL-ALPNet's formula (query_chunk_of)."""
    return np.array([query_chunk_of(z, z_min, z_max, n_chunks) for z in range(z_min, z_max + 1)], dtype=int)
