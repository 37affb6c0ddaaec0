"""Whole-volume few-shot segmentation: bad inputs named clearly, resampling, one-slice queries, cancel."""
import numpy as np
import pytest
import torch

from FewShotSegLib.engine.adapt import AdaptConfig, adapt_segmenter
from FewShotSegLib.engine.network import build_rpnet
from FewShotSegLib.engine.segment import FewShotSegmenter, combine_labels, make_supports
from FewShotSegLib.engine.slices import from_network, image_slices, slice_grid
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.errors import CancelledError, ImageError, PromptError
from InteractiveRefineLib.core.image_io import Image
from InteractiveRefineLib.core.sample import sample_dataset


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return FewShotSegmenter(net=build_rpnet(), device="cpu", iterations=2)


@pytest.fixture(scope="module")
def chaos36(chaos_sample):
    return chaos_sample.load("chaos_36")


def kidney_slice(label):
    return int(np.flatnonzero((label == 2).any((1, 2)))[5])


def test_bad_support_inputs(chaos36):
    img, lab = chaos36
    k = kidney_slice(lab)
    with pytest.raises(PromptError, match="empty on slice 0"):
        make_supports(img, lab, 0)                      # no organ on the first slice
    with pytest.raises(PromptError, match="outside the support volume"):
        make_supports(img, lab, img.shape[0])
    with pytest.raises(PromptError, match="outside the support volume"):
        make_supports(img, lab, -1)
    liver_only = np.flatnonzero((lab == 1).any((1, 2)) & ~(lab == 2).any((1, 2)))
    assert liver_only.size
    with pytest.raises(PromptError, match=r"label\(s\) \[2\] absent from support slice"):
        make_supports(img, lab, int(liver_only[0]), [2])
    with pytest.raises(ImageError, match="shape"):
        make_supports(img, lab[:-1], k)
    bad = img.array.astype(np.float32).copy()
    bad[k, 10, 10] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        make_supports(img.with_array(bad), lab, k)


def test_query_nan_and_range_errors(untrained, chaos36):
    img, lab = chaos36
    sup = make_supports(img, lab, kidney_slice(lab), [2])
    bad = img.array.astype(np.float32).copy()
    bad[3, 5, 5] = np.inf
    with pytest.raises(ImageError, match="NaN or Inf"):
        untrained.segment(sup, img.with_array(bad))
    with pytest.raises(PromptError, match="outside the query volume"):
        untrained.segment(sup, img, slices=(5, img.shape[0] + 1))


def test_one_slice_and_resampled_query(untrained, chaos36):
    img, lab = chaos36
    sup = make_supports(img, lab, kidney_slice(lab), [2, 3])
    one = Image(img.array[10:11], img.spacing, img.origin, img.direction)
    res = untrained.segment(sup, one)
    assert res.labels.shape == one.shape and set(res.probabilities) == {2, 3}
    # a query of another size, spacing and intensity range works through the slice grid ...
    small = Image((img.array[::2, ::2, 1::2] * 3.0 - 1000).astype(np.float32), (2.5, 2.5, img.spacing[2] * 2))
    res = untrained.segment(sup, small)
    assert res.labels.shape == small.shape
    # ... and so does another modality: the embedded CT as the query of an MR support
    ct, _ = DecathlonDataset(sample_dataset("totalseg_ct")).load("totalseg_ct")
    res = untrained.segment(sup, ct, slices=(0, 2))
    assert res.labels.shape == ct.shape and res.slices == (0, 2)


def test_slice_grid_pads_to_a_square_field_of_view():
    img = Image(np.zeros((3, 40, 100), np.float32), spacing=(1.0, 2.0, 5.0))  # rows 80 mm, cols 100 mm
    g = slice_grid(img, 0, 64)
    assert g.padded == (50, 100) and g.pad_rows == (5, 5)
    x = torch.zeros(3, 64, 64)
    x[:, 20:44, 20:44] = 1
    back = from_network(x, g)
    assert back.shape == (3, 40, 100)
    stack, g2 = image_slices(Image(np.random.default_rng(0).random((4, 40, 100)).astype(np.float32),
                                   (1.0, 2.0, 5.0)), 0, 64)
    assert stack.shape == (4, 1, 64, 64) and g2 == g


