"""Image-specific fine-tuning of BIFSeg (Wang et al., IEEE TMI 2018) with an uncertainty-weighted loss.

Alternates (a) with the parameters fixed, a label update by the graph-cut CRF (scribbles clamped) and
(b) with the labels fixed, a few gradient steps on a weighted cross-entropy where scribbled voxels
weigh `omega`, uncertain voxels 0 and the rest 1. By default only the classifier head is updated and
the frozen features are computed once per object, so an iteration costs a CRF and a few 1x1 convolutions.
All work happens on the network grid of the object's crop.
"""
from __future__ import annotations

import math
import numbers
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from ..core.errors import CancelledError
from .crf import DEFAULT_LAMBDA, crf_segment
from .networks import THREE_VIEWS_MAX_DEPTH, THREE_VIEWS_MIN_SIDE, check_views

Progress = Optional[Callable[[float, str], None]]
Cancel = Optional[Callable[[], bool]]


@dataclass
class RefineConfig:
    """Constants of refinement; defaults chosen on CHAOS training patients (never on test patients).

    Selection (chaos_1, 2, 3, 19; robot scribbles, 5 rounds, kidneys as the unseen class): lr 1e-3 with
    omega 20 raised 3D right-kidney Dice from 0.696 to 0.838 after 3 rounds (lr 3e-4 with 20 steps: 0.817;
    the CRF alone without fine-tuning: 0.706) and 2D kidneys to 0.97 after 3 rounds; at lr 1e-3 the loss
    must ignore voxels outside the box, which otherwise shrank the object (2D Dice fell by 0.1).

    omega: loss weight of scribbled voxels (> 1: the user's word counts more than the network's).
    threshold: network-based uncertainty t: a voxel whose probability of its current label is below
        t gets weight 0 (it neither teaches nor is taught).
    distance_mm: interaction-based uncertainty: an unscribbled voxel within this distance of a scribble
        whose current label disagrees with that scribble gets weight 0 (the CRF has not yet carried the
        correction that far; the network should not learn the old label there).
    iterations: CRF/parameter alternations per refine call.
    steps: gradient steps per alternation.
    lr: Adam learning rate of the fine-tuned parameters.
    head_only: update only the classifier head (features computed once). False updates every layer
        (the BIFSeg paper's variant; slower, features recomputed each step).
    lam, sigma, connectivity: the CRF (see crf.crf_segment); used for the label update and the result.
    crf_on_box: the initial box prediction is post-processed by the CRF too (BIFSeg's round 0).
    final_grid: 'native' runs the final CRF on the native-resolution crop, so the result follows the
        image's own voxels and the scribbles are exact there; 'network' on the network grid (faster
        for very large boxes).
    time_budget: seconds a refine call may take; when reached it stops after the current step and
        returns the best it has (None: no limit).
    margin_mm: context around the box given to the network (None: the model's own, 10 mm).
    prior_weight: when correcting an adopted segmentation (session.adopt), the weight of its probability
        against the network's in every label update. Chosen on training patients (chaos_1, 2, 3, 19;
        kidneys, 3D, starts eroded by 3 voxels or shifted by 6, 3 robot rounds): 0.7 improved every case
        at the first refinement (mean 0.77 -> 0.81 -> 0.82 -> 0.83 eroded, 0.81 -> 0.86 -> 0.87 -> 0.88
        shifted); 0.5 ended similar (0.85, 0.89) but made some cases much worse first (0.77 -> 0.51),
        0.3 more so.

    Safeguards ("refinement never hurts", issue 11; chosen on the validation structures of box_sources.py,
    benchmarks/box_networks/select_refinement.md, which also re-measured lr: 1e-3 collapsed small
    structures; 3e-4 still let cord and fetal groups drop at some rounds; 1e-4 is the only setting measured
    where no group's mean Dice drops at any round, in 2D and 3D):
    distance_fraction: the interaction-uncertainty radius is at most this fraction of the box's smallest
        extent (a fixed 3 mm zeroed nearly all foreground of a 5-8 mm structure; None: distance_mm only).
    lam_2d: the CRF weight for 2D boxes (None: lam).
    steps_2d: gradient steps per alternation for 2D boxes (None: steps). 30 (3D keeps 10), chosen on the
        validation structures (benchmarks/box_networks/select_refinement_s12.md): 2D mean of groups after
        rounds 1-3 0.758 / 0.788 / 0.809 -> 0.761 / 0.790 / 0.813, no group lower than at the round before;
        in 3D 30 steps gave +0.002 for twice the refinement time (2.6 s against 1.3 s), so 3D keeps 10.
    crf_min_keep: a CRF result keeping less than this share of the thresholded probability's foreground
        inside the box is replaced by the threshold (the pairwise term erased a small or thin object). In
        a refinement, a new background scribble on one piece of a foreground in several pieces strikes
        that piece out: keeping this share of the other pieces is then enough.
    local_edit: a refinement changes the result only within this fraction of the box's extent (per axis)
        of the scribbles added since the last result (None: everywhere).
    whole_box_3d: in 3D boxes the interaction-based uncertainty covers the whole box: every unscribbled voxel
        whose label disagrees with a scribble weighs 0, so after a correction the head learns from the scribbles
        and the voxels that agree with them, not the old label elsewhere in the organ. Chosen in the thirteenth
        session on the validation structures and the CHAOS training patients' kidneys
        (benchmarks/box_networks/select_refinement_s13.md): 3D mean of groups after rounds 1-3 0.667 / 0.675 /
        0.686 -> 0.670 / 0.682 / 0.692, training kidneys at round 3 0.924 -> 0.935. It was found as a geodesic
        neighbourhood (steps costing more across intensity edges) with the box's largest extent as its radius,
        which reached practically the whole box: with no edge cost it scored the same, with a higher edge cost
        or half the radius less. In 2D boxes the geodesic version lowered the mean (0.811 -> 0.806).
    balance: the unscribbled voxels of each label weigh the same in total in the loss (meant for a few confident
        foreground voxels among many background ones, which taught the head "all background").
    connected_edit: within local_edit's neighbourhood, only changes connected to a new scribble of their sign
        are kept: foreground removed only in pieces that touch a new background scribble, added only in pieces
        that touch a new foreground scribble. Only with local_edit.
        balance and connected_edit were measured in the thirteenth session and are off: 2D mean of groups at
        round 3 0.811 -> 0.811 and 0.812, 3D level (select_refinement_s13.md); on the tumour slice that
        motivated them the connected edit did not help (the rim's removal touched the scribbles).
    fallback_margin: when the shipped network gives the label of the scribbles added since the current result a
        higher mean probability than the tuned head, by more than this, the object leaves the tuned head for the
        shipped network + CRF from that round on (the user has just corrected an error the fine-tuning made or
        deepened; session._falls_back; local_edit still applies). None: never. 0, chosen in
        the fourteenth session on the validation structures (select_refinement_s14.md): 2D mean of groups
        after rounds 2 / 3 0.792 / 0.811 -> 0.794 / 0.815 (fetal 0.393 -> 0.412, validation kidneys 0.972 ->
        0.968, training kidneys 0.976 -> 0.977), 3D level (0.692; training kidneys 0.935); margins 0.1 and
        0.3 fell back less often and gained less.
    views3d: views of the slice-wise 3D network (None: the model's own; 3: multi-view fusion, about 3x
        the CPU time of a 3D box; networks.SliceWise).
    three_views_min_side: a box thinner than this many voxels along an axis is read with one view even
        when three are asked (chosen on the validation structures: networks.THREE_VIEWS_MIN_SIDE; 0: never).
    three_views_max_depth: a box whose three-view grid is deeper than this many slices is read with one view
        (the 1 s latency budget: networks.THREE_VIEWS_MAX_DEPTH; None: no limit).
    """

    omega: float = 20.0
    threshold: float = 0.8
    distance_mm: float = 3.0
    iterations: int = 3
    steps: int = 10
    lr: float = 1e-4
    head_only: bool = True
    lam: float = DEFAULT_LAMBDA
    sigma: Optional[float] = None
    connectivity: Optional[int] = None
    crf_on_box: bool = True
    final_grid: str = "native"
    time_budget: Optional[float] = None
    margin_mm: Optional[float] = None
    prior_weight: float = 0.7
    distance_fraction: Optional[float] = 0.1
    lam_2d: Optional[float] = None
    steps_2d: Optional[int] = 30
    crf_min_keep: Optional[float] = 0.5
    local_edit: Optional[float] = 0.25
    connected_edit: bool = False
    whole_box_3d: bool = True
    balance: bool = False
    fallback_margin: Optional[float] = 0.0
    views3d: Optional[int] = None
    three_views_min_side: int = THREE_VIEWS_MIN_SIDE
    three_views_max_depth: Optional[int] = THREE_VIEWS_MAX_DEPTH

    def lam_for(self, ndim: int) -> float:
        """The CRF weight for a 2D or 3D box (lam_2d for 2D boxes when set)."""
        return self.lam_2d if ndim == 2 and self.lam_2d is not None else self.lam

    def steps_for(self, ndim: int) -> int:
        """Gradient steps per alternation for a 2D or 3D box (steps_2d for 2D boxes when set)."""
        return self.steps_2d if ndim == 2 and self.steps_2d is not None else self.steps

    def __post_init__(self):
        if self.omega <= 0 or not 0.5 <= self.threshold <= 1.0 or self.distance_mm < 0:
            raise ValueError("omega must be > 0, threshold in [0.5, 1], distance_mm >= 0")
        if self.iterations < 1 or self.steps < 0 or self.lr <= 0 or self.lam < 0:
            raise ValueError("iterations >= 1, steps >= 0, lr > 0 and lam >= 0 are required")
        check_views(self.views3d)
        if int(self.three_views_min_side) < 0:
            raise ValueError(f"three_views_min_side must be >= 0 (got {self.three_views_min_side})")
        depth = self.three_views_max_depth
        if depth is not None and (isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1):
            raise ValueError(f"three_views_max_depth must be a whole number >= 1 or None (got {depth!r})")
        if not 0.0 <= self.prior_weight <= 1.0:
            raise ValueError(f"prior_weight must be in [0, 1]; got {self.prior_weight}")
        if self.fallback_margin is not None and not 0.0 <= self.fallback_margin < 1.0:
            raise ValueError(f"fallback_margin must be in [0, 1) or None; got {self.fallback_margin}")
        for name in ("distance_fraction", "crf_min_keep", "local_edit"):
            v = getattr(self, name)
            if v is not None and not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be in (0, 1] or None; got {v}")
        if self.connected_edit and self.local_edit is None:
            raise ValueError("connected_edit works within local_edit's neighbourhood: set local_edit too")
        if self.steps_2d is not None and (isinstance(self.steps_2d, bool) or self.steps_2d < 0):
            raise ValueError(f"steps_2d must be >= 0 or None; got {self.steps_2d}")
        if self.lam_2d is not None and self.lam_2d < 0:
            raise ValueError(f"lam_2d must be >= 0 or None; got {self.lam_2d}")
        if self.final_grid not in ("native", "network"):
            raise ValueError(f"final_grid must be 'native' or 'network'; got {self.final_grid!r}")


