"""The thirteenth session's refinement guards, on hand-made arrays: balanced loss weights, the geodesic
neighbourhood of a scribble, and a round's changes kept only where they connect to a new scribble."""
import numpy as np
import pytest

from InteractiveRefineLib.engine.finetune import (
    RefineConfig,
    balanced,
    box_loss_weights,
    connected_change,
    geodesic_costs,
    geodesic_near,
    local_edit,
)


def test_balanced_weights_give_each_label_the_same_total():
    labels = np.array([1, 1, 0, 0, 0, 0, 0, 1], bool)
    w = np.array([1, 1, 1, 1, 1, 1, 0, 20], np.float32)  # the last voxel is a scribble
    seeds = np.zeros(8, bool)
    seeds[7] = True
    out = balanced(w, labels, seeds)
    # free foreground 2, background 4: both become 3 (x1.5 and x0.75); the scribble keeps 20, weight 0 stays 0
    np.testing.assert_allclose(out, [1.5, 1.5, 0.75, 0.75, 0.75, 0.75, 0, 20])
    none = labels.copy()
    none[:] = False
    np.testing.assert_array_equal(balanced(w, none, seeds), w)  # one label only: unchanged


def test_geodesic_neighbourhood_stops_at_an_edge():
    """A 1 x 12 image, dark then bright from column 6: from a scribble on column 0 the geodesic radius of
    8 mm reaches the dark columns and not across the edge, where the Euclidean distance would. The central
    gradient is 1.5 on columns 5 and 6, so reaching column 5 costs 4 + (1 + 8.5) / 2 = 8.75 mm."""
    img = np.array([[0.0] * 6 + [3.0] * 6])
    seeds = np.zeros(img.shape, bool)
    seeds[0, 0] = True
    costs = geodesic_costs(img, (1.0, 1.0), edge=5.0)
    near = geodesic_near(seeds, costs, (1.0, 1.0), radius=8.0)
    assert near[0, :5].all() and not near[0, 5:].any()
    flat = geodesic_near(seeds, geodesic_costs(np.zeros_like(img), (1.0, 1.0), 5.0), (1.0, 1.0), 8.0)
    assert flat[0, :9].all() and not flat[0, 9:].any()  # no edge: the Euclidean 8 mm


def test_geodesic_distance_follows_the_voxel_spacing():
    """Steps are scaled by the spacing (mm): on a flat 3 x 9 image with rows 4 mm apart and columns 1 mm apart,
    a radius of 5 mm from the middle of the top row reaches the whole top row, one column either side on the
    next row (4 mm down, then 1 mm across; a diagonal step is 4.1 mm) and nothing on the last row (8 mm)."""
    seeds = np.zeros((3, 9), bool)
    seeds[0, 4] = True
    near = geodesic_near(seeds, geodesic_costs(np.zeros((3, 9)), (4.0, 1.0), 2.0), (4.0, 1.0), radius=5.0)
    assert near[0].all() and not near[2].any()
    assert near[1].tolist() == [False] * 3 + [True] * 3 + [False] * 3


def test_geodesic_uncertainty_in_the_loss_weights():
    """A background scribble in a dark region labelled foreground: with geodesic_edge the rest of the dark
    region is uncertain (weight 0), the bright foreground beyond the edge still teaches. The default applies
    it to 3D boxes only (geodesic_2d False)."""
    img = np.array([[0.0] * 6 + [3.0] * 6], np.float32)
    labels = np.ones(img.shape, bool)
    prob = np.full(img.shape, 0.95)
    inside = np.ones(img.shape, bool)
    fg, bg = np.zeros_like(labels), np.zeros_like(labels)
    bg[0, 0] = True
    base = dict(omega=5.0, threshold=0.8, distance_mm=1.0, distance_fraction=None, geodesic_fraction=0.7)
    euclidean = [[5, 0] + [1] * 10]
    geodesic = [[5] + [0] * 4 + [1] * 7]  # radius 0.7 x 12 mm = 8.4 mm (column 5: 8.75)
    w = box_loss_weights(labels, prob, fg, bg, inside, (1.0, 1.0), RefineConfig(**base, geodesic_edge=None), img)
    assert w.tolist() == euclidean
    w = box_loss_weights(labels, prob, fg, bg, inside, (1.0, 1.0), RefineConfig(**base, geodesic_edge=5.0,
                                                                                 geodesic_2d=True), img)
    assert w.tolist() == geodesic
    w = box_loss_weights(labels, prob, fg, bg, inside, (1.0, 1.0), RefineConfig(**base, geodesic_edge=5.0), img)
    assert w.tolist() == euclidean  # 2D box, default: Euclidean only
    w3 = box_loss_weights(labels[None], prob[None], fg[None], bg[None], inside[None], (3.0, 1.0, 1.0),
                          RefineConfig(**base, geodesic_edge=5.0), img[None])
    assert w3[0].tolist() == geodesic  # a 3D box (one slice deep here) takes it by default