def test_overlaps_go_to_the_most_probable_label():
    p = {2: np.array([0.9, 0.6, 0.2, 0.55]), 3: np.array([0.7, 0.8, 0.3, 0.1])}
    assert combine_labels(p).tolist() == [2, 3, 0, 2]


def test_cancel_during_adaptation_leaves_the_network_unchanged(untrained, chaos36):
    img, lab = chaos36
    sup = make_supports(img, lab, kidney_slice(lab), [2])
    before = {k: v.clone() for k, v in untrained.net.state_dict().items()}
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2
    with pytest.raises(CancelledError):
        adapt_segmenter(untrained, sup, img, 0, AdaptConfig(steps=5, pseudo_steps=2, batch=2), cancel=cancel)
    assert all(torch.equal(before[k], v) for k, v in untrained.net.state_dict().items())


def test_adaptation_is_bounded_and_reports_progress(untrained, chaos36):
    img, lab = chaos36
    sup = make_supports(img, lab, kidney_slice(lab), [2])
    seen = []
    adapted = adapt_segmenter(untrained, sup, img, 0, AdaptConfig(steps=3, pseudo_steps=2, batch=2),
                              progress=lambda f, m: seen.append((f, m)))
    info = adapted.manifest["adapted"]
    assert info["steps"] == 3 and info["pseudo_steps"] <= 2
    assert seen[-1] == (1.0, "adapted") and all(0 <= f <= 1 for f, _ in seen)
    assert adapted.net is not untrained.net
    changed = any(not torch.equal(a, b) for a, b in zip(adapted.net.state_dict().values(),
                                                         untrained.net.state_dict().values()))
    assert changed
    zero = adapt_segmenter(untrained, sup, img, 0, AdaptConfig(steps=50, pseudo_steps=50, batch=2, time_budget=0.0))
    assert zero.manifest["adapted"]["steps"] == 0 and zero.manifest["adapted"]["pseudo_steps"] == 0


def test_query_box_limits_the_result(untrained, chaos36):
    img, lab = chaos36
    sup = make_supports(img, lab, kidney_slice(lab), [2])
    res = untrained.segment(sup, img, box=((5, 100, 40), (9, 200, 140)))
    assert res.slices == (5, 9)
    outside = np.ones(img.shape, bool)
    outside[5:9, 100:200, 40:140] = False
    assert not res.labels[outside].any()
    with pytest.raises(PromptError, match="outside the query volume"):
        untrained.segment(sup, img, box=((5, 100, 40), (9, 300, 140)))


def test_affine_start_registers_the_support_mask_onto_the_query():
    from FewShotSegLib.engine.registration import registered_masks
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = lambda cy, cx: (((yy - cy) / 10) ** 2 + ((xx - cx) / 7) ** 2 < 1).float()[None, None]  # noqa: E731
    support_mask = blob(30, 28)
    support = support_mask * 2 + 0.1 * blob(45, 40)
    query_mask = blob(35, 33)                          # the same organ moved by (5, 5) pixels
    query = query_mask * 2 + 0.1 * blob(50, 45)
    warped = registered_masks(support, support_mask, query)
    inter = (warped * query_mask).sum()
    before = 2 * (support_mask * query_mask).sum() / (support_mask.sum() + query_mask.sum())
    after = 2 * inter / (warped.sum() + query_mask.sum())
    assert before < 0.75 and after > 0.9, (float(before), float(after))
    seg = FewShotSegmenter(net=build_rpnet(), device="cpu", iterations=1, start="affine")
    assert seg.start == "affine"
    with pytest.raises(PromptError, match="start must be"):
        FewShotSegmenter(net=build_rpnet(), device="cpu", start="unaligned")
