"""Evaluation protocol: chunks and the component step are used, setting 2 reaches training, the support_copy
baseline, the guard against models trained on the evaluated patients, the summary's baseline column."""
import json

import numpy as np
import pytest
import torch

from FewShotSegLib.engine.models import save_rpnet
from FewShotSegLib.engine.network import DEFAULT_PARAMS, build_rpnet
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, query_chunks, support_chunk_slices
from FewShotSegLib.engine.query_range import one_slice_extent, place_window
from FewShotSegLib.engine.segment import (
    FewShotSegmenter,
    Segmentation,
    auto_range_info,
    extent_window,
    make_supports,
    support_extents,
)
from FewShotSegLib.evaluation.evaluate import check_unseen, evaluate_pairs, protocol_case, support_copy
from FewShotSegLib.evaluation.summary import summary_markdown
from FewShotSegLib.training import train as train_module
from InteractiveRefineLib.core.errors import DatasetError, PromptError
from InteractiveRefineLib.core.image_io import Image
from InteractiveRefineLib.core.metrics import dice


def cylinder(n=30, organ=1, z=(8, 23)):
    arr = np.random.default_rng(0).normal(size=(n, 40, 40)).astype(np.float32)
    lab = np.zeros((n, 40, 40), np.int16)
    lab[z[0]:z[1], 10:25, 12:30] = organ
    arr[lab == organ] += 3
    img = Image(arr, np.array([1.0, 1.0, 3.0]), np.zeros(3), np.eye(3))
    return img, lab


class RecordingSegmenter:
    """Stands in for FewShotSegmenter: records what the protocol asks for, answers with the reference."""

    def __init__(self, reference):
        self.reference, self.calls, self.manifest, self.start = reference, [], {}, "prototype"

    def segment(self, supports, query_image, slices=None, chunk_of_slice=None, auto_range=False, **kw):
        self.calls.append({"supports": [s.slice_index for s in supports], "slices": slices,
                           "chunks": None if chunk_of_slice is None else list(chunk_of_slice),
                           "auto_range": auto_range})
        lab = (self.reference > 0).astype(np.int16) * supports[0].label
        return Segmentation(lab, {supports[0].label: lab.astype(np.float32)}, slices or (0, lab.shape[0]))


def test_protocol_uses_three_chunks_and_the_component_step():
    s_img, s_lab = cylinder(z=(5, 17))
    q_img, q_lab = cylinder(z=(8, 23))
    seg = RecordingSegmenter(q_lab)
    r = protocol_case(seg, (s_img, s_lab), (q_img, q_lab), 1)
    call = seg.calls[0]
    assert call["supports"] == support_chunk_slices(s_lab, 1) == [7, 11, 15]
    assert call["slices"] == (8, 23) and call["chunks"] == query_chunks(8, 22).tolist()
    assert sorted(set(call["chunks"])) == [0, 1, 2]
    assert call["auto_range"] is True                # component step on by default
    assert r["dice"] == 1.0 and r["slices"] == [8, 23] and r["adaptation"] is None


def test_support_copy_copies_each_chunks_mask_on_the_same_grid():
    img, lab = cylinder()
    sups = [make_supports(img, lab, k, [1])[0] for k in (9, 15, 20)]
    pred = support_copy(sups, img, 8, 23, query_chunks(8, 22))
    # same scan, constant cross-section: the copy is the organ itself (up to the resize to the grid and back)
    ref = lab[8:23] == 1
    inter = (pred & ref).sum()
    assert 2 * inter / (pred.sum() + ref.sum()) > 0.97
    # and each slice really takes its own chunk's mask: make the middle chunk's support mask empty-ish
    sups[1].mask.zero_()
    pred = support_copy(sups, img, 8, 23, query_chunks(8, 22))
    chunks = query_chunks(8, 22)
    assert not pred[chunks == 1].any() and pred[chunks == 0].any() and pred[chunks == 2].any()
    r = protocol_case(RecordingSegmenter(lab), (img, lab), (img, lab), 1)
    assert 0.9 < r["support_copy"] <= 1.0


