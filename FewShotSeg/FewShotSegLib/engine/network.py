"""RP-Net: recurrent mask refinement for few-shot segmentation (Tang et al., ICCV 2021), re-implemented small.

Data flow for one 1-way 1-shot episode (support image + mask, query image):
  encoder -> features F at 1/4 resolution (C channels) for support and query;
  Context Relation Encoder (CRE) of the support with its mask, of the query with its current mask estimate;
  prototypes = masked average pooling of the support CRE features with the mask and its complement;
  logits = scaled cosine similarity of the query CRE features to [background, foreground] prototypes;
  the query's predicted foreground probability becomes the next query mask (recurrence).
The initial query mask comes from a prototype step on the encoder features (see RPNet.refine).

The encoder is a small encoder with GroupNorm (batch-independent, so one slice at a time behaves as in
training) and two dilated layers at 1/4 resolution for context. It is sized for a whole CHAOS volume in
seconds on a 2-core CPU; the paper's ResNet backbone needs ImageNet weights we cannot download.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURE = "rpnet2d"
DEFAULT_PARAMS = dict(widths=(16, 32, 48), features=48, cre_features=48, radius=5, scale=20.0)


def _conv(c_in: int, c_out: int, stride: int = 1, dilation: int = 1, kernel: int = 3) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=pad, dilation=dilation, bias=False),
                         nn.GroupNorm(min(8, c_out // 4), c_out), nn.ReLU(inplace=True))


class Encoder(nn.Module):
    """(N, 1, H, W) -> (N, features, H/4, W/4); H and W must be multiples of 4."""

    def __init__(self, widths=(16, 32, 64), features: int = 64):
        super().__init__()
        w1, w2, w3 = widths
        self.body = nn.Sequential(
            _conv(1, w1), _conv(w1, w1),                 # full resolution
            _conv(w1, w2, stride=2), _conv(w2, w2),      # 1/2
            _conv(w2, w3, stride=2), _conv(w3, w3),      # 1/4
            _conv(w3, w3, dilation=2), _conv(w3, w3, dilation=4),
            nn.Conv2d(w3, features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def local_correlation(a: torch.Tensor, b: torch.Tensor, radius: int) -> torch.Tensor:
    """corr[n, d, y, x] = <a[n, :, y, x], b[n, :, y + dy, x + dx]> / C for the (2r+1)^2 offsets d = (dy, dx).

    Integer offsets, so bilinear sampling reduces to a shift; samples outside the map are 0.
    (N, C, H, W) x (N, C, H, W) -> (N, (2r+1)^2, H, W), offsets in row-major (dy, dx) order.
    """
    n, c, h, w = a.shape
    bp = F.pad(b, (radius, radius, radius, radius))
    out = []
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out.append((a * bp[:, :, dy:dy + h, dx:dx + w]).sum(1))
    return torch.stack(out, 1) / c


class ContextRelationEncoder(nn.Module):
    """CRE: A = conv(F*m), B = conv(F*(1-m)); output = 1x1 conv of [corr(A, B), A].

    It tells each foreground pixel how it relates to the background around it (the boundary context),
    which is what the recurrence exploits when the mask estimate improves.
    """

    def __init__(self, channels: int, out_channels: int, radius: int = 5):
        super().__init__()
        self.radius = radius
        self.conv_a = _conv(channels, channels)
        self.conv_b = _conv(channels, channels)
        self.fuse = nn.Sequential(nn.Conv2d(channels + (2 * radius + 1) ** 2, out_channels, 1, bias=False),
                                  nn.GroupNorm(min(8, out_channels // 4), out_channels), nn.ReLU(inplace=True))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """feats (N, C, h, w); mask (N, 1, h, w) in [0, 1] at the feature resolution."""
        a = self.conv_a(feats * mask)
        b = self.conv_b(feats * (1.0 - mask))
        return self.fuse(torch.cat([local_correlation(a, b, self.radius), a], 1))


def masked_average(feats: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Masked average pooling: (N, C, h, w), (N, 1, h, w) -> (N, C)."""
    return (feats * mask).sum((2, 3)) / (mask.sum((2, 3)) + eps)


