"""The CRF on a capped grid (bounded memory for any box): same answer as the native CRF on an easy image,
within the cap, box and scribbles respected."""
import numpy as np

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.capped_crf import capped_crf, coarse_shape
from InteractiveRefineLib.engine.crf import crf_segment


def test_coarse_shape_meets_the_cap_coarsening_the_finest_axes_first():
    shape = coarse_shape((40, 200, 200), (4.0, 1.0, 1.0), 100_000)
    assert np.prod(shape) <= 100_000 and shape[0] == 40  # thick slices kept, in-plane coarsened
    assert np.prod(shape) > 80_000  # not needlessly coarse
    assert coarse_shape((10, 20, 20), (1, 1, 1), 10_000) == (10, 20, 20)


def test_capped_crf_matches_the_native_crf_and_keeps_box_and_seeds():
    rng = np.random.default_rng(0)
    k, j, i = np.ogrid[:30, :80, :80]
    sphere = (k - 15) ** 2 / 100 + ((j - 40) ** 2 + (i - 40) ** 2) / 400 <= 1
    x = sphere * 100.0 + rng.normal(0, 20, sphere.shape)
    p = np.clip(sphere * 0.6 + 0.2 + rng.normal(0, 0.1, sphere.shape), 0, 1)
    inside = np.zeros(sphere.shape, bool)
    inside[2:28, 10:70, 10:70] = True
    fg = np.zeros(sphere.shape, bool)
    fg[15, 40, 40:45] = True
    bg = ~inside
    native = crf_segment(p, x, (2.0, 1.0, 1.0), fg_seeds=fg, bg_seeds=bg)
    capped = capped_crf(p, x, (2.0, 1.0, 1.0), inside=inside, fg_seeds=fg, bg_seeds=bg, max_voxels=20_000)
    assert capped.shape == sphere.shape and capped[fg].all()
    assert dice(capped, native) > 0.95 and dice(capped, sphere) > 0.9
    assert not capped[~inside].any()


def test_upsampled_labels_match_linear_interpolation():
    """The separable slab-wise upsampling gives what an order-1 affine_transform gives (ties aside)."""
    from InteractiveRefineLib.engine.capped_crf import _resample, upsample_labels
    rng = np.random.default_rng(1)
    for shape, out in (((10, 20, 30), (37, 55, 64)), ((7, 9), (30, 41)), ((3, 6, 7), (3, 60, 70))):
        lab = rng.random(shape) > 0.5
        expected = _resample(lab.astype(np.float32), out, 1) >= 0.5
        assert (upsample_labels(lab, out) != expected).mean() < 1e-3
