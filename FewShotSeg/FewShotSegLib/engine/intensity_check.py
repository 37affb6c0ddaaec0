"""Intensity checks between support and query before a few-shot segmentation.

RP-Net compares the query with a prototype of the support's (normalised) appearance. Across modalities
(a CT query for an MR support) the organ's contrast to its neighbours differs, not just its scale, and
the result is empty (Dice 0 on the samples) with no error; normalisation cannot fix that. The checks
say so instead: a constant image is refused; a CT / MR mismatch is warned about. A histogram distance
of the normalised volumes was tried and dropped: CHAOS T2 pairs (same sequence) measured 0.11-0.60,
MR / CT pairs 0.71-0.86, too close to separate safely; negative values (CT's air and fat) are unambiguous.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from InteractiveRefineLib.core.errors import ImageError
from InteractiveRefineLib.core.image_io import Image

CT_LOW = -50.0  # 1% of a CT lies below (air -1000, fat -100 HU); MR intensities are not negative


def check_not_constant(image: Image, name: str) -> None:
    a = image.array
    lo, hi = a.min(), a.max()
    if lo == hi:
        raise ImageError(f"the {name} is constant ({lo}): there is nothing to segment; check the image")


def _sample(a: np.ndarray, n: int = 400_000) -> np.ndarray:
    step = max(1, a.size // n)  # a regular subsample: the statistics of a 512 x 512 x 300 CT in milliseconds
    return np.asarray(a.ravel()[::step], dtype=np.float32)


def modality_warning(support: Image, query: Image) -> Optional[str]:
    """A sentence when support and query intensity statistics look incompatible, else None."""
    s, q = _sample(support.array), _sample(query.array)
    s_ct, q_ct = (float(np.percentile(v, 1)) < CT_LOW for v in (s, q))
    if s_ct != q_ct:
        kind = {True: "CT (negative Hounsfield units)", False: "MR (no negative values)"}
        return (f"the support looks like {kind[s_ct]} but the query like {kind[q_ct]}: FewShotSeg learns the "
                "organ's appearance from the support, so across modalities the result is usually empty or "
                "wrong; annotate a support slice of the same modality")
    return None
