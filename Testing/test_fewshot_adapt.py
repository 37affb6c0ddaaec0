"""Exemplar adaptation: the losses by hand, and adaptation that must change and improve the prediction.

Written to fail when the adaptation is sabotaged: a learning rate near zero (no improvement), the
pseudo-label stage skipped (stage-2 steps with confidence weights missing), the contrastive term removed
(hand-computed loss; the term must be used in every adaptation step).
"""
import math

import numpy as np
import pytest
import torch

from FewShotSegLib.engine import adapt as adapt_module
from FewShotSegLib.engine.adapt import AdaptConfig, adapt_segmenter
from FewShotSegLib.engine.losses import dice_ce, prototype_contrastive
from FewShotSegLib.engine.segment import FewShotSegmenter, make_supports
from FewShotSegLib.evaluation.evaluate import protocol_case

RIGHT_KIDNEY = 2


def test_contrastive_loss_by_hand():
    # three pixels: (1,0) background, (0,1) and (1,1)/sqrt2 foreground; temperature 1
    feats = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]).reshape(1, 2, 1, 3)
    target = torch.tensor([0.0, 1.0, 1.0]).reshape(1, 1, 1, 3)
    # prototypes: background (1,0); foreground = mean of (0,1), (.707,.707) -> direction at 67.5 degrees
    c67, c22, c45 = math.cos(math.radians(67.5)), math.cos(math.radians(22.5)), math.cos(math.radians(45))
    # cross-entropy over [cos(p, bg), cos(p, fg)] with the pixel's own class
    expected = (math.log(1 + math.exp(c67 - 1)) + math.log(1 + math.exp(0 - c22))
                + math.log(1 + math.exp(c45 - c22))) / 3
    got = prototype_contrastive(feats, target, temperature=1.0)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # temperature divides the cosines; a zero weight removes a pixel from the mean
    t = 0.5
    expected_t = (math.log(1 + math.exp((c67 - 1) / t)) + math.log(1 + math.exp(-c22 / t))
                  + math.log(1 + math.exp((c45 - c22) / t))) / 3
    assert prototype_contrastive(feats, target, temperature=t).item() == pytest.approx(expected_t, rel=1e-5)
    w = torch.tensor([1.0, 1.0, 0.0]).reshape(1, 1, 1, 3)
    fg = torch.tensor([0.0, 1.0])   # the weighted foreground prototype is the (0,1) pixel alone
    expected_w = (math.log(1 + math.exp(0 - 1)) + math.log(1 + math.exp(0 - 1))) / 2
    assert fg.tolist() == [0.0, 1.0]
    assert prototype_contrastive(feats, target, 1.0, w).item() == pytest.approx(expected_w, rel=1e-5)


def test_dice_ce_by_hand():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1, 0, 0] = math.log(3.0)             # p(fg) = 0.75 at pixel 0, 0.5 at pixel 1
    target = torch.tensor([1.0, 0.0]).reshape(1, 1, 1, 2)
    ce = (-math.log(0.75) - math.log(0.5)) / 2
    dice = 1 - (2 * 0.75 + 1) / (0.75 + 0.5 + 1 + 1)
    assert dice_ce(logits, target).item() == pytest.approx(ce + dice, rel=1e-6)


@pytest.fixture(scope="module")
def default_segmenter():
    return FewShotSegmenter(device="cpu")


def test_adaptation_changes_and_improves_the_prediction(default_segmenter, chaos_sample, monkeypatch):
    """Right kidney, support chaos_36 -> query chaos_8 (neither seen by the default model): plain 0.44."""
    support, query = chaos_sample.load("chaos_36"), chaos_sample.load("chaos_8")
    calls = {"contrastive": 0, "weighted": 0, "steps": 0}
    real_contrastive, real_step = adapt_module.prototype_contrastive, adapt_module._step

    def contrastive(*args, **kw):
        calls["contrastive"] += 1
        return real_contrastive(*args, **kw)

    def step(net, opt, s_img, s_mask, q_img, q_mask, cfg, weight=None):
        calls["steps"] += 1
        if weight is not None and (weight == 0).any() and (weight == 1).any():
            calls["weighted"] += 1          # confident pixels only in stage 2
        return real_step(net, opt, s_img, s_mask, q_img, q_mask, cfg, weight)
    monkeypatch.setattr(adapt_module, "prototype_contrastive", contrastive)
    monkeypatch.setattr(adapt_module, "_step", step)
    cfg = AdaptConfig(steps=4, pseudo_steps=2, batch=4)
    adapted_info = {}

    def adapter(seg, supports, q_img):
        out = adapt_segmenter(seg, supports, q_img, 0, cfg)
        adapted_info.update(out.manifest["adapted"])
        return out
    plain = protocol_case(default_segmenter, support, query, RIGHT_KIDNEY)
    adapted = protocol_case(default_segmenter, support, query, RIGHT_KIDNEY, adapter=adapter)
    assert plain["adaptation"] is None and adapted["adaptation"]["steps"] == 4
    assert adapted_info["steps"] == 4 and adapted_info["pseudo_steps"] == 2 and adapted_info["pseudo_label_slices"] > 0
    assert adapted_info["requested"]["lr"] == cfg.lr and adapted_info["cut_by_time_cap"] == []
    assert calls == {"contrastive": 6, "weighted": 2, "steps": 6}
    # measured: plain 0.442, adapted 0.717 (lr 1e-9 leaves it at 0.442)
    assert adapted["dice"] > plain["dice"] + 0.15, (plain["dice"], adapted["dice"])


def test_same_steps_give_the_same_network_and_a_cap_is_reported(default_segmenter, chaos_sample):
    img, lab = chaos_sample.load("chaos_36")
    sup = make_supports(img, lab, int(np.flatnonzero((lab == 2).any((1, 2)))[5]), [2])
    cfg = AdaptConfig(steps=2, pseudo_steps=0, batch=2)
    a = adapt_segmenter(default_segmenter, sup, img, 0, cfg).net.state_dict()
    b = adapt_segmenter(default_segmenter, sup, img, 0, cfg).net.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    capped = adapt_segmenter(default_segmenter, sup, img, 0, AdaptConfig(steps=5, pseudo_steps=3, batch=2,
                                                                          time_budget=1e-6))
    info = capped.manifest["adapted"]
    assert info["steps"] == 0 and info["cut_by_time_cap"] == ["stage 1", "stage 2"]
    assert AdaptConfig().time_budget is None     # no cap unless asked (the GUI asks)
