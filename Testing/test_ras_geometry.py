"""RAS <-> IJK and Markups ROI / slice view -> voxel prompts, with real 4x4 matrices (the bridge's
pure part): anisotropic spacing, flipped axes (LPS-stored scans), oblique and permuted directions."""
import numpy as np
import pytest

from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.panel.ras_geometry import (
    ijk_to_kji,
    ijk_to_ras,
    nearest_axis,
    ras_to_ijk,
    roi_to_box,
    slice_of_view,
)


def matrix(direction, spacing, origin):
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, float) @ np.diag(spacing)
    m[:3, 3] = origin
    return m


def rot_z(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])


# An axial scan stored in LPS, as Slicer shows it: I points left (-R), J posterior (-A), 0.7 x 0.7 x 3 mm.
AXIAL = matrix(np.diag([-1.0, -1.0, 1.0]), [0.7, 0.7, 3.0], [100.0, 120.0, -50.0])
SHAPE = (20, 64, 48)  # (K, J, I)


def roi_around_voxels(ijk_lo, ijk_hi, m, rotation=np.eye(3)):
    """An ROI (object-to-RAS matrix, size) whose corners are the voxel centres ijk_lo..ijk_hi (inclusive)
    when `rotation` is the volume's own direction; otherwise the RAS-aligned box around them."""
    corners = np.array([[a, b, c] for a in (ijk_lo[0], ijk_hi[0]) for b in (ijk_lo[1], ijk_hi[1])
                        for c in (ijk_lo[2], ijk_hi[2])], float)
    local = ijk_to_ras(corners, m) @ rotation  # coordinates along the ROI axes
    lo, hi = local.min(0), local.max(0)
    obj = np.eye(4)
    obj[:3, :3] = rotation
    obj[:3, 3] = rotation @ ((lo + hi) / 2)
    return obj, hi - lo


def test_round_trip_and_a_known_voxel():
    p = np.array([[10, 20, 5], [0, 0, 0], [47.5, 63, 19]], float)
    np.testing.assert_allclose(ras_to_ijk(ijk_to_ras(p, AXIAL), AXIAL), p, atol=1e-9)
    np.testing.assert_allclose(ijk_to_ras([10, 20, 5], AXIAL)[0], [100 - 7.0, 120 - 14.0, -50 + 15.0])


def test_numpy_order_is_kji():
    array = np.zeros(SHAPE)
    array[5, 20, 10] = 1  # array[k, j, i]
    ijk = np.array([[10, 20, 5]])
    k, j, i = ijk_to_kji(ijk)[0].astype(int)
    assert array[k, j, i] == 1
    np.testing.assert_array_equal(ijk_to_kji(ijk_to_kji(ijk)), ijk)


def test_roi_to_3d_box_flipped_anisotropic():
    obj, size = roi_around_voxels([10, 20, 3], [19, 29, 5], AXIAL, np.diag([-1.0, -1.0, 1.0]))
    box = roi_to_box(obj, size, AXIAL, SHAPE)
    assert box.axis is None
    assert box.lo == (3, 20, 10) and box.hi == (6, 30, 20)
    assert all(type(v) is int for v in box.lo + box.hi)  # plain ints (JSON logs, Slicer calls)
    # The same ROI expressed with RAS-aligned axes (the usual ROI orientation) gives the same box.
    obj2, size2 = roi_around_voxels([10, 20, 3], [19, 29, 5], AXIAL)
    assert roi_to_box(obj2, size2, AXIAL, SHAPE) == box


def test_roi_on_oblique_volume():
    direction = rot_z(30) @ np.diag([-1.0, -1.0, 1.0])
    m = matrix(direction, [0.8, 0.8, 2.5], [5.0, -3.0, 10.0])
    obj, size = roi_around_voxels([10, 12, 2], [30, 40, 8], m, direction)  # ROI along the volume's axes
    box = roi_to_box(obj, size, m, SHAPE)
    assert box.lo == (2, 12, 10) and box.hi == (9, 41, 31)
    # An RAS-aligned ROI around the same voxels is larger in index space (its corners stick out).
    obj_ras, size_ras = roi_around_voxels([10, 12, 2], [30, 40, 8], m)
    big = roi_to_box(obj_ras, size_ras, m, SHAPE)
    assert all(bl <= l for bl, l in zip(big.lo, box.lo)) and all(bh >= h for bh, h in zip(big.hi, box.hi))
    assert big.size[1] > box.size[1] and big.size[2] > box.size[2]


