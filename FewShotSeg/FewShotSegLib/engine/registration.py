"""RP-Net's initial query mask, as its released code computes it: the support mask, affine-registered.

RP-Net (Tang et al., ICCV 2021; github.com/uci-cbcl/RP-Net, dataset/few_shot_reader.py get_registration_field
and net/registration.py AffineRegistration) registers the support slice to each query slice with a 2D affine
transform (identity start, Adam lr 0.01, 50 iterations, mean squared error of the [0, 1]-scaled images),
warps the support label with it and keeps warped values > 0.1 as the query's starting mask. (Their optional
Demons stage after the affine one is not done here.) This is written anew in batched torch, one affine per
(support, query) slice pair, on the network grid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ITERATIONS = 50
LR = 0.01
THRESHOLD = 0.1


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Per-image min-max scaling to [0, 1] (their images are [-1, 1] mapped to [0, 1])."""
    lo = x.amin((1, 2, 3), keepdim=True)
    hi = x.amax((1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(1e-6)


def affine_register(moving: torch.Tensor, fixed: torch.Tensor, iterations: int = ITERATIONS,
                    lr: float = LR) -> torch.Tensor:
    """Affine matrices theta (N, 2, 3) mapping fixed-grid coordinates into `moving` (both (N, 1, S, S))."""
    moving = _unit(moving.detach().float())
    fixed = _unit(fixed.detach().float())
    n = moving.shape[0]
    theta = torch.zeros(n, 2, 3, device=moving.device)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta.requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    with torch.enable_grad():
        for _ in range(iterations):
            grid = F.affine_grid(theta, list(moving.shape), align_corners=False)
            warped = F.grid_sample(moving, grid, align_corners=False)
            # per-pair MSE summed over the batch, so each pair's step is what it would be alone
            loss = ((warped - fixed) ** 2).mean((1, 2, 3)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return theta.detach()


def registered_masks(support_img: torch.Tensor, support_mask: torch.Tensor, query_img: torch.Tensor,
                     iterations: int = ITERATIONS, threshold: float = THRESHOLD) -> torch.Tensor:
    """Support masks (N, 1, S, S) warped onto the query slices by the affine registration, binary."""
    theta = affine_register(support_img, query_img, iterations)
    grid = F.affine_grid(theta, list(support_mask.shape), align_corners=False)
    warped = F.grid_sample(support_mask.float(), grid, align_corners=False)
    return (warped > threshold).float()
