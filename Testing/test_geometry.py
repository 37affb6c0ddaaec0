"""Crop / resample / paste back keeps alignment; RAS/LPS matrices match SimpleITK."""
import numpy as np
import pytest
import SimpleITK as sitk

from InteractiveRefineLib.core.geometry import extract, ijk_to_lps_matrix, ijk_to_ras_matrix, paste, plan_crop
from InteractiveRefineLib.core.image_io import Image, read_image, write_image
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask, make_box, validate_box


def ellipsoid(shape, center, radii):
    idx = np.indices(shape).astype(float)
    return sum(((idx[a] - center[a]) / radii[a]) ** 2 for a in range(3)) <= 1.0


@pytest.mark.parametrize("spacing_kji", [(7.7, 1.25, 1.25), (1.0, 1.0, 1.0), (3.0, 0.8, 2.0)])
def test_3d_roundtrip_keeps_alignment(spacing_kji):
    mask = ellipsoid((30, 120, 110), (14, 60, 50), (8, 30, 22))
    box = box_from_mask(mask)
    spec = plan_crop(box, mask.shape, spacing_kji, margin_mm=10.0)
    assert spec.out_shape[1:] == (48, 48) and 8 <= spec.out_shape[0] <= 48
    back = paste(extract(mask.astype(np.float32), spec), spec, mask.shape) >= 0.5
    assert dice(back, mask) > 0.95
    # Centre of mass does not move by more than half a voxel along any axis.
    com = lambda m: np.array(np.nonzero(m)).mean(axis=1)  # noqa: E731
    assert np.all(np.abs(com(back) - com(mask)) < 0.5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_2d_roundtrip_on_any_axis(axis):
    mask = ellipsoid((40, 90, 70), (20, 45, 35), (15, 30, 20))
    k = 20 if axis == 0 else (45 if axis == 1 else 35)
    box = box_from_mask(mask, axis, k)
    spec = plan_crop(box, mask.shape, (2.0, 1.0, 1.0), margin_mm=5.0, size2d=(96, 96))
    out = paste(extract(mask.astype(np.float32), spec), spec, mask.shape) >= 0.5
    plane = np.take(mask, k, axis=axis)
    assert dice(np.take(out, k, axis=axis), plane) > 0.95
    others = np.delete(out, k, axis=axis)
    assert not others.any(), "a 2D prediction must stay on its slice"


def test_extract_is_identity_when_grid_matches_region():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 50, 60)).astype(np.float32)
    box = make_box((5, 10, 20), (6, 58, 68), axis=0)  # 2D box on slice 5
    box = validate_box(box, a.shape)
    spec = plan_crop(box, a.shape, (1, 1, 1), margin_mm=0.0, size2d=(40, 40))
    assert spec.region_shape == (40, 40)
    np.testing.assert_allclose(extract(a, spec), a[5, 10:50, 20:60], atol=1e-5)


def test_paste_is_zero_outside_box_and_crop_is_clipped():
    shape = (10, 40, 40)
    box = validate_box(make_box((-3, -5, 30), (12, 20, 50)), shape)  # partly outside: clipped
    assert box.lo == (0, 0, 30) and box.hi == (10, 20, 40)
    spec = plan_crop(box, shape, (1, 1, 1), margin_mm=3.0)
    assert spec.region_lo == (0, 0, 27) and spec.region_hi == (10, 23, 40)
    out = paste(np.ones(spec.out_shape, np.float32), spec, shape)
    inside = np.zeros(shape, bool)
    inside[box.slices] = True
    assert out[inside].min() == 1.0 and out[~inside].max() == 0.0


def oblique_direction():
    th = np.deg2rad(20)
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, 1.0])
    return rot @ flip


def test_ijk_matrices_match_simpleitk():
    spacing, origin, direction = (0.8, 1.25, 7.7), (-190.5, 201.0, -77.1), oblique_direction()
    img = sitk.Image(11, 13, 5, sitk.sitkUInt8)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction.ravel().tolist())
    lps, ras = ijk_to_lps_matrix(spacing, origin, direction), ijk_to_ras_matrix(spacing, origin, direction)
    for ijk in [(0, 0, 0), (10, 12, 4), (3, 7, 2)]:
        p = np.array(img.TransformIndexToPhysicalPoint(ijk))
        np.testing.assert_allclose(lps @ [*ijk, 1], [*p, 1], atol=1e-9)
        np.testing.assert_allclose(ras @ [*ijk, 1], [-p[0], -p[1], p[2], 1], atol=1e-9)


def test_pasted_prediction_keeps_physical_alignment(tmp_path):
    """A mask cropped, resampled and pasted back onto an oblique, anisotropic image, written to NIfTI and
    read again, covers the same physical points as the original."""
    direction = oblique_direction()
    mask = ellipsoid((24, 64, 56), (12, 30, 26), (6, 14, 10))
    image = Image(mask.astype(np.float32) * 100, (0.9, 1.1, 4.0), (10.0, -20.0, 30.0), direction)
    spec = plan_crop(box_from_mask(mask), mask.shape, image.spacing_kji, margin_mm=8.0)
    back = (paste(extract(image.array, spec), spec, mask.shape) >= 50).astype(np.uint8)
    path = write_image(image, tmp_path / "pred.nii.gz", back)
    reread = read_image(path)
    np.testing.assert_allclose(reread.spacing, image.spacing, atol=1e-5)
    np.testing.assert_allclose(reread.origin, image.origin, atol=1e-4)
    np.testing.assert_allclose(reread.direction, direction, atol=1e-5)
    m = ijk_to_lps_matrix(image.spacing, image.origin, direction)
    pts = lambda a: (m @ np.vstack([np.array(np.nonzero(a))[::-1], np.ones(int(a.sum()))]))[:3]  # noqa: E731
    np.testing.assert_allclose(pts(reread.array > 0).mean(axis=1), pts(mask).mean(axis=1), atol=0.5)
    assert dice(reread.array > 0, mask) > 0.95
