"""Classical box -> object baselines (graph cut, random walker) on the embedded CHAOS sample.

Dice thresholds leave a margin below values measured with the default parameters (stated next to
each assertion); the baselines are deterministic, the margin only absorbs library-version drift.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.errors import ImageError, PromptError
from InteractiveRefineLib.core.image_io import Image
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import Box, box_from_mask, make_box
from InteractiveRefineLib.evaluation.baselines import graphcut_segment, random_walker_segment

SAMPLE = Path(__file__).resolve().parent.parent / "InteractiveRefine" / "Resources" / "SampleData" / "chaos"
RIGHT_KIDNEY, SPLEEN = 2, 4
BASELINES = {"graphcut": graphcut_segment, "random_walker": random_walker_segment}


@pytest.fixture(scope="module")
def chaos8():
    return DecathlonDataset(SAMPLE).load("chaos_8")


def _slice_case(label: np.ndarray, organ: int, axis: int):
    """(2D box, reference restricted to that slice) on the slice where `organ` is largest."""
    mask = label == organ
    other = tuple(a for a in range(3) if a != axis)
    index = int(np.argmax(mask.sum(axis=other)))
    box = box_from_mask(mask, axis=axis, slice_index=index)
    ref = np.zeros_like(mask)
    sl = [slice(None)] * 3
    sl[axis] = index
    ref[tuple(sl)] = mask[tuple(sl)]
    return box, ref


def _outside(box: Box, shape) -> np.ndarray:
    out = np.ones(shape, dtype=bool)
    out[box.slices] = False
    return out


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_2d_axial_right_kidney(chaos8, name):
    image, label = chaos8
    box, ref = _slice_case(label, RIGHT_KIDNEY, axis=0)  # slice 12, box 44 x 50 voxels
    pred = BASELINES[name](image, box)
    # measured: graphcut 0.855, random_walker 0.848
    assert dice(pred.mask, ref) > 0.7
    prob = pred.probability
    assert prob.shape == image.shape and prob.dtype == np.float32
    assert not prob[_outside(box, image.shape)].any(), "nothing may be predicted outside the box"
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    if name == "graphcut":
        assert set(np.unique(prob)) <= {0.0, 1.0}
    # native resolution: the crop is box + 10 mm (8 voxels at 1.25 mm), not resampled
    assert pred.spec.out_shape == pred.spec.region_shape
    assert pred.spec.region_lo[1] == box.lo[1] - 8 and pred.spec.region_lo[0] == box.lo[0]
    assert 0.0 < pred.seconds < 5.0


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_2d_coronal_box_uses_anisotropic_plane(chaos8, name):
    """A coronal slice mixes 7.7 mm (K) and 1.25 mm (I) axes: in-plane spacing must be handled."""
    image, label = chaos8
    box, ref = _slice_case(label, SPLEEN, axis=1)
    pred = BASELINES[name](image, box)
    # measured: graphcut 0.951, random_walker 0.816
    assert dice(pred.mask, ref) > 0.7
    assert not pred.probability[_outside(box, image.shape)].any()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_3d_right_kidney(chaos8, name):
    image, label = chaos8
    ref = label == RIGHT_KIDNEY
    box = box_from_mask(ref)  # 18 x 49 x 65 voxels
    pred = BASELINES[name](image, box)
    # measured: graphcut 0.884, random_walker 0.916
    assert dice(pred.mask, ref) > 0.75
    assert not pred.probability[_outside(box, image.shape)].any()
    assert pred.spec.axis is None and pred.spec.out_shape == pred.spec.region_shape


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_synthetic_bright_disc(name):
    """A bright disc in noise with a loose box: both recover it almost exactly."""
    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[:3, :64, :64]
    disc = ((j - 30) ** 2 + (i - 34) ** 2 <= 12 ** 2) & (k == 1)
    array = (100.0 * disc + rng.normal(0.0, 10.0, disc.shape)).astype(np.float32)
    image = Image(array, spacing=(1.0, 1.0, 3.0))
    pred = BASELINES[name](image, make_box((1, 14, 18), (2, 47, 51), axis=0), margin_mm=5.0)
    assert dice(pred.mask, disc) > 0.95


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_box_outside_image_raises(chaos8, name):
    image, _ = chaos8
    with pytest.raises(PromptError):
        BASELINES[name](image, make_box((3, 300, 300), (4, 320, 320), axis=0))
    with pytest.raises(PromptError):
        BASELINES[name](image, Box((40, 0, 0), (45, 10, 10)))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_bad_image_raises(name):
    array = np.zeros((3, 20, 20), dtype=np.float32)
    array[1, 5, 5] = np.nan
    with pytest.raises(ImageError):
        BASELINES[name](Image(array), make_box((1, 2, 2), (2, 12, 12), axis=0))


def test_graphcut_rejects_unknown_connectivity(chaos8):
    image, label = chaos8
    box, _ = _slice_case(label, RIGHT_KIDNEY, axis=0)
    with pytest.raises(ValueError):
        graphcut_segment(image, box, connectivity=6)
