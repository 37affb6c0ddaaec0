"""Drawing helpers of the demo and benchmark pictures (matplotlib, Agg): one look for every figure.

Axial slices are shown in radiological orientation at their true aspect; CT in a soft-tissue window
(W 400 / L 40 HU) instead of percentiles that a CT's air and bone stretch; views zoomed to the box with
context around it; the box and the scribbles drawn in colours that differ from the contours
(reference green, result red, box yellow, foreground scribbles blue, background scribbles magenta).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..core.image_io import Image

SOFT_TISSUE = (-160.0, 240.0)  # HU: window 400, level 40
COLOURS = {"reference": "lime", "result": "red", "box": "yellow", "fg": "dodgerblue", "bg": "magenta"}
ORGAN_COLOURS = ("tab:red", "tab:blue", "tab:orange", "tab:purple", "tab:cyan", "tab:pink", "tab:olive")


def is_ct(image: Image) -> bool:
    """A CT holds negative Hounsfield units (air, fat) in more than 1% of its voxels; MR does not."""
    a = image.array.ravel()
    return float(np.percentile(a[:: max(1, a.size // 200_000)], 1)) < -50.0


def display_range(image: Image, plane: np.ndarray) -> Tuple[float, float]:
    """(vmin, vmax): the soft-tissue window for CT, the slice's 1-99th percentiles otherwise."""
    if is_ct(image):
        return SOFT_TISSUE
    lo, hi = np.percentile(plane, [1, 99])
    return float(lo), float(hi if hi > lo else lo + 1)


def radiological(image: Image) -> Tuple[bool, bool]:
    """(flip rows, flip columns) that show an axial slice anterior up and patient right on the left."""
    d = np.asarray(image.direction)
    return bool(d[1, 1] < 0), bool(d[0, 0] < 0)


def show_view(image: Image):
    """A function flipping an axial slice (or mask) of `image` into radiological orientation."""
    flip_rows, flip_cols = radiological(image)

    def show(a):
        a = a[::-1] if flip_rows else a
        return a[:, ::-1] if flip_cols else a
    return show


def draw_slice(ax, image: Image, k: int, ref: Optional[np.ndarray], pred: Optional[np.ndarray], show) -> None:
    """Axial slice k with the reference (green) and result (red) contours."""
    plane = image.array[k].astype(np.float32)
    vmin, vmax = display_range(image, plane)
    ax.imshow(show(plane), cmap="gray", vmin=vmin, vmax=vmax, aspect=image.spacing_kji[1] / image.spacing_kji[2])
    for mask, colour in ((ref, COLOURS["reference"]), (pred, COLOURS["result"])):
        if mask is not None and mask[k].any():
            ax.contour(show(mask[k]).astype(np.float32), levels=[0.5], colors=colour, linewidths=0.9)


def _display_rect(image: Image, lo: Sequence[int], hi: Sequence[int]) -> Tuple[float, float, float, float]:
    """(x0, y0, width, height) in display pixels of rows lo[0]:hi[0], columns lo[1]:hi[1] of a slice."""
    flip_rows, flip_cols = radiological(image)
    h, w = image.shape[1:]
    x0 = w - hi[1] if flip_cols else lo[1]
    y0 = h - hi[0] if flip_rows else lo[0]
    return x0 - 0.5, y0 - 0.5, hi[1] - lo[1], hi[0] - lo[0]


def draw_box(ax, image: Image, lo: Sequence[int], hi: Sequence[int]) -> None:
    """The in-plane extent of a box (rows lo[0]:hi[0], columns lo[1]:hi[1]), yellow."""
    from matplotlib.patches import Rectangle
    x0, y0, w, h = _display_rect(image, lo, hi)
    ax.add_patch(Rectangle((x0, y0), w, h, fill=False, color=COLOURS["box"], linewidth=1.2))


def zoom(ax, image: Image, lo: Sequence[int], hi: Sequence[int], context: float = 0.6, minimum: int = 12) -> None:
    """Show rows lo[0]:hi[0] and columns lo[1]:hi[1] with `context` of their size (at least `minimum`
    voxels) around them, clipped to the slice."""
    h, w = image.shape[1:]
    pad = [max(minimum, int(context * (b - a))) for a, b in zip(lo, hi)]
    lo = (max(0, lo[0] - pad[0]), max(0, lo[1] - pad[1]))
    hi = (min(h, hi[0] + pad[0]), min(w, hi[1] + pad[1]))
    x0, y0, ww, hh = _display_rect(image, lo, hi)
    ax.set_xlim(x0, x0 + ww)
    ax.set_ylim(y0 + hh, y0)  # image rows grow downwards


def draw_scribbles(ax, fg: Optional[np.ndarray], bg: Optional[np.ndarray], show) -> None:
    """Scribbles of one slice (2D bool masks): foreground blue, background magenta, as visible dots."""
    for mask, colour in ((fg, COLOURS["fg"]), (bg, COLOURS["bg"])):
        if mask is not None and mask.any():
            yy, xx = np.nonzero(show(mask))
            ax.plot(xx, yy, "s", color=colour, markersize=2.5, markeredgewidth=0)


def mask_extent(masks: Sequence[np.ndarray]) -> Tuple[Tuple[int, int], Tuple[int, int]]:
    """(lo, hi) rows/columns of the union of 2D masks (the whole slice when empty)."""
    union = np.zeros_like(masks[0], dtype=bool)
    for m in masks:
        union |= m
    if not union.any():
        return (0, 0), union.shape
    rows, cols = np.nonzero(union.any(1))[0], np.nonzero(union.any(0))[0]
    return (int(rows[0]), int(cols[0])), (int(rows[-1]) + 1, int(cols[-1]) + 1)