def test_segment_keeps_only_the_component_under_the_support(monkeypatch):
    img, lab = cylinder()
    seg = FewShotSegmenter(net=build_rpnet(), device="cpu", iterations=1)
    sup = make_supports(img, lab, 15, [1])

    def predict(supports, query, assignment, progress=None, cancel=None):
        p = torch.zeros(query.shape[0], query.shape[-2], query.shape[-1])
        p[:, 40:80, 40:90] = 1.0          # under the support footprint
        p[:, 100:120, 100:120] = 1.0      # a look-alike elsewhere
        return p
    monkeypatch.setattr(seg, "predict", predict)
    with_step = seg.segment(sup, img, auto_range=True).labels
    without = seg.segment(sup, img, auto_range=False).labels
    assert without[15, 35, 35] == 1 and with_step[15, 35, 35] == 0
    assert with_step[15, 17, 20] == 1


def test_setting_two_reaches_the_training_volumes(chaos_sample, monkeypatch, tmp_path):
    seen = {}
    real_prepare = train_module.prepare_case_volumes

    def prepare(ds, cases, setting, excluded):
        seen["args"] = (setting, tuple(excluded))
        return real_prepare(ds, cases, setting, excluded)

    def fake_train(volumes, base, config, device, **kw):
        seen["volumes"], seen["base"] = volumes, base
        return {"net": build_rpnet(), "history": [1.0], "seconds": 0.0, "step": config.steps, "init": None}
    monkeypatch.setattr(train_module, "prepare_case_volumes", prepare)
    monkeypatch.setattr(train_module, "train_rpnet", fake_train)
    out = train_module.train_protocol_model(chaos_sample, tmp_path / "s2.json", 2, "lower", ["chaos_8"],
                                            train_module.TrainConfig(steps=1))
    assert seen["args"] == (2, CHAOS_GROUPS["lower"]) and tuple(seen["base"]) == (1, 4)
    v = seen["volumes"][0]
    kidney = np.isin(v.labels.numpy(), [2, 3]).any((1, 2))
    assert kidney.any() and not (kidney & v.allowed).any()
    assert json.loads(out.read_text())["training"]["setting"] == 2


def test_pairs_refuse_a_model_trained_on_the_evaluated_patients(chaos_sample, tmp_path):
    path = save_rpnet(build_rpnet(), tmp_path / "m.json", dict(DEFAULT_PARAMS),
                      {"training": {"dataset": "CHAOS-T2SPIR-fewshot", "cases": ["chaos_1", "chaos_8"]}})
    with pytest.raises(DatasetError, match="trained on chaos_8"):
        evaluate_pairs(chaos_sample, [("chaos_36", "chaos_8")], [2], tmp_path, model=path, device="cpu")
    check_unseen({"training": {"dataset": "CHAOS-T2SPIR-fewshot", "cases": ["chaos_1"]}}, chaos_sample,
                 ["chaos_8", "chaos_36"])
    check_unseen({"training": {"dataset": "Hippocampus", "cases": ["chaos_8"]}}, chaos_sample, ["chaos_8"])


def test_summary_shows_support_copy_and_steps_beside_every_row():
    recs = [{"setting": 2, "adapted": a, "range": "gt", "label": lab, "label_name": n, "dice": d, "seconds": 1.0,
             "support_copy": c, "adaptation": {"steps": 30, "pseudo_steps": 15, "cut_by_time_cap": []} if a else None}
            for a in (False, True) for lab, n, d, c in [(1, "liver", 0.6, 0.58), (4, "spleen", 0.7, 0.4)]]
    text = summary_markdown(recs, "t")
    rows = [line for line in text.splitlines() if line.startswith("| 2 |")][:2]
    assert len(rows) == 2
    for row in rows:
        assert "58.00 / 40.00" in row and "| 49.00 |" in row
    assert "30+15" in rows[1] and "30+15" not in rows[0]


