"""Checks of the image content under a prompt, before computing: what would give a meaningless result."""
from __future__ import annotations

from .errors import ImageError
from .image_io import Image
from .prompts import Box

# Largest ratio of voxel spacings across the axes a box is segmented on. The networks saw ratios up to
# ~6 (CHAOS 7.7 / 1.25 mm) and the CRF weighs neighbours by distance: at 1600 (0.05 x 80 mm) or with
# 1e-4 mm slices the crop is resampled into a few voxels along one axis and the result is empty or
# a column artefact. Routine thick-slice scans (5 mm / 0.5 mm = 10) stay well below.
MAX_SPACING_RATIO = 25.0


def check_box_image(image: Image, box: Box) -> None:
    """ImageError if the image is constant inside `box` or too anisotropic on the box's axes."""
    region = image.array[box.slices]
    lo, hi = region.min(), region.max()
    if lo == hi:
        raise ImageError(f"the image is constant ({lo}) inside the box {box.lo}-{box.hi}: there is nothing to "
                         "segment there; check the image (and its display window) or move the box")
    sp = image.spacing_kji
    axes = box.in_plane_axes()
    ratio = max(sp[a] for a in axes) / min(sp[a] for a in axes)
    if ratio > MAX_SPACING_RATIO:
        names = {0: "K (slices)", 1: "J (rows)", 2: "I (columns)"}
        detail = ", ".join(f"{names[a]} {sp[a]:g} mm" for a in axes)
        raise ImageError(f"voxel spacing too anisotropic for a {box.dim}D box ({detail}; ratio {ratio:.0f} > "
                         f"{MAX_SPACING_RATIO:g}): resample the image (or draw the box on another slice "
                         "orientation) first; the networks and the CRF were made for ratios up to about 10")
