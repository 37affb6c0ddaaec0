"""Segmentation losses of the few-shot network and the exemplar adaptation."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F


def dice_ce(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Soft foreground Dice loss + cross-entropy. logits (N, 2, H, W); target (N, 1, H, W) in {0, 1}.

    `weight` (N, 1, H, W) in [0, 1] masks pixels out of both terms (0 = ignore), for pseudo-labels.
    """
    t = target[:, 0].long()
    w = torch.ones_like(target[:, 0]) if weight is None else weight[:, 0]
    ce = (F.cross_entropy(logits, t, reduction="none") * w).sum() / w.sum().clamp_min(1.0)
    p = logits.softmax(1)[:, 1] * w
    g = target[:, 0] * w
    dice = 1 - (2 * (p * g).sum((1, 2)) + 1) / (p.sum((1, 2)) + g.sum((1, 2)) + 1)
    return ce + dice.mean()


def refinement_loss(step_logits: Sequence[torch.Tensor], target: torch.Tensor,
                    weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean Dice + CE over the recurrent steps: every step is supervised, so every step is a usable answer."""
    return sum(dice_ce(lg, target, weight) for lg in step_logits) / len(step_logits)


def prototype_contrastive(feats: torch.Tensor, target: torch.Tensor, temperature: float = 0.1,
                          weight: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Pixel-to-prototype contrast (ELSNet): each pixel pulled to its class prototype, pushed from the other.

    feats (N, C, h, w); target (N, 1, H, W) in {0, 1}, resized to the features. Prototypes are the masked
    means of each image's own features; the loss is cross-entropy over cos(pixel, prototype) / temperature.
    """
    t = F.interpolate(target, size=feats.shape[-2:], mode="area")
    w = torch.ones_like(t) if weight is None else F.interpolate(weight, size=feats.shape[-2:], mode="area")
    f = F.normalize(feats, dim=1)
    protos = []
    for m in (1 - t, t):
        mw = m * w
        protos.append((f * mw).sum((2, 3)) / mw.sum((2, 3)).clamp_min(1e-5))
    p = F.normalize(torch.stack(protos, 1), dim=2)                    # (N, 2, C)
    logits = torch.einsum("nchw,nkc->nkhw", f, p) / temperature
    lab = (t[:, 0] > 0.5).long()
    ce = F.cross_entropy(logits, lab, reduction="none") * w[:, 0]
    return ce.sum() / w.sum().clamp_min(1.0)