def loss_weights(labels: np.ndarray, probability: np.ndarray, fg_seeds: np.ndarray, bg_seeds: np.ndarray,
                 spacing: Sequence[float], omega: float, threshold: float, distance_mm: float) -> np.ndarray:
    """Per-voxel loss weights: omega on scribbles, 0 on uncertain voxels, 1 elsewhere (float32).

    Uncertain = network-based (P(current label) < threshold) or interaction-based (unscribbled, within
    distance_mm of a scribble (math.inf: anywhere), current label disagrees with that scribble).
    """
    labels = np.asarray(labels, bool)
    p_label = np.where(labels, probability, 1.0 - probability)
    uncertain = p_label < threshold
    for seeds, disagree in ((fg_seeds, ~labels), (bg_seeds, labels)):
        if seeds.any():
            if math.isinf(distance_mm):
                uncertain |= disagree
                continue
            near = ndimage.distance_transform_edt(~seeds, sampling=spacing) <= distance_mm
            uncertain |= near & disagree
    w = np.ones(labels.shape, dtype=np.float32)
    w[uncertain] = 0.0
    w[fg_seeds | bg_seeds] = omega
    return w


def box_loss_weights(labels: np.ndarray, probability: np.ndarray, fg_seeds: np.ndarray, bg_seeds: np.ndarray,
                     inside: Optional[np.ndarray], spacing: Sequence[float], cfg: "RefineConfig") -> np.ndarray:
    """loss_weights for one box: the outside of the box is clamped background for the CRF but it is not
    a background scribble: it neither makes foreground voxels near the box edge uncertain nor gets
    the scribble weight; it gets weight 0 (never predicted). In a 3D box with cfg.whole_box_3d a scribble
    makes the disagreeing voxels of the whole box uncertain."""
    scribbled_bg = bg_seeds if inside is None else bg_seeds & inside
    radius = math.inf if cfg.whole_box_3d and np.ndim(labels) == 3 else uncertain_radius(inside, spacing, cfg)
    w = loss_weights(labels, probability, fg_seeds, scribbled_bg, spacing, cfg.omega, cfg.threshold, radius)
    if inside is not None:
        w[~inside] = 0.0
    if cfg.balance:
        w = balanced(w, labels, fg_seeds | bg_seeds)
    return w


