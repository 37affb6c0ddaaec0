"""The thirteenth session's refinement guards, on hand-made arrays: balanced loss weights, a scribble's
uncertainty over the whole 3D box, and a round's changes kept only where they connect to a new scribble."""
import numpy as np
import pytest

from InteractiveRefineLib.engine.finetune import (
    RefineConfig,
    balanced,
    box_loss_weights,
    connected_change,
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


def test_a_scribble_makes_the_disagreeing_voxels_of_a_whole_3d_box_uncertain():
    """RefineConfig.whole_box_3d: in a 3D box a background scribble makes every voxel labelled foreground
    uncertain (weight 0), however far; in a 2D box only those within the Euclidean radius."""
    labels = np.ones((1, 12), bool)
    prob = np.full(labels.shape, 0.95)
    inside = np.ones(labels.shape, bool)
    fg, bg = np.zeros_like(labels), np.zeros_like(labels)
    bg[0, 0] = True
    cfg = RefineConfig(omega=5.0, threshold=0.8, distance_mm=1.0, distance_fraction=None)
    w = box_loss_weights(labels, prob, fg, bg, inside, (1.0, 1.0), cfg)
    assert w.tolist() == [[5, 0] + [1] * 10]  # 2D: the 1 mm radius
    w3 = box_loss_weights(labels[None], prob[None], fg[None], bg[None], inside[None], (3.0, 1.0, 1.0), cfg)
    assert w3[0].tolist() == [[5] + [0] * 11]
    off = RefineConfig(**{**vars(cfg), "whole_box_3d": False})
    w3 = box_loss_weights(labels[None], prob[None], fg[None], bg[None], inside[None], (3.0, 1.0, 1.0), off)
    assert w3[0].tolist() == [[5, 0] + [1] * 10]
    # voxels that agree with the scribble keep teaching; a foreground scribble does the same for background
    labels[0, 6:] = False
    prob = np.where(labels, 0.95, 0.05)
    fg[0, 11] = True
    w3 = box_loss_weights(labels[None], prob[None], fg[None], bg[None], inside[None], (3.0, 1.0, 1.0), cfg)
    assert w3[0].tolist() == [[5] + [0] * 10 + [5]]
    w3 = box_loss_weights(labels[None], prob[None], fg[None], np.zeros_like(bg)[None], inside[None],
                          (3.0, 1.0, 1.0), cfg)
    assert w3[0].tolist() == [[1] * 6 + [0] * 5 + [5]]


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


def test_config_refuses_a_connected_edit_without_a_local_edit():
    with pytest.raises(ValueError, match="local_edit"):
        RefineConfig(connected_edit=True, local_edit=None)


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
