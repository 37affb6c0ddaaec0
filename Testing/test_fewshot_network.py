"""RP-Net parts: shapes, the local correlation against a direct sum, masked pooling and cosine by hand."""
import math

import torch

from FewShotSegLib.engine.network import (
    ContextRelationEncoder,
    build_rpnet,
    cosine_logits,
    local_correlation,
    masked_average,
)


def test_local_correlation_matches_direct_sum():
    torch.manual_seed(0)
    a, b = torch.randn(2, 3, 7, 9), torch.randn(2, 3, 7, 9)
    r = 2
    corr = local_correlation(a, b, r)
    assert corr.shape == (2, 25, 7, 9)
    for (y, x, dy, dx) in [(3, 4, 0, 0), (0, 0, 1, 2), (6, 8, -2, -1), (0, 8, -1, 1)]:
        d = (dy + r) * (2 * r + 1) + (dx + r)
        yy, xx = y + dy, x + dx
        expect = (a[:, :, y, x] * b[:, :, yy, xx]).sum(1) / 3 if 0 <= yy < 7 and 0 <= xx < 9 else torch.zeros(2)
        assert torch.allclose(corr[:, d, y, x], expect, atol=1e-6)


def test_cre_and_prototype_shapes():
    net = build_rpnet()
    cre = ContextRelationEncoder(8, 16, radius=5)
    assert cre(torch.randn(2, 8, 12, 12), torch.rand(2, 1, 12, 12)).shape == (2, 16, 12, 12)
    img, mask = torch.randn(3, 1, 64, 64), (torch.rand(3, 1, 64, 64) > 0.7).float()
    state = net.support_state(img, mask)
    c = net.cre.fuse[0].out_channels
    assert state["cre"].shape == (3, c, 16, 16)
    assert state["prototypes"].shape == (3, 2, c) and state["raw_prototypes"].shape == (3, 2, 48)
    out = net(img, mask, torch.randn(3, 1, 64, 64), iterations=4)
    assert len(out["logits"]) == 5  # the prototype step and 4 refinements
    assert all(lg.shape == (3, 2, 64, 64) for lg in out["logits"])


def test_masked_average_and_cosine_by_hand():
    feats = torch.tensor([[[[1.0, 3.0], [0.0, 2.0]], [[0.0, 0.0], [4.0, 2.0]]]])  # (1, C=2, 2, 2)
    mask = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    proto = masked_average(feats, mask)
    assert torch.allclose(proto, torch.tensor([[2.0, 0.0]]), atol=1e-4)
    protos = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # background along x, foreground on the diagonal
    logits = cosine_logits(feats, protos, scale=20.0)
    # pixel (1, 1) = (2, 2): cos to (1, 0) = 1/sqrt(2), to (1, 1) = 1
    assert math.isclose(float(logits[0, 0, 1, 1]), 20 / math.sqrt(2), rel_tol=1e-5)
    assert math.isclose(float(logits[0, 1, 1, 1]), 20.0, rel_tol=1e-5)
    # pixel (1, 0) = (0, 4): orthogonal to the background prototype
    assert abs(float(logits[0, 0, 1, 0])) < 1e-5