def cosine_logits(feats: torch.Tensor, prototypes: torch.Tensor, scale: float = 20.0) -> torch.Tensor:
    """scale * cos(feature, prototype): (N, C, h, w), (N, K, C) -> (N, K, h, w)."""
    f = F.normalize(feats, dim=1)
    p = F.normalize(prototypes, dim=2)
    return scale * torch.einsum("nchw,nkc->nkhw", f, p)


def downsample_mask(mask: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, H, W) soft mask -> (N, 1, h, w) by area averaging (a soft fraction per feature pixel)."""
    return F.adaptive_avg_pool2d(mask, size)


class RPNet(nn.Module):
    """Few-shot segmenter: support image + mask and a query image -> query logits per refinement step.

    Images are (N, 1, S, S) normalised slices (S a multiple of 4); masks (N, 1, S, S) in [0, 1].
    """

    def __init__(self, widths=(16, 32, 48), features: int = 48, cre_features: int = 48, radius: int = 5,
                 scale: float = 20.0):
        super().__init__()
        self.encoder = Encoder(tuple(widths), features)
        self.cre = ContextRelationEncoder(features, cre_features, radius)
        self.scale = float(scale)

    def support_state(self, support_img: torch.Tensor, support_mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Everything the support contributes, computed once: CRE features and the prototypes.

        'raw_prototypes' pool the encoder features (for the initial mask), 'prototypes' the CRE features.
        """
        f = self.encoder(support_img)
        m = downsample_mask(support_mask, f.shape[-2:])
        g = self.cre(f, m)
        return {"cre": g, "mask": m,
                "raw_prototypes": torch.stack([masked_average(f, 1.0 - m), masked_average(f, m)], 1),
                "prototypes": torch.stack([masked_average(g, 1.0 - m), masked_average(g, m)], 1)}

    def refine(self, query_feats: torch.Tensor, raw_prototypes: torch.Tensor, prototypes: torch.Tensor,
               iterations: int, size, init_mask: Optional[torch.Tensor] = None
               ) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Initial mask, then `iterations` recurrent CRE refinements.

        The initial mask is `init_mask` (N, 1, S, S) when given, else the prototype step on the encoder
        features (PANet-style; its logits are returned as step 0). The CRE features of pixels outside the
        current mask carry no image content, so an unaligned support mask as the start could only be trimmed,
        never moved: the prototype step gives the recurrence a start in the right place.
        Returns full-size logits (N, 2, S, S) per step and the last step's query CRE features.
        """
        outs = []
        if init_mask is None:
            logits = cosine_logits(query_feats, raw_prototypes, self.scale)
            m = logits.softmax(1)[:, 1:2]
            outs.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
        else:
            m = downsample_mask(init_mask, query_feats.shape[-2:])
        g = query_feats
        for _ in range(iterations):
            g = self.cre(query_feats, m)
            logits = cosine_logits(g, prototypes, self.scale)
            m = logits.softmax(1)[:, 1:2]
            outs.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
        return outs, g

    def forward(self, support_img: torch.Tensor, support_mask: torch.Tensor, query_img: torch.Tensor,
                init_mask: Optional[torch.Tensor] = None, iterations: int = 3) -> Dict[str, object]:
        """One batch of episodes: logits of the initial step (unless init_mask is given) and each refinement."""
        sup = self.support_state(support_img, support_mask)
        qf = self.encoder(query_img)
        outs, g = self.refine(qf, sup["raw_prototypes"], sup["prototypes"], iterations, query_img.shape[-2:],
                              init_mask)
        return {"logits": outs, "support": sup, "query_cre": g}

    def alignment_logits(self, query_cre: torch.Tensor, query_logits: torch.Tensor,
                         support_cre: torch.Tensor) -> torch.Tensor:
        """PANet prototype alignment: prototypes from the query's prediction segment the support."""
        p = F.interpolate(query_logits, size=query_cre.shape[-2:], mode="bilinear",
                          align_corners=False).softmax(1)
        protos = torch.stack([masked_average(query_cre, p[:, :1]), masked_average(query_cre, p[:, 1:])], 1)
        return cosine_logits(support_cre, protos, self.scale)


def build_rpnet(**overrides) -> RPNet:
    params = dict(DEFAULT_PARAMS)
    params.update(overrides)
    return RPNet(**params)
