"""Batched 2D augmentation in torch: random affine + smooth elastic warp + intensity (gamma, contrast, noise).

Used for training episodes and for exemplar synthesis. Images (N, 1, S, S) are normalised intensities;
masks (N, 1, S, S) in [0, 1] are warped with the same field and re-binarised at 0.5.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotate_deg: float = 15.0     # uniform +- degrees
    scale: float = 0.15          # zoom in 1 +- scale
    shift: float = 0.08          # translation, fraction of the field of view
    elastic: float = 0.03        # displacement amplitude, fraction of the field of view
    elastic_grid: int = 6        # control points per side of the smooth displacement field
    gamma: float = 0.4           # gamma in exp(+- gamma)
    contrast: float = 0.15       # intensity * (1 +- contrast) + shift of the same size
    noise: float = 0.05          # additive Gaussian noise std (normalised units)


def random_grid(n: int, size: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Sampling grid (n, S, S, 2) for grid_sample: affine then elastic."""
    def u(*shape):
        return torch.rand(*shape, generator=gen) * 2 - 1
    ang = u(n) * math.radians(cfg.rotate_deg)
    sc = 1 + u(n) * cfg.scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) / sc
    theta[:, 0, 1] = -torch.sin(ang) / sc
    theta[:, 1, 0] = torch.sin(ang) / sc
    theta[:, 1, 1] = torch.cos(ang) / sc
    theta[:, :, 2] = u(n, 2) * cfg.shift * 2
    grid = F.affine_grid(theta, (n, 1, size, size), align_corners=False)
    if cfg.elastic > 0:
        coarse = u(n, 2, cfg.elastic_grid, cfg.elastic_grid) * cfg.elastic * 2
        disp = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        grid = grid + disp.permute(0, 2, 3, 1)
    return grid


def warp_image(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling; outside the field of view each image gets its own minimum (background)."""
    fill = x.amin((1, 2, 3), keepdim=True)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def warp_mask(m: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return (F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False) > 0.5).float()


def intensity(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Per-image gamma (on the min-max rescaled image), contrast/brightness and noise."""
    n = x.shape[0]
    lo = x.amin((1, 2, 3), keepdim=True)
    hi = x.amax((1, 2, 3), keepdim=True)
    span = (hi - lo).clamp_min(1e-6)
    g = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.gamma)
    y = ((x - lo) / span).clamp(0, 1) ** g * span + lo
    c = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.contrast
    b = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * cfg.contrast
    y = y * c + b
    return y + torch.randn(y.shape, generator=gen) * cfg.noise


def augment_pair(img: torch.Tensor, mask: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator):
    """Same geometric warp for image and mask, intensity changes on the image only."""
    grid = random_grid(img.shape[0], img.shape[-1], cfg, gen)
    return intensity(warp_image(img, grid), cfg, gen), warp_mask(mask, grid)
