"""The shipped models on an embedded held-out patient, and bad input to the box segmenter."""
import numpy as np
import pytest
import torch

from InteractiveRefineLib.core.errors import ImageError, ModelError, PromptError
from InteractiveRefineLib.core.image_io import Image
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import Box, box_from_mask, make_box
from InteractiveRefineLib.engine.inference import BoxSegmenter, shift_foreground

# Stated regression levels for chaos_8 (a held-out test patient; kidneys never seen in training).
# Measured with the shipped 2D box network at its manifest's foreground threshold 0.3 (mean slice Dice, every
# slice with >= 20 voxels): liver 0.923, right kidney 0.917, left kidney 0.888, spleen 0.958 (at the network's
# own 0.5: 0.914, 0.888, 0.848, 0.951). The levels leave a margin of ~0.05.
MIN_2D = {1: 0.87, 2: 0.87, 3: 0.84, 4: 0.91}
# The same network slice by slice in a whole-structure 3D box (no CRF): liver 0.555, right kidney 0.847,
# left kidney 0.844, spleen 0.756.
MIN_3D = {1: 0.50, 2: 0.80, 3: 0.79, 4: 0.70}


def slice_dices(segmenter, image, ref, min_area=20):
    out = []
    for k in np.nonzero(ref.sum(axis=(1, 2)) >= min_area)[0]:
        pred = segmenter.predict(image, box_from_mask(ref, 0, int(k)))
        assert not np.delete(pred.mask, k, axis=0).any()
        out.append(dice(pred.mask[k], ref[k]))
    return out


@pytest.mark.parametrize("label", [1, 2, 3, 4])
def test_shipped_2d_model_on_held_out_patient(segmenter, chaos8, label):
    image, lab = chaos8
    d = slice_dices(segmenter, image, lab == label)
    assert len(d) >= 5
    assert np.mean(d) >= MIN_2D[label], f"label {label}: mean slice Dice {np.mean(d):.3f}"


def test_shipped_2d_cut_segments_unseen_kidneys_better_than_the_networks_own(segmenter, chaos8):
    """The manifest's foreground_threshold (0.3, chosen on validation structures): the network under-segments
    objects made of parts; cut at 0.5 (as FewShotSeg's propagation uses it) it scores lower (session-16 network:
    0.927 vs 0.916 and 0.889 vs 0.866 on the two kidneys; session 11's: more than 0.02 lower on each)."""
    image, lab = chaos8
    own = BoxSegmenter(device="cpu", threshold2d=0.5)
    for label in (2, 3):
        shipped, at_half = (np.mean(slice_dices(s, image, lab == label)) for s in (segmenter, own))
        assert shipped > at_half + 0.007, (label, shipped, at_half)


def test_shift_foreground_moves_the_cut_exactly():
    torch.manual_seed(0)
    from InteractiveRefineLib.engine.networks import build_network
    net = build_network("pnet2d", in_channels=2, channels=(8,) * 5).eval()
    x = torch.randn(1, 2, 24, 24)
    with torch.no_grad():
        p = torch.softmax(net(x), 1)[:, 1]
        q = torch.softmax(shift_foreground(net, 0.3)(x), 1)[:, 1]
    expect = torch.sigmoid(torch.logit(p.double()) - np.log(0.3 / 0.7)).float()
    assert torch.allclose(q, expect, atol=1e-5) and ((q >= 0.5) == (p >= 0.3)).float().mean() > 0.999


@pytest.mark.parametrize("bad", [0.0, 1.0, "0.3", True])
def test_a_bad_foreground_threshold_in_a_manifest_is_refused(tmp_path, chaos8, bad):
    import json
    import shutil

    from InteractiveRefineLib.engine.models import default_model_path
    src = default_model_path(2)
    manifest = json.loads(src.read_text())
    manifest["input"]["foreground_threshold"] = bad
    (tmp_path / src.name).write_text(json.dumps(manifest))
    shutil.copy(src.parent / manifest["weights"], tmp_path / manifest["weights"])
    seg = BoxSegmenter(model2d=tmp_path / src.name, device="cpu")
    for _ in range(2):  # refused again: the network is not kept at its own cut after the first refusal
        with pytest.raises(ModelError, match="foreground_threshold"):
            seg.predict(chaos8[0], make_box((5, 10, 10), (6, 60, 60), axis=0))
    with pytest.raises(ValueError, match="threshold2d"):
        BoxSegmenter(device="cpu", threshold2d=1.5)


