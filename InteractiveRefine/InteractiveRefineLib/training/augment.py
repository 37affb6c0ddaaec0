"""Training-time augmentation of network-grid crops (image and mask together)."""
from __future__ import annotations

from typing import Tuple

import numpy as np


def augment_intensity(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma (on the crop's own min-max range), contrast scale and Gaussian noise."""
    lo, hi = float(x.min()), float(x.max())
    if hi > lo:
        unit = (x - lo) / (hi - lo)
        x = unit ** rng.uniform(0.7, 1.5) * (hi - lo) + lo
    x = x * rng.uniform(0.85, 1.15)
    if rng.random() < 0.5:
        x = x + rng.normal(0.0, 0.03 * (hi - lo + 1e-6), size=x.shape)
    return x.astype(np.float32)


def augment_geometry(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Random flips of the in-plane axes (the last two) and in-plane transposition.

    Flips make left/right and up/down structures alike, which helps on unseen organs.
    """
    for axis in (-1, -2):
        if rng.random() < 0.5:
            x, y = np.flip(x, axis), np.flip(y, axis)
    if rng.random() < 0.5 and x.shape[-1] == x.shape[-2]:
        x, y = np.swapaxes(x, -1, -2), np.swapaxes(y, -1, -2)
    return np.ascontiguousarray(x), np.ascontiguousarray(y)