def test_auto_range_keeps_a_window_of_the_support_organs_length(monkeypatch):
    s_img, s_lab = cylinder(z=(5, 17))                    # 12 slices of 3 mm in the support
    q_img, q_lab = cylinder(z=(8, 23))
    q_img = Image(q_img.array, np.array([1.0, 1.0, 6.0]), np.zeros(3), np.eye(3))
    assert support_extents(s_img, s_lab, [1], q_img) == {1: 6.0}    # 36 mm = 6 query slices of 6 mm
    mask = np.zeros((30, 4, 4), bool)
    mask[2:28, :2, :2] = True                             # look-alike on every slice
    mask[14:17] = True                                    # largest cross-sections at 14..16
    keep = extent_window(mask, 6.0)
    assert np.flatnonzero(keep).tolist() == list(range(11, 18)) and not extent_window(mask & False, 6.0).any()
    # the segmenter applies it with auto_range, and protocol_case's automatic range asks for it
    seg = FewShotSegmenter(net=build_rpnet(), device="cpu", iterations=1)
    sup = make_supports(s_img, s_lab, 11, [1])

    def predict(supports, query, assignment, progress=None, cancel=None):
        p = torch.zeros(query.shape[0], query.shape[-2], query.shape[-1])
        p[:, :64] = 1.0                   # something on every slice, the most on slice 15
        p[15] = 1.0
        return p
    monkeypatch.setattr(seg, "predict", predict)
    out = seg.segment(sup, q_img, auto_range=True, extents={1: 6.0}).labels
    assert np.flatnonzero(out.any((1, 2))).tolist() == list(range(12, 19))
    assert seg.segment(sup, q_img, auto_range=True).labels.any((1, 2)).all()
    rec = RecordingSegmenter(q_lab)
    seen = {}
    real = rec.segment

    def segment(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)
    rec.segment = segment
    protocol_case(rec, (s_img, s_lab), (q_img, q_lab), 1, range_mode="auto")
    info = seen["auto"][1]  # the window's length, and the support slices that place it
    assert info.extent == 6.0 and len(info.supports) == 3 and seen["auto_range"] is True
    assert [sp.slice_index for sp in info.supports] == support_chunk_slices(s_lab, 1)


def _predict_everywhere(supports, query, assignment, progress=None, cancel=None):
    """Stands in for the network: the organ's column on every query slice."""
    p = torch.zeros(query.shape[0], query.shape[-2], query.shape[-1])
    p[:, 40:100, 40:100] = 1.0
    return p


def test_auto_range_estimates_the_window_of_a_one_slice_annotation(monkeypatch):
    """One annotated support slice says nothing of the organ's length: the window's length comes from the drawn
    cross-section (query_range.one_slice_extent), centred by place_window, and the result says so."""
    s_img, s_lab = cylinder(z=(5, 17))                       # cross-section 15 x 18 px of 1 mm: 270 mm^2
    q_img, _q_lab = cylinder(z=(8, 23))
    q_img = Image(q_img.array, np.array([1.0, 1.0, 6.0]), np.zeros(3), np.eye(3))  # 6 mm query slices
    one = np.zeros_like(s_lab)
    one[11] = s_lab[11]
    info = auto_range_info(s_img, one, [1], q_img)[1]
    assert info.estimated and not auto_range_info(s_img, s_lab, [1], q_img)[1].estimated
    assert info.extent == pytest.approx(one_slice_extent(270.0, 6.0)) and 5 < info.extent < 10
    assert [sp.slice_index for sp in info.supports] == [11] and info.centre_fraction == pytest.approx(11 / 30)
    # a larger drawn cross-section: a longer organ expected
    wide = np.zeros_like(s_lab)
    wide[11, 5:35, 5:35] = 1
    assert auto_range_info(s_img, wide, [1], q_img)[1].extent > info.extent
    seg = FewShotSegmenter(net=build_rpnet(), device="cpu", iterations=1)
    monkeypatch.setattr(seg, "predict", _predict_everywhere)  # the organ's column on every query slice
    sup = make_supports(s_img, one, 11, [1])
    assert seg.segment(sup, q_img, auto_range=True).labels.any((1, 2)).all()  # the component step alone
    out = seg.segment(sup, q_img, auto_range=True, auto=auto_range_info(s_img, one, [1], q_img))
    kept = np.flatnonzero(out.labels.any((1, 2)))
    assert out.info["windowed"] == [1] and info.extent - 1 <= kept.size <= info.extent + 2  # rounded outwards
    assert np.array_equal(kept, np.arange(kept[0], kept[-1] + 1))