def test_thin_roi_gives_a_2d_box_on_the_nearest_slice():
    obj, size = roi_around_voxels([10, 20, 7], [30, 40, 7], AXIAL)
    assert size[2] == 0  # drawn on one axial slice
    obj[2, 3] += 0.4 * 3.0  # not exactly on the voxel centre: 0.4 slice above
    box = roi_to_box(obj, size, AXIAL, SHAPE, view_normal_ras=[0, 0, 1])
    assert box.axis == 0 and box.lo == (7, 20, 10) and box.hi == (8, 41, 31)


def test_thin_roi_in_a_sagittal_view_of_an_axial_scan():
    obj, size = roi_around_voxels([25, 10, 2], [25, 40, 15], AXIAL)
    assert size[0] == 0
    box = roi_to_box(obj, size, AXIAL, SHAPE, view_normal_ras=[1, 0, 0])
    assert box.axis == 2 and box.lo == (2, 10, 25) and box.hi == (16, 41, 26)


def test_thin_roi_on_a_sagittally_acquired_volume():
    # I -> anterior, J -> superior, K -> right (a sagittal acquisition): the axial view's slices are J.
    direction = np.array([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]])
    m = matrix(direction, [1.0, 1.0, 4.0], [0, 0, 0])
    shape = (12, 60, 50)
    obj, size = roi_around_voxels([5, 30, 2], [40, 30, 9], m)
    box = roi_to_box(obj, size, m, shape, view_normal_ras=[0, 0, 1])
    assert box.axis == 1 and box.lo == (2, 30, 5) and box.hi == (10, 31, 41)


def test_roi_thicker_than_a_slice_is_3d():
    obj, size = roi_around_voxels([10, 20, 7], [30, 40, 7], AXIAL)
    size = size + np.array([0, 0, 3.5])  # a bit more than one 3 mm slice
    assert roi_to_box(obj, size, AXIAL, SHAPE).axis is None


def test_roi_partly_outside_is_clipped_and_fully_outside_refused():
    obj, size = roi_around_voxels([-5, -5, -2], [10, 10, 4], AXIAL)
    box = roi_to_box(obj, size, AXIAL, SHAPE)
    assert box.lo == (0, 0, 0) and box.hi == (5, 11, 11)
    obj, size = roi_around_voxels([100, 100, 30], [110, 110, 32], AXIAL)
    with pytest.raises(PromptError, match="outside the volume"):
        roi_to_box(obj, size, AXIAL, SHAPE)


def test_slice_of_view_axial_and_oblique():
    red = np.eye(4)
    red[:3, 3] = ijk_to_ras([0, 0, 9], AXIAL)[0]
    assert slice_of_view(red, AXIAL, SHAPE) == (0, 9, False)
    tilted = red.copy()
    tilted[:3, :3] = np.array([[1, 0, 0], [0, np.cos(0.5), -np.sin(0.5)], [0, np.sin(0.5), np.cos(0.5)]])
    axis, index, oblique = slice_of_view(tilted, AXIAL, SHAPE)
    assert (axis, index, oblique) == (0, 9, True)
    far = red.copy()
    far[2, 3] += 1000
    with pytest.raises(PromptError, match="outside the volume"):
        slice_of_view(far, AXIAL, SHAPE)


def test_bad_matrices_are_refused():
    with pytest.raises(PromptError):
        ras_to_ijk([[0, 0, 0]], np.zeros((4, 4)))
    with pytest.raises(PromptError):
        ras_to_ijk([[0, 0, np.nan]], AXIAL)
    with pytest.raises(PromptError):
        nearest_axis([0, 0, 0], AXIAL)


def test_roi_smaller_than_a_voxel_is_refused_with_a_clear_message():
    obj = np.eye(4)
    obj[:3, 3] = ijk_to_ras([[10.3, 20.3, 5]], AXIAL)[0]  # between voxel centres
    with pytest.raises(PromptError, match="smaller than a voxel"):
        roi_to_box(obj, [0.3, 0.3, 9.0], AXIAL, SHAPE)