def test_connected_change_keeps_the_pieces_a_scribble_touches():
    prev = np.zeros((9, 9), bool)
    prev[1:8, 1:8] = True  # a filled square
    new = prev.copy()
    new[3:6, 3:6] = False  # the centre removed, touching the background scribble
    new[1, 1:8] = False  # the top row removed: far from it
    new[8, 4] = True  # a pixel added below, no foreground scribble
    bg = np.zeros_like(prev)
    bg[4, 4] = True
    keep = connected_change(prev, new, np.zeros_like(prev), bg)
    assert keep[3:6, 3:6].all() and keep.sum() == 9
    out = local_edit(prev, new, np.zeros_like(prev), bg, np.ones_like(prev), 1.0, connected=True)
    expected = prev.copy()
    expected[3:6, 3:6] = False
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(local_edit(prev, new, np.zeros_like(prev), bg, np.ones_like(prev), 1.0), new)


def test_config_refuses_bad_guards():
    for bad in ({"geodesic_edge": -1.0}, {"geodesic_edge": 1.0, "geodesic_fraction": 0.0},
                {"geodesic_edge": float("nan")}, {"geodesic_edge": float("inf")}, {"geodesic_fraction": None},
                {"connected_edit": True, "local_edit": None}):
        with pytest.raises(ValueError):
            RefineConfig(**bad)


def test_balance_counts_only_the_box():
    """RefineConfig.balance in box_loss_weights: the voxels outside the box weigh 0 and take no part in the
    balance, so inside the box both labels end with the same total (also when the background seeds do not
    hold the outside of the box, as fine_tune's do)."""
    labels = np.array([[0, 1, 1, 0, 0, 0, 0, 0, 0, 0]], bool)
    prob = np.where(labels, 0.95, 0.05)
    inside = np.zeros_like(labels)
    inside[0, :5] = True
    none = np.zeros_like(labels)
    cfg = RefineConfig(omega=5.0, threshold=0.8, distance_fraction=None, balance=True)
    for bg in (~inside, none):
        w = box_loss_weights(labels, prob, none, bg, inside, (1.0, 1.0), cfg)
        assert w[~inside].sum() == 0
        assert w[inside & labels].sum() == pytest.approx(w[inside & ~labels].sum()) == pytest.approx(2.5)


def test_the_geodesic_neighbourhood_is_computed_once_per_scribble_set(monkeypatch):
    """fine_tune's alternations share the scribbles: one shortest-path run per seed set, not one per
    alternation (a 48 x 96 x 96 grid takes about 0.5 s)."""
    import torch

    from InteractiveRefineLib.engine import finetune

    calls = []
    real = finetune.geodesic_near
    monkeypatch.setattr(finetune, "geodesic_near", lambda *a, **k: calls.append(1) or real(*a, **k))
    shape = (4, 10, 10)
    inside = np.zeros(shape, bool)
    inside[:, 2:8, 2:8] = True
    fg, bg = np.zeros(shape, bool), ~inside
    fg[2, 5, 5] = True
    bg[2, 3, 3] = True
    head = torch.nn.Conv3d(3, 2, 1)
    res = finetune.fine_tune(head, torch.randn(1, 3, *shape), np.random.default_rng(0).normal(size=shape),
                             (2.0, 1.0, 1.0), fg, bg, RefineConfig(iterations=3, steps=1), inside=inside)
    assert res.iterations == 3 and len(calls) == 2  # the foreground and the background scribbles


def test_the_session_passes_connected_edit_to_the_local_edit(chaos8, segmenter, monkeypatch):
    """RefineConfig.connected_edit reaches finetune.local_edit from a session's refinement."""
    from InteractiveRefineLib.core.prompts import box_from_mask, main_object
    from InteractiveRefineLib.engine import finetune
    from InteractiveRefineLib.engine.session import InteractiveSession
    from InteractiveRefineLib.evaluation.robot import next_scribble

    seen = []
    real = finetune.local_edit
    monkeypatch.setattr(finetune, "local_edit", lambda *a, **k: seen.append(a[5:]) or real(*a, **k))
    image, label = chaos8
    ref = label == 2
    box = box_from_mask(main_object(ref), 0, 12)
    for flag in (True, False):
        s = InteractiveSession(image, segmenter, config=RefineConfig(connected_edit=flag, steps_2d=1))
        s.set_box(box, reference=ref)
        sc = next_scribble(s.mask(), ref, box, image.spacing_kji, np.random.default_rng(0))
        s.add_scribble(sc.voxels, sc.label)
        s.refine()
    assert seen == [(0.25, True), (0.25, False)]
