"""Patient (RAS) positions <-> voxel indices, and a Markups ROI or a slice view -> voxel prompts.

Pure numpy: the Slicer bridge passes in 4x4 matrices read from the nodes, so every conversion here is
tested without Slicer. Conventions:
- `ijk_to_ras`: a volume node's IJK-to-RAS 4x4 matrix (columns 0..2: the I, J, K axis vectors with
  their spacing, in mm; column 3: the origin). Direction may be oblique and axes may be flipped.
- Point lists are (n, 3) in (I, J, K) or (R, A, S) order; numpy arrays and Boxes are (K, J, I), so a
  voxel axis `a` of IJK is array axis `2 - a`.
- A voxel's index is the continuous index of its centre; it covers [index - 0.5, index + 0.5].
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

from ..core.errors import PromptError
from ..core.prompts import Box

#: |cos| between a view normal and the nearest voxel axis below which the view counts as oblique.
OBLIQUE_COS = 0.95
_EPS = 1e-6


def _matrix(m) -> np.ndarray:
    m = np.asarray(m, dtype=float)
    if m.shape != (4, 4):
        raise PromptError(f"expected a 4x4 matrix, got shape {m.shape}")
    if abs(np.linalg.det(m[:3, :3])) < 1e-12:
        raise PromptError("the IJK-to-RAS matrix is singular (zero spacing?)")
    return m


def _points(points) -> np.ndarray:
    p = np.asarray(points, dtype=float)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 3 or not np.isfinite(p).all():
        raise PromptError(f"expected finite (n, 3) points, got shape {np.shape(points)}")
    return p


def ras_to_ijk(points_ras, ijk_to_ras) -> np.ndarray:
    """(n, 3) RAS points in mm -> (n, 3) continuous (I, J, K) indices."""
    m = _matrix(ijk_to_ras)
    p = _points(points_ras)
    return np.linalg.solve(m[:3, :3], (p - m[:3, 3]).T).T


def ijk_to_ras(points_ijk, ijk_to_ras) -> np.ndarray:
    """(n, 3) continuous (I, J, K) indices -> (n, 3) RAS points in mm."""
    m = _matrix(ijk_to_ras)
    return _points(points_ijk) @ m[:3, :3].T + m[:3, 3]


def ijk_to_kji(points_ijk) -> np.ndarray:
    """Reverse the columns: (I, J, K) points <-> (K, J, I) array indices (the same operation both ways)."""
    return _points(points_ijk)[:, ::-1].copy()


def voxel_spacing(ijk_to_ras) -> np.ndarray:
    """Spacing (mm) along I, J, K."""
    return np.linalg.norm(_matrix(ijk_to_ras)[:3, :3], axis=0)


def nearest_axis(direction_ras, ijk_to_ras) -> Tuple[int, float]:
    """The array axis (K, J, I order) most parallel to a RAS direction, and |cos| of the angle."""
    d = np.asarray(direction_ras, dtype=float)
    n = np.linalg.norm(d)
    if d.shape != (3,) or not np.isfinite(d).all() or n < _EPS:
        raise PromptError(f"expected a non-zero 3D direction, got {direction_ras!r}")
    axes = _matrix(ijk_to_ras)[:3, :3]
    cos = np.abs(axes.T @ d) / (np.linalg.norm(axes, axis=0) * n)
    ijk = int(np.argmax(cos))
    return 2 - ijk, float(cos[ijk])


def roi_corners(object_to_ras, size_mm) -> np.ndarray:
    """The 8 corners (RAS) of a box ROI: `object_to_ras` 4x4 (columns: ROI axes, translation: centre;
    e.g. vtkMRMLMarkupsROINode.GetObjectToWorldMatrix) and its full side lengths in mm."""
    m = np.asarray(object_to_ras, dtype=float)
    size = np.asarray(size_mm, dtype=float)
    if m.shape != (4, 4) or size.shape != (3,) or not np.isfinite(size).all() or (size < 0).any():
        raise PromptError(f"invalid ROI: matrix shape {m.shape}, size {size_mm!r}")
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    local = signs * size / 2
    axes = m[:3, :3] / np.maximum(np.linalg.norm(m[:3, :3], axis=0), _EPS)  # sizes are in mm already
    return local @ axes.T + m[:3, 3]


def roi_to_box(object_to_ras, size_mm, ijk_to_ras, shape_kji: Sequence[int],
               view_normal_ras: Optional[Sequence[float]] = None) -> Box:
    """A Markups ROI -> a Box in voxel indices (K, J, I), clipped to the image.

    The box holds the voxels whose centres lie inside the ROI's bounds in index space. An ROI thinner
    than one voxel along one of its axes (a box drawn on one slice) gives a 2D box: on the array axis
    most parallel to `view_normal_ras` (the slice view it was drawn in) or, without a view, to that thin
    ROI axis; on the slice nearest to the ROI centre. Otherwise the box is 3D.
    Raises PromptError if the ROI does not overlap the image.
    """
    shape = tuple(int(s) for s in shape_kji)
    m = np.asarray(object_to_ras, dtype=float)
    size = np.asarray(size_mm, dtype=float)
    corners = ras_to_ijk(roi_corners(m, size), ijk_to_ras)
    centre = ras_to_ijk(m[:3, 3], ijk_to_ras)[0]
    lo_ijk = np.ceil(corners.min(axis=0) - _EPS).astype(int)
    hi_ijk = np.floor(corners.max(axis=0) + _EPS).astype(int) + 1
    axis = _thin_axis(m, size, ijk_to_ras, view_normal_ras)
    lo, hi = [int(v) for v in lo_ijk[::-1]], [int(v) for v in hi_ijk[::-1]]  # -> (K, J, I)
    if any(h <= l for a, (l, h) in enumerate(zip(lo, hi)) if a != axis):
        raise PromptError(f"the ROI (sides {np.round(size, 2).tolist()} mm) holds no voxel centre: it is "
                          f"smaller than a voxel ({np.round(voxel_spacing(ijk_to_ras), 2).tolist()} mm, I, J, K); "
                          "draw a larger box")
    if axis is not None:
        index = int(np.floor(centre[2 - axis] + 0.5))
        lo[axis], hi[axis] = index, index + 1
    lo = [max(0, v) for v in lo]
    hi = [min(s, v) for s, v in zip(shape, hi)]
    if any(h <= l for l, h in zip(lo, hi)):
        raise PromptError(f"the ROI lies outside the volume (voxel bounds {lo_ijk[::-1].tolist()}.."
                          f"{hi_ijk[::-1].tolist()}, volume shape {list(shape)} in K, J, I)")
    return Box(tuple(lo), tuple(hi), axis)


def _thin_axis(object_to_ras, size, ijk_to_ras, view_normal_ras) -> Optional[int]:
    """The array axis of a 2D box if the ROI is thinner than a voxel along one of its axes, else None."""
    rot = object_to_ras[:3, :3]
    spacing = voxel_spacing(ijk_to_ras)
    for a in np.argsort(size):
        axis, _ = nearest_axis(rot[:, a], ijk_to_ras)
        if size[a] < spacing[2 - axis] - _EPS:
            if view_normal_ras is not None:
                axis, _ = nearest_axis(view_normal_ras, ijk_to_ras)
            return axis
        break  # only the thinnest ROI axis can make the box 2D
    return None


def slice_of_view(slice_to_ras, ijk_to_ras, shape_kji: Sequence[int]) -> Tuple[int, int, bool]:
    """The voxel slice a slice view shows: (array axis, index, oblique).

    slice_to_ras: the view's SliceToRAS 4x4 (column 2: the normal, column 3: a point on the plane).
    The axis is the array axis most parallel to the normal; `oblique` is True when the view is tilted
    from it by more than acos(OBLIQUE_COS). Raises PromptError if the plane is outside the volume.
    """
    s = np.asarray(slice_to_ras, dtype=float)
    if s.shape != (4, 4):
        raise PromptError(f"expected a 4x4 SliceToRAS matrix, got shape {s.shape}")
    axis, cos = nearest_axis(s[:3, 2], ijk_to_ras)
    index = int(np.floor(ras_to_ijk(s[:3, 3], ijk_to_ras)[0][2 - axis] + 0.5))
    if not 0 <= index < int(shape_kji[axis]):
        raise PromptError(f"the slice view shows slice {index} of axis {axis}, outside the volume "
                          f"(0..{int(shape_kji[axis]) - 1})")
    return axis, index, cos < OBLIQUE_COS


def nearest_view(point_ras, slice_to_ras_list) -> int:
    """Index of the slice view whose plane passes closest to a RAS point (the view an ROI was drawn in:
    both of its placement clicks lie on that view's plane, so its centre does too)."""
    p = _points(point_ras)[0]
    if not len(slice_to_ras_list):
        raise PromptError("no slice view to choose from")
    dist = []
    for s in slice_to_ras_list:
        s = np.asarray(s, dtype=float)
        normal = s[:3, 2] / max(np.linalg.norm(s[:3, 2]), _EPS)
        dist.append(abs(float(normal @ (p - s[:3, 3]))))
    return int(np.argmin(dist))


def flatten_roi(object_to_ras, size_mm, normal_ras) -> np.ndarray:
    """ROI side lengths with the side most parallel to a view normal set to 0: the ROI becomes a 2D box
    on that view's slice. (Slicer places an ROI in a slice view with a depth equal to its smaller
    in-plane side, so a box drawn for one slice must be flattened explicitly.)"""
    rot = np.asarray(object_to_ras, dtype=float)[:3, :3]
    rot = rot / np.maximum(np.linalg.norm(rot, axis=0), _EPS)
    n = np.asarray(normal_ras, dtype=float)
    size = np.array(size_mm, dtype=float)
    size[int(np.argmax(np.abs(rot.T @ n)))] = 0.0
    return size


def box_to_roi(box: Box, ijk_to_ras_matrix) -> Tuple[np.ndarray, np.ndarray]:
    """(centre_ras, size_mm) of an RAS-aligned ROI through the centres of a box's corner voxels, so that
    roi_to_box gives the box back on a volume whose axes follow R, A, S (flipped or not)."""
    lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float) - 1
    corners_kji = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ras = ijk_to_ras(ijk_to_kji(corners_kji), ijk_to_ras_matrix)
    return (ras.min(0) + ras.max(0)) / 2, ras.max(0) - ras.min(0)