def _with_cut(tmp_path, dim, cut):
    """A copy of the shipped `dim`-D model whose manifest cuts its foreground at `cut`."""
    import json
    import shutil

    from InteractiveRefineLib.engine.models import default_model_path
    src = default_model_path(dim)
    manifest = json.loads(src.read_text())
    manifest["input"]["foreground_threshold"] = cut
    (tmp_path / src.name).write_text(json.dumps(manifest))
    shutil.copy(src.parent / manifest["weights"], tmp_path / manifest["weights"])
    return tmp_path / src.name


def test_a_3d_cut_in_box3d_manifest_moves_the_3d_boxes_probability_only(tmp_path, chaos8):
    """box3d.json's own foreground_threshold shifts the 3D boxes' network (one view: exactly the logit shift);
    the 2D boxes keep theirs, and threshold3d=0.5 (FewShotSeg) reads the network at its own cut."""
    image, lab = chaos8
    box3 = box_from_mask(lab == 2)
    box2 = box_from_mask(lab == 2, 0, int(np.nonzero((lab == 2).sum(axis=(1, 2)))[0].mean()))
    kw = dict(device="cpu", views3d=1, precision="fp32")
    cut = BoxSegmenter(model3d=_with_cut(tmp_path, 3, 0.7), **kw)
    own = BoxSegmenter(**kw)
    p, q = own.predict(image, box3).probability, cut.predict(image, box3).probability
    inside = (p > 0.02) & (p < 0.98)
    shift = np.log(q[inside] / (1 - q[inside])) - np.log(p[inside] / (1 - p[inside]))
    # exact on the network grid; resampling to the image grid blends probabilities: the median
    assert inside.sum() > 50 and abs(np.median(shift) + np.log(0.7 / 0.3)) < 0.01
    assert (q >= 0.5).sum() < (p >= 0.5).sum()
    assert np.array_equal(cut.predict(image, box2).probability, own.predict(image, box2).probability)
    at_half = BoxSegmenter(model3d=_with_cut(tmp_path, 3, 0.7), threshold3d=0.5, **kw)
    assert np.array_equal(at_half.predict(image, box3).probability, p)
    with pytest.raises(ModelError, match="foreground_threshold"):
        BoxSegmenter(model3d=_with_cut(tmp_path, 3, 1.0), **kw).predict(image, box3)
    with pytest.raises(ValueError, match="threshold3d"):
        BoxSegmenter(device="cpu", threshold3d=0.0)


@pytest.mark.parametrize("label", [1, 2, 3, 4])
def test_shipped_3d_model_on_held_out_patient(segmenter, chaos8, label):
    image, lab = chaos8
    ref = lab == label
    pred = segmenter.predict(image, box_from_mask(ref))
    box = pred.spec.box
    outside = np.ones(image.shape, bool)
    outside[box.slices] = False
    assert not pred.mask[outside].any(), "outside the box is background"
    assert dice(pred.mask, ref) >= MIN_3D[label]


def test_box_partly_outside_is_clipped(segmenter, chaos8):
    image, lab = chaos8
    box = box_from_mask(lab == 2, 0, 18)
    wide = Box((18, box.lo[1], box.lo[2]), (19, box.hi[1], 400), axis=0)
    pred = segmenter.predict(image, wide)
    assert pred.spec.box.hi[2] == 256 and pred.probability.shape == image.shape


@pytest.mark.parametrize("box,match", [
    (make_box((10, 300, 300), (11, 320, 330), axis=0), "outside the image"),
    (make_box((10, 100, 100), (11, 100, 140), axis=0), "empty"),
    (make_box((10, 100, 100), (11, 101, 101), axis=0), "single voxel"),
    (make_box((10, 100, 100), (30, 101, 101)), "line"),
    (make_box((-5, -9, -9), (-1, -1, -1)), "empty|outside"),
])
def test_bad_boxes(segmenter, chaos8, box, match):
    image, _ = chaos8
    with pytest.raises(PromptError, match=match):
        segmenter.predict(image, box)


def test_nan_image(segmenter, chaos8):
    image, _ = chaos8
    a = image.array.astype(np.float32)
    a[5, 7, 9] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        segmenter.predict(image.with_array(a), make_box((5, 0, 0), (6, 50, 50), axis=0))


def test_4d_image(segmenter):
    with pytest.raises(ImageError, match="3D"):
        segmenter.predict(Image(np.zeros((2, 4, 30, 30), np.float32)), make_box((0, 0, 0), (1, 20, 20), axis=0))


def test_missing_model(tmp_path, chaos8):
    image, _ = chaos8
    seg = BoxSegmenter(model2d=tmp_path / "absent.json", device="cpu")
    with pytest.raises(ModelError, match="not found"):
        seg.predict(image, make_box((5, 10, 10), (6, 60, 60), axis=0))