def test_segment_refuses_the_automatic_window_with_a_box_or_slices(monkeypatch):
    """The window chooses its own slices: with a box or a slice range it could label slices outside them."""
    s_img, s_lab = cylinder(z=(5, 17))
    q_img, _q_lab = cylinder(z=(8, 23))
    seg = FewShotSegmenter(net=build_rpnet(), device="cpu", iterations=1)
    monkeypatch.setattr(seg, "predict", _predict_everywhere)
    sup = make_supports(s_img, s_lab, 11, [1])
    auto = auto_range_info(s_img, s_lab, [1], q_img)
    for where in (dict(slices=(10, 14)), dict(box=((10, 0, 0), (14, 40, 40)))):
        with pytest.raises(PromptError, match="automatic window"):
            seg.segment(sup, q_img, auto_range=True, auto=auto, **where)
    assert seg.segment(sup, q_img, auto_range=True, slices=(10, 14)).labels.any((1, 2)).sum() == 4


def test_place_window_follows_the_support_images_not_the_largest_false_positive():
    """Look-alike tissue with the largest area on slices 20-27; the support's slices match query slices 5-12."""
    rng = np.random.default_rng(0)
    n, size = 30, 16
    query = rng.normal(size=(n, size, size))
    support = query[[6, 8, 11]] + 0.3 * rng.normal(size=(3, size, size))  # at 1/6, 1/2, 5/6 of slices 5..12
    area = np.full(n, 50.0)
    area[5:13] = 100.0
    area[20:28] = 300.0
    keep = place_window(area, query, support, 8.0, 16 / 30)  # position prior half-way: no help
    z = np.flatnonzero(keep)
    assert abs(z[0] - 5) <= 1 and abs(z[-1] - 12) <= 1, z
    # support images that match nothing: the largest area wins
    blind = place_window(area, query, support * 0, 8.0, 16 / 30)
    assert blind[20:25].all() and not blind[5:13].any()


def test_auto_range_puts_no_kidney_on_slices_without_it(chaos_sample):
    """Embedded pair (default model, never trained on either): chaos_36's right kidney -> chaos_8. The window
    on the largest kept cross-section landed on slices 26-33, below the kidney (Dice 0.0, every voxel on slices
    without it); placed with the image and position cues it lies on the kidney (measured 0.49, none off it)."""
    (s_img, s_lab), (q_img, q_lab) = chaos_sample.load("chaos_36"), chaos_sample.load("chaos_8")
    seg = FewShotSegmenter(device="cpu")
    sup = make_supports(s_img, s_lab, support_chunk_slices(s_lab, 2)[1], [2])
    new = seg.segment(sup, q_img, auto_range=True, auto=auto_range_info(s_img, s_lab, [2], q_img)).labels == 2
    old = seg.segment(sup, q_img, auto_range=True, extents=support_extents(s_img, s_lab, [2], q_img)).labels == 2
    ref = q_lab == 2
    without = ~ref.any((1, 2))
    assert not new[without].any() and old[without].sum() > 0.5 * old.sum()
    assert dice(new, ref) > dice(old, ref) + 0.3, (dice(new, ref), dice(old, ref))


def test_protocol_refuses_a_fold_model_trained_on_its_query_patients(tmp_path):
    from FewShotSegLib.evaluation.evaluate import evaluate_chaos
    ids = [f"chaos_{i}" for i in (1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39)]

    class Ids:
        case_ids, name, labels = ids, "CHAOS-T2SPIR-fewshot", {}
    bad = save_rpnet(build_rpnet(), tmp_path / "bad.json", dict(DEFAULT_PARAMS),
                     {"training": {"dataset": "CHAOS-T2SPIR-fewshot", "cases": ids[4:]}})
    with pytest.raises(DatasetError, match="trained on chaos_8,"):    # fold 0's support patient
        evaluate_chaos(Ids(), 2, [0], tmp_path, lambda s, f, g: bad, device="cpu")
