"""The 2D box network tuned to one annotated slice of the image (an exemplar).

When the user has drawn the whole object on one slice (few-shot propagation, "Propagate to 3D"), that slice
is a full label of this very object in this very scan: a few gradient steps on it, with boxes jittered
around it as the neighbouring slices' boxes will be, teach the class-agnostic network this object's
appearance (image-specific adaptation, as BIFSeg does with scribbles and ELSNet with the support slice).
The shipped network is not changed: a tuned copy is returned.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import PromptError
from ..core.geometry import extract
from ..core.image_io import Image
from ..core.prompts import Box
from .inference import BoxSegmenter, network_input, plan_for

LAYERS = ("head", "all")


@dataclass(frozen=True)
class ExemplarConfig:
    """steps: gradient steps (a fixed count: the same result on a loaded or an idle machine); lr: Adam
    learning rate; layers: "head" (the classifier head only) or "all"; boxes: jittered boxes drawn around
    the exemplar, each side moved by a fraction of the object's size in `margin` (min, max); seed.
    The defaults were chosen for same-scan propagation on InteractiveRefine validation patients
    (benchmarks/fewshot_choices/box_exemplar.md): "all" layers cost 10x the time for no clear gain."""

    steps: int = 30
    lr: float = 1e-3
    layers: str = "head"
    boxes: int = 8
    margin: Tuple[float, float] = (-0.05, 0.15)
    seed: int = 0

    def validate(self) -> "ExemplarConfig":
        if self.layers not in LAYERS:
            raise PromptError(f"exemplar tuning layers must be one of {LAYERS}, not {self.layers!r}")
        if self.steps < 0 or self.boxes < 1 or self.lr <= 0:
            raise PromptError(f"exemplar tuning needs steps >= 0, boxes >= 1 and lr > 0 (got {self})")
        return self


def _boxes(mask2d: np.ndarray, slice_index: int, axis: int, cfg: ExemplarConfig, rng) -> list:
    rows, cols = np.flatnonzero(mask2d.any(1)), np.flatnonzero(mask2d.any(0))
    lo0, hi0 = np.array([rows[0], cols[0]]), np.array([rows[-1] + 1, cols[-1] + 1])
    size = hi0 - lo0
    out = []
    for i in range(cfg.boxes):
        # the first box is the exemplar's own bounding box + 5% (what propagation asks of the next slice)
        m = np.full(4, 0.05) if i == 0 else rng.uniform(cfg.margin[0], cfg.margin[1], 4)
        lo = np.maximum(np.round(lo0 - m[:2] * size).astype(int), 0)
        hi = np.minimum(np.round(hi0 + m[2:] * size).astype(int), mask2d.shape)
        hi = np.maximum(hi, lo + 1)
        lo3, hi3 = [int(v) for v in lo], [int(v) for v in hi]
        lo3.insert(axis, int(slice_index))
        hi3.insert(axis, int(slice_index) + 1)
        out.append(Box(tuple(lo3), tuple(hi3), axis))
    return out


def tune_on_exemplar(segmenter: BoxSegmenter, image: Image, mask2d: np.ndarray, slice_index: int,
                     axis: int = 0, config: Optional[ExemplarConfig] = None) -> BoxSegmenter:
    """A BoxSegmenter whose 2D network is tuned on `mask2d`, the object's full label on slice `slice_index`
    along `axis` of `image` (3D boxes use the shipped model). Raises PromptError for an empty mask, a mask
    of the wrong shape or a slice outside the image, before computing."""
    cfg = (config or ExemplarConfig()).validate()
    if axis not in (0, 1, 2):
        raise PromptError(f"the exemplar's slice axis must be 0, 1 or 2, not {axis!r}")
    mask2d = np.asarray(mask2d, dtype=bool)
    shape2d = tuple(n for a, n in enumerate(image.shape) if a != axis)
    if mask2d.shape != shape2d:
        raise PromptError(f"the exemplar mask has shape {mask2d.shape}; a slice along axis {axis} of the image "
                          f"has {shape2d}")
    if not 0 <= int(slice_index) < image.shape[axis]:
        raise PromptError(f"exemplar slice {slice_index} is outside the image (axis {axis} has "
                          f"{image.shape[axis]} slices)")
    if not mask2d.any():
        raise PromptError(f"the exemplar slice {slice_index} has no foreground to tune the box network on")
    net, manifest = segmenter.model(2)
    input_cfg = manifest.get("input", {})
    label = np.zeros(image.shape, dtype=np.float32)
    idx = [slice(None)] * 3
    idx[axis] = int(slice_index)
    label[tuple(idx)] = mask2d
    rng = np.random.default_rng(cfg.seed)
    xs, ys = [], []
    for box in _boxes(mask2d, slice_index, axis, cfg, rng):
        spec = plan_for(box, image, input_cfg)
        inside = np.zeros(image.shape, dtype=np.float32)
        inside[box.slices] = label[box.slices]  # the target is the object inside the box, as in training
        xs.append(network_input(image.array, spec, input_cfg))
        ys.append(extract(inside, spec, order=1) > 0.5)
    dev = segmenter.device
    x = torch.from_numpy(np.stack(xs)).to(dev)
    y = torch.from_numpy(np.stack(ys).astype(np.int64)).to(dev)
    tuned = copy.deepcopy(net).to(dev).eval()  # eval: dropout off, so the steps are deterministic
    params = list((tuned.head if cfg.layers == "head" else tuned).parameters())
    for p in tuned.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.lr)
    with torch.no_grad():
        feats = tuned.features(x) if cfg.layers == "head" else None
    with torch.enable_grad():  # callers may run under no_grad (propagation does)
        for _ in range(cfg.steps):
            logits = tuned.head(feats) if feats is not None else tuned(x)
            prob = logits.softmax(1)[:, 1]
            inter = (prob * y).sum((1, 2))
            soft_dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + y.sum((1, 2)) + 1)
            loss = F.cross_entropy(logits, y) + soft_dice.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    for p in tuned.parameters():
        p.requires_grad_(False)
    return segmenter.override(2, tuned.eval(), manifest)
