"""Label-free pseudo-organs: Felzenszwalb superpixels inside the body (as in SSL-ALPNet, Ouyang et al. 2020).

Any superpixel of a reasonable size is a stand-in "organ": support and query are two augmentations of the
same slice, so the network learns to segment whatever region the support mask names, not a fixed class.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.segmentation import felzenszwalb

# On the 128 x 128 network grid (~2.5 mm pixels on CHAOS). SSL-ALPNet used min_size 400 at 256 x 256;
# scale 100 gives superpixels of organ-part size there.
SCALE = 100.0
SIGMA = 0.8
MIN_SIZE = 100


def body_mask(slice_: np.ndarray) -> np.ndarray:
    """Foreground (body) of a normalised slice: above the 20th percentile, holes filled, largest part."""
    fg = slice_ > np.percentile(slice_, 20)
    fg = ndimage.binary_fill_holes(ndimage.binary_opening(fg, iterations=2))
    lab, n = ndimage.label(fg)
    if n == 0:
        return fg
    sizes = ndimage.sum(fg, lab, range(1, n + 1))
    return lab == (1 + int(np.argmax(sizes)))


def superpixels(slice_: np.ndarray, min_pixels: int = 60, max_fraction: float = 0.25) -> np.ndarray:
    """Integer map of usable superpixels (0 = none) of one normalised 2D slice.

    A superpixel is usable when it lies in the body, has at least `min_pixels` pixels and at most
    `max_fraction` of the body (a huge one is background, not an organ).
    """
    x = np.asarray(slice_, dtype=np.float64)
    span = x.max() - x.min()
    x = (x - x.min()) / (span if span > 0 else 1.0)
    seg = felzenszwalb(x, scale=SCALE, sigma=SIGMA, min_size=MIN_SIZE) + 1
    body = body_mask(slice_)
    seg[~body] = 0
    out = np.zeros_like(seg)
    body_px = max(int(body.sum()), 1)
    ids, counts = np.unique(seg[seg > 0], return_counts=True)
    k = 0
    for sid, cnt in zip(ids, counts):
        if min_pixels <= cnt <= max_fraction * body_px:
            k += 1
            out[seg == sid] = k
    return out