def balanced(weights: np.ndarray, labels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """`weights` with the unscribbled voxels of each label rescaled to the same total (their sum unchanged);
    scribbled voxels keep theirs. A label with no weighted voxel leaves the weights as they are."""
    free = ~seeds
    fg, bg = free & np.asarray(labels, bool), free & ~np.asarray(labels, bool)
    w_fg, w_bg = float(weights[fg].sum()), float(weights[bg].sum())
    if w_fg <= 0 or w_bg <= 0:
        return weights
    out = weights.copy()
    half = 0.5 * (w_fg + w_bg)
    out[fg] *= half / w_fg
    out[bg] *= half / w_bg
    return out


def box_sides(inside: np.ndarray) -> list:
    """The box's extent in voxels along each axis (`inside`: the box mask, not empty)."""
    ext = [np.flatnonzero(inside.any(axis=tuple(b for b in range(inside.ndim) if b != a)))
           for a in range(inside.ndim)]
    return [int(e[-1] - e[0] + 1) for e in ext]


def box_extent_mm(inside: Optional[np.ndarray], spacing: Sequence[float]) -> list:
    """The box's extent (mm) along each axis where it spans more than one voxel ([] without a box)."""
    if inside is None or not inside.any():
        return []
    return [n * s for n, s in zip(box_sides(inside), spacing) if n > 1]


def uncertain_radius(inside: Optional[np.ndarray], spacing: Sequence[float], cfg: "RefineConfig") -> float:
    """The interaction-uncertainty radius for one box: cfg.distance_mm, at most cfg.distance_fraction of the
    box's smallest extent (mm). A fixed 3 mm zeroed almost every foreground voxel of a 5-8 mm structure
    (cord, hippocampus) around one background scribble, and the head then learned "all background"."""
    r = cfg.distance_mm
    sizes = box_extent_mm(inside, spacing)
    if cfg.distance_fraction is not None and sizes:
        r = min(r, cfg.distance_fraction * min(sizes))
    return r


def local_edit(previous: np.ndarray, new: np.ndarray, new_fg: np.ndarray, new_bg: np.ndarray,
               inside: np.ndarray, fraction: float, connected: bool = False) -> np.ndarray:
    """`new` where it lies near this round's scribbles, `previous` elsewhere (bool arrays of one grid).

    Near: within `fraction` of the box's extent along every axis from a new scribbled voxel (an
    ellipsoid scaled to the box, so thick slices and thin structures get the same share). A refinement
    may then only correct the error the user pointed at; it cannot erase what the user left alone.
    connected: of those changes keep only the pieces that touch a new scribble of their sign (connected_change).
    """
    seeds = (new_fg | new_bg) & inside
    if not seeds.any():
        return previous.copy()
    sampling = [1.0 / n for n in box_sides(inside)]
    near = ndimage.distance_transform_edt(~seeds, sampling=sampling) <= fraction
    if connected:
        near &= connected_change(previous, new, new_fg & inside, new_bg & inside)
    return np.where(near, new, previous)


def connected_change(previous: np.ndarray, new: np.ndarray, new_fg: np.ndarray, new_bg: np.ndarray) -> np.ndarray:
    """The voxels where `new` differs from `previous` in a piece (fully connected) that touches a scribble
    of its own sign: removed foreground next to a background scribble, added foreground next to a
    foreground scribble (bool arrays of one grid)."""
    full = ndimage.generate_binary_structure(previous.ndim, previous.ndim)
    keep = np.zeros(previous.shape, bool)
    for change, seeds in ((previous & ~new, new_bg), (new & ~previous, new_fg)):
        if not (change.any() and seeds.any()):
            continue
        pieces, _ = ndimage.label(change, structure=full)
        touched = np.unique(pieces[ndimage.binary_dilation(seeds, structure=full) & change])
        keep |= np.isin(pieces, touched[touched > 0])
    return keep


HEAD_STEP_VOXELS = 10000  # above a 96 x 96 2D grid: 2D boxes are tuned on every voxel


def voxel_sample(features: torch.Tensor, labels: np.ndarray, weights: np.ndarray, cfg: "RefineConfig",
                 cap: int = HEAD_STEP_VOXELS) -> Tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The head's gradient steps on at most `cap` voxels: every scribbled voxel, the other weighted voxels
    sampled uniformly (seeded) and weighted by 1/p so the loss keeps its balance. The head is made of 1x1
    convolutions, so voxels are independent; this keeps a 3D box run slice by slice (160 features on
    30 x 96 x 96 voxels) interactive. Grids up to `cap` voxels (every 2D box) are used whole.
    Returns (features (1, C, n, 1[, 1]), labels (n, 1[, 1]), weights (n, 1[, 1]))."""
    n_all = weights.size
    if n_all <= cap:
        return features.float(), labels, weights
    w = weights.reshape(-1)
    seeds = np.flatnonzero(w >= cfg.omega)
    others = np.flatnonzero((w > 0) & (w < cfg.omega))
    k = max(cap - len(seeds), 1)
    rng = np.random.default_rng(0)
    if len(others) > k:
        pick = np.sort(rng.choice(others, size=k, replace=False))
        scale = len(others) / k
    else:
        pick, scale = others, 1.0
    idx = np.concatenate([seeds, pick])
    w_s = w[idx].astype(np.float32)
    w_s[len(seeds):] *= scale
    extra = (1,) * (features.dim() - 3)
    flat = features.reshape(features.shape[0], features.shape[1], -1)
    sub = flat[:, :, torch.from_numpy(idx).to(features.device)].reshape(
        features.shape[0], features.shape[1], len(idx), *extra).float()  # SliceWise's may be bfloat16
    return sub, labels.reshape(-1)[idx].reshape(len(idx), *extra), w_s.reshape(len(idx), *extra)


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * CE_i / sum_i w_i (0 when every weight is 0). logits (1, 2, ...), labels/weights (...)."""
    ce = torch.nn.functional.cross_entropy(logits, labels[None], reduction="none")[0]
    total = weights.sum()
    return (weights * ce).sum() / total if float(total) > 0 else ce.sum() * 0.0


@torch.no_grad()
def model_probability(model: torch.nn.Module, inputs: torch.Tensor) -> np.ndarray:
    """Foreground probability on the network grid (head on frozen features, or whole net on the crop)."""
    model.eval()
    return torch.softmax(model(inputs), dim=1)[0, 1].float().cpu().numpy()


@dataclass
class FineTuneResult:
    probability: np.ndarray  # network grid, after the last update
    labels: np.ndarray  # CRF labels of the last alternation (network grid)
    iterations: int  # alternations completed
    steps: int  # gradient steps taken
    stopped_early: bool  # the time budget ended it


def check_cancel(cancel: Cancel) -> None:
    if cancel is not None and cancel():
        raise CancelledError("refinement cancelled; the result and the parameters are as before the call")


def fine_tune(model: torch.nn.Module, inputs: torch.Tensor, intensity: np.ndarray, spacing: Sequence[float],
              fg_seeds: np.ndarray, bg_seeds: np.ndarray, cfg: RefineConfig, progress: Progress = None,
              cancel: Cancel = None, deadline: Optional[float] = None,
              inside: Optional[np.ndarray] = None, prior: Optional[np.ndarray] = None,
              start: Optional[np.ndarray] = None) -> FineTuneResult:
    """Fine-tune `model` (in place) on one object: the head on frozen features (1, C, *grid), or the
    whole network on the normalised crop (1, 1, *grid) when cfg.head_only is False.

    fg_seeds / bg_seeds: clamped voxels on the grid (scribbles; bg also holds the outside of the box).
    With no fg scribble and no bg scribble inside the box this is BIFSeg's unsupervised mode: the
    weights then come from network uncertainty only. `deadline` is a time.perf_counter() value.
    `inside`: the user box on the grid; voxels outside it get weight 0 (they are background by
    definition and never predicted; as the majority they would otherwise pull the network towards
    background everywhere).
    `prior`: a probability (grid) of a segmentation made elsewhere that is being corrected: every label
    update uses its blend with the network's (cfg.prior_weight), so the network learns it and the
    scribbles correct it, rather than the network's own prediction taking over. `start`: the probability
    the first label update uses (the current result's; default: the network's, blended with `prior`).
    Raises CancelledError when `cancel()` turns true (the caller keeps the untouched original).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    device = inputs.device
    done_steps, stopped = 0, False
    def blended(p: np.ndarray) -> np.ndarray:
        return p if prior is None else cfg.prior_weight * prior + (1.0 - cfg.prior_weight) * p

    prob = np.asarray(start, np.float32) if start is not None else blended(model_probability(model, inputs))
    steps = cfg.steps_for(prob.ndim)
    total = max(cfg.iterations * steps, 1)
    for it in range(1, cfg.iterations + 1):  # RefineConfig guarantees at least one
        check_cancel(cancel)
        labels = crf_segment(prob, intensity, spacing, lam=cfg.lam_for(prob.ndim), sigma=cfg.sigma,
                             connectivity=cfg.connectivity, fg_seeds=fg_seeds, bg_seeds=bg_seeds)
        w = box_loss_weights(labels, prob, fg_seeds, bg_seeds, inside, spacing, cfg)
        step_inputs, labels_s, w_s = voxel_sample(inputs, labels, w, cfg) if cfg.head_only else (inputs, labels, w)
        target = torch.from_numpy(labels_s.astype(np.int64)).to(device)
        weight = torch.from_numpy(w_s).to(device)
        model.eval()  # dropout off: a few deterministic steps on one image
        for _ in range(steps):
            check_cancel(cancel)
            opt.zero_grad(set_to_none=True)
            loss = weighted_cross_entropy(model(step_inputs), target, weight)
            if not math.isfinite(float(loss.detach())):
                break
            loss.backward()
            opt.step()
            done_steps += 1
            if progress:
                progress(min(done_steps / total, 1.0), f"fine-tuning, iteration {it}/{cfg.iterations}")
            if deadline is not None and time.perf_counter() >= deadline:
                stopped = True
                break
        prob = blended(model_probability(model, inputs))
        if stopped:
            break
    return FineTuneResult(prob, labels, it, done_steps, stopped)
