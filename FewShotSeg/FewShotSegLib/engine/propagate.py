"""Same-scan propagation: one annotated slice of a scan segments the rest of that organ in the same scan.

Neighbouring slices of one scan are nearly identical, so the mask is carried slice by slice, outwards from
the annotated slice in both directions: slice z + d is segmented with the network, its recurrence started
from the mask of slice z (RP-Net's refinement from a good initial mask) and its prototypes taken from
`mode`:
- "chain": slice z with its (predicted) mask as the support;
- "anchor": the annotated slice itself as the support for every slice;
- "mixed": the mean of both prototype sets;
- "roi": the annotated slice as the support and the prototype start (no mask carried into the recurrence);
  the mask of slice z, dilated by `roi_pixels`, bounds where slice z + d may be foreground; in the same scan
  the organ keeps its intensities, so pixels outside the annotation's [2%, 98%] intensity percentiles are
  dropped (`intensity_gate`; then a 1-pixel opening and hole filling), and the part connected to slice z's
  mask is kept. Chosen on fold-0 training patients chaos_13/31/33 (12 cases, reference range): gate off
  73.4, on 78.8 (automatic range 57.7 -> 75.3); ROI 1/2/4/6 px: 79.6/79.6/78.8/78.4 with the gate.
Optionally (`box_segmenter`; on by default in `segment --propagate`), InteractiveRefine's 2D box network
redoes each slice inside the bounding box of its propagated mask (+5%), and its mask is what is carried to
the next slice (`box_tracking`). On fold-0 training patients chaos_19 and chaos_22 (InteractiveRefine
validation patients), reference range: 81.7 without, 87.2 as a pass over the finished result (margin 0 /
10% / 15%: 86.9 / 86.7 / 85.1), 89.2 carried slice to slice; automatic range 82.7 -> 87.9 carried.
By default the box network is first tuned on the annotated slice (`box_exemplar`; on chaos_19/22 with the
later class-agnostic box network 86.9 -> 88.0: benchmarks/fewshot_choices/box_exemplar.md).
Last (`box3d_views`, default 3), InteractiveRefine's 3D box network with three views redoes the bounding box
of the propagated mask (the session's box step: network + 3D CRF), and the annotated slice is kept as annotated.
On fold-0 training patients chaos_19/22/13/31 (16 cases): given range 87.06 -> 88.41 (one view 82.74); with the
automatic range it lost (81.89 -> 81.01) until the sixteenth session's box networks: 87.02 -> 87.73 there and
87.51 -> 88.35 on chaos_20/32/33/34/38, so since then with either range
(benchmarks/fewshot_choices/propagate_box3d.md); about 2 s per organ on the CPU. `follow` keeps its automatic
range without it (chosen there without the pass).
With no range given, propagation stops where the organ ends: a predicted cross-section under
`min_pixels` pixels (on the network grid) or below `min_ratio` of the previous one ends that direction, and
so does one that grows again by `regrow` after the organ had tapered below half the annotated cross-section
(chosen on fold-0 training patients before the intensity gate: 50.0 -> 53.6 Dice). With the gate the
automatic range is close to a given one (75.9 vs 79.6 on training patients); give a range when you can.
A slice whose mask is on average `dark_stop` (1.5) standard deviations of the annotated pixels darker than
the annotation also ends it: past the organ's end the mask ran on into darker tissue (fold-0 training
patients, largest slice: 81.89 -> 85.33 on chaos_13/19/22/31, 80.61 -> 80.93 on chaos_20/32/33/34/38; middle
slice 81.66 -> 82.70, slice at 25% 69.25 -> 70.10; benchmarks/fewshot_choices/auto_dark_stop.md).
With the box network carried slice to slice, a carried mask that grows again by `carried_regrow[1]` (25%)
above its smallest, once it had shrunk below `carried_regrow[0]` (85%) of the annotation, ends it too (the left
kidney's mask ran on into the neighbouring tissue, widening as it went), unless it had already exceeded
`carried_regrow[2]` (110%) of the annotation in that direction (an organ widening from a slice low in it).
Chosen by exact replay on training records (benchmarks/fewshot_choices/auto_regrow_stop.md): over nine record
sets of three folds' training patients, +0.34 mean Dice against none (+0.06 without the 110% ceiling).
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from InteractiveRefineLib.core.errors import CancelledError, PromptError
from InteractiveRefineLib.core.image_io import Image, validate_image
from InteractiveRefineLib.engine.exemplar import ExemplarConfig, tune_on_exemplar
from InteractiveRefineLib.engine.networks import check_views

from .segment import FewShotSegmenter, Segmentation, combine_labels, make_supports
from .slices import check_axis, from_network, image_slices, to_network, volume_from_slices


def box_network(device="auto", precision: str = "auto"):
    """InteractiveRefine's box network as propagation and follow use it: cut at its own 0.5 in 2D and 3D boxes
    (not the shipped manifests' cuts, chosen for boxes drawn by a user), the cut with which every propagation
    setting here was chosen on training patients."""
    from InteractiveRefineLib.engine.inference import BoxSegmenter
    return BoxSegmenter(device=device, precision=precision, threshold2d=0.5, threshold3d=0.5)


MODES = ("chain", "anchor", "mixed", "roi")
DEFAULT_MODE = "roi"  # chosen on training patients of fold 0 (benchmarks/fewshot_choices/propagation.md)
MIN_PIXELS = 8        # on the 128 x 128 grid
MIN_RATIO = 0.2       # a slice whose cross-section drops below 20% of the previous one ends the organ
ROI_PIXELS = 2        # roi mode: how far (network-grid pixels, ~5 mm on CHAOS) the organ may move per slice
INTENSITY_GATE = 0.02  # roi mode: keep pixels within the 2nd..98th intensity percentiles of the annotation
BOX_MARGIN = 0.05     # box-network refinement: the box is the slice's result + 5% of its size per side
REGROW = 1.2          # automatic range: once below half the annotated cross-section, growing by 20% ends it
BOX3D_VIEWS = 3       # the 3D box network's views in the final pass over the propagated mask (None: no pass)
DARK_STOP = 1.5       # automatic range: a slice whose mask is this many annotation SDs darker on average ends it
# automatic range: below 85% of the annotation, then 25% above the smallest, ends it; not once above 110% of it
CARRIED_REGROW = (0.85, 1.25, 1.1)


class RegrowthStop:
    """An automatic range's regrowth stop in one direction, on the masks' areas (the carried masks in image
    pixels; the older rule: the few-shot masks on the network grid, shrink 0.5, no ceiling): once
    the smallest kept area is below `shrink` times the annotated one, a slice whose area exceeds `grow` times
    that smallest one ends the direction (the organ had tapered and the mask went on into another structure).
    Once a kept area exceeded `ceiling` times the annotated one (None: never), the stop is off in that
    direction: the organ widens from an annotation low in it, and its own dips and widening are not a leak."""

    def __init__(self, annotated_area: float, shrink: float, grow: float, ceiling: Optional[float] = None):
        self.start, self.low, self.shrink, self.grow = float(annotated_area), float(annotated_area), shrink, grow
        self.ceiling = ceiling
        self.off = False

    def ends(self, area: float) -> bool:
        return not self.off and self.low < self.shrink * self.start and area > self.grow * self.low

    def keep(self, area: float) -> None:
        self.low = min(self.low, float(area))
        if self.ceiling is not None and area > self.ceiling * self.start:
            self.off = True


def check_regrow(carried_regrow) -> Optional[Tuple[float, ...]]:
    """None, or (shrink, grow) or (shrink, grow, ceiling): positive finite numbers; PromptError otherwise."""
    if carried_regrow is None:
        return None
    try:
        values = tuple(float(v) for v in carried_regrow)
    except (TypeError, ValueError):
        values = ()
    if len(values) not in (2, 3) or not all(np.isfinite(v) and v > 0 for v in values):
        raise PromptError(f"carried_regrow must be (shrink, grow) or (shrink, grow, ceiling), positive numbers, "
                          f"or None (got {carried_regrow!r})")
    return values


def propagation_range(slice_index: int, slices: Optional[Tuple[int, int]], n: int) -> Tuple[int, int]:
    """(first, last + 1) that propagation runs through (`slices`, or all `n` slices); PromptError unless it
    holds the annotated slice and lies in the volume."""
    k0, k1 = (0, n) if slices is None else (int(slices[0]), int(slices[1]))
    if not 0 <= k0 <= slice_index < k1 <= n:
        raise PromptError(f"propagation range {k0}..{k1 - 1} must hold the annotated slice {slice_index} "
                          f"and lie in 0..{n - 1}")
    return k0, k1


def _connected_to(mask: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """The parts of `mask` (1, 1, S, S) bool whose 2D components touch `seed`; float."""
    m = mask[0, 0].cpu().numpy()
    lab, n = ndimage.label(m)
    keep = np.zeros_like(m)
    if n:
        ids = np.unique(lab[m & seed[0, 0].cpu().numpy()])
        keep = np.isin(lab, ids[ids > 0])
    return torch.from_numpy(keep.astype(np.float32))[None, None].to(mask.device)


def _protos(state: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    return state["raw_prototypes"], state["prototypes"]


@torch.no_grad()
def propagate(segmenter: FewShotSegmenter, image: Image, label: np.ndarray, slice_index: int,
              organ: Optional[int] = None, axis: int = 0, slices: Optional[Tuple[int, int]] = None,
              mode: str = DEFAULT_MODE, min_pixels: int = MIN_PIXELS, min_ratio: float = MIN_RATIO,
              roi_pixels: int = ROI_PIXELS, regrow: Optional[float] = REGROW,
              intensity_gate: Optional[float] = INTENSITY_GATE, box_segmenter=None,
              box_tracking: bool = True, box_exemplar: Optional[ExemplarConfig] = ExemplarConfig(),
              box3d_views: Optional[int] = BOX3D_VIEWS, dark_stop: Optional[float] = DARK_STOP,
              carried_regrow: Optional[Tuple[float, ...]] = CARRIED_REGROW,
              progress=None, cancel=None) -> Segmentation:
    """Segment `organ` in `image` from its annotation on slice `slice_index` of the same image.

    label: label map on the image grid (only slice `slice_index` is read). slices: (first, last + 1) to
    propagate through exactly that range; None: automatic (stops where the organ ends).
    box_segmenter: InteractiveRefine's BoxSegmenter; when given, each slice's result is redone by its 2D box
    network in the result's bounding box, and that is the mask carried to the next slice (box_tracking; else
    the box network only redoes the finished result, refine_with_box_network).
    box_exemplar: with a box_segmenter, its 2D network is first tuned on the annotated slice
    (InteractiveRefineLib.engine.exemplar; a tuned copy, the shipped network is unchanged); None: not tuned.
    box3d_views: with a box_segmenter, its 3D network (1 or 3 views) finally redoes the propagated mask's
    bounding box, the annotated slice kept as annotated (box3d_pass); None: no 3D pass.
    dark_stop: automatic range only: a slice whose mask's mean intensity lies more than this many standard
    deviations of the annotated pixels below their mean ends that direction (the organ has ended and the mask
    went on into darker tissue); None: off.
    carried_regrow: automatic range with the box network carried slice to slice only (as chosen): (shrink,
    grow[, ceiling]) of RegrowthStop on the carried masks (image pixels); None: off.
    progress(fraction, message) and cancel() (CancelledError, nothing returned) are checked once per slice.
    """
    if mode not in MODES:
        raise PromptError(f"propagation mode must be one of {MODES}; got {mode!r}")
    validate_image(image, "image")
    axis = check_axis(axis)
    sups = make_supports(image, label, slice_index, None if organ is None else [organ], axis)
    if len(sups) != 1:
        raise PromptError(f"propagation follows one organ; slice {slice_index} has labels "
                          f"{[s.label for s in sups]}: choose one with `organ`")
    sup = sups[0]
    check_views(box3d_views, "box3d_views")
    if dark_stop is not None and not float(dark_stop) >= 0:
        raise PromptError(f"dark_stop must be a number of standard deviations >= 0, or None (got {dark_stop})")
    regrow_stop = check_regrow(carried_regrow)  # checked with any range, used with the automatic one only
    if slices is not None:
        regrow_stop = None
    n = image.shape[axis]
    k0, k1 = propagation_range(slice_index, slices, n)  # before the box network is tuned
    annotation = np.take(label, slice_index, axis=axis) == sup.label
    shipped_box = box_segmenter  # the 3D pass uses the shipped network, not the 2D exemplar-tuned copy
    if box_segmenter is not None and box_exemplar is not None:
        box_segmenter = tune_on_exemplar(box_segmenter, image, annotation, slice_index, axis, box_exemplar)
    net, dev, it = segmenter.net, segmenter.device, segmenter.iterations
    imgs, grid = image_slices(image, axis)
    anchor = net.support_state(sup.image.to(dev), sup.mask.to(dev))
    prob = torch.zeros(n, imgs.shape[-2], imgs.shape[-1])
    prob[slice_index] = sup.mask[0, 0]
    native_slices = np.moveaxis(image.array, axis, 0)
    annotated = native_slices[slice_index][annotation]
    dark_below = None
    if slices is None and dark_stop is not None and annotated.size:
        dark_below = float(annotated.mean()) - float(dark_stop) * float(annotated.std())
    gate = None
    if intensity_gate is not None:  # same scan: the organ keeps its intensities (percentiles of the annotation)
        vals = sup.image[0, 0][sup.mask[0, 0] > 0.5]
        q = torch.tensor([intensity_gate, 1 - intensity_gate])
        gate = torch.quantile(vals, q).tolist() if vals.numel() else None
    visited = [slice_index, slice_index]
    tracking = box_tracking and box_segmenter is not None
    tracked: Dict[int, np.ndarray] = {}
    for d in (1, -1):
        prev_img, prev_mask = sup.image.to(dev), sup.mask.to(dev)
        prev_area = float(prev_mask.sum())
        # the older regrowth rule on the few-shot masks (network grid), and the one on the carried masks
        tapered = RegrowthStop(prev_area, 0.5, regrow) if slices is None and regrow is not None else None
        growth = None if regrow_stop is None or not tracking else RegrowthStop(annotation.sum(), *regrow_stop)
        z = slice_index + d
        while k0 <= z < k1:
            if cancel is not None and cancel():
                raise CancelledError("propagation cancelled; nothing was written")
            if progress is not None:  # the share of the range visited (automatic range: of the whole scan)
                progress(min(1.0, (visited[1] - visited[0] + 1) / max(k1 - k0, 1)), f"propagating, slice {z}")
            q = imgs[z:z + 1].to(dev)
            raw, protos = _protos(anchor)
            if mode == "roi":
                logits, _ = net.refine(net.encoder(q), raw, protos, it, q.shape[-2:])
                p = logits[-1].softmax(1)[:, 1:2]
                near = F.max_pool2d(prev_mask, 2 * roi_pixels + 1, stride=1, padding=roi_pixels)
                cand = (p > 0.5) & (near > 0)
                if gate is not None:
                    qv = q[0, 0]
                    inside = ((qv >= gate[0]) & (qv <= gate[1]))[None, None]
                    cand = torch.from_numpy(ndimage.binary_fill_holes(
                        ndimage.binary_opening((cand & inside)[0, 0].cpu().numpy()))).to(cand.device)[None, None]
                m = _connected_to(cand, prev_mask > 0)
                p = p * m
            elif mode != "anchor":
                chain = net.support_state(prev_img, prev_mask)
                craw, cprotos = _protos(chain)
                raw, protos = (craw, cprotos) if mode == "chain" else ((raw + craw) / 2, (protos + cprotos) / 2)
            if mode != "roi":
                logits, _ = net.refine(net.encoder(q), raw, protos, it, q.shape[-2:], init_mask=prev_mask)
                p = logits[-1].softmax(1)[:, 1:2]
            m = (p > 0.5).float()
            area = float(m.sum())
            if slices is None and (area < min_pixels or area < min_ratio * prev_area):
                break
            if tapered is not None and tapered.ends(area):
                break               # it had tapered off below half and grows again: another structure
            if tracking or dark_below is not None:  # the slice's mask on the image grid
                native = from_network(m[:, 0].cpu(), grid)[0] > 0.5
                if tracking:  # the box network's slice is what is carried on
                    native = box_slice(image, native, z, axis, box_segmenter)
                if dark_below is not None and native.any() and native_slices[z][native].mean() < dark_below:
                    break           # darker than the annotated organ: it has ended (chosen on training patients)
                if growth is not None:
                    carried = int(native.sum())
                    if growth.ends(carried):
                        break       # it had shrunk and widens again: another structure (chosen on training patients)
                    growth.keep(carried)
            if tapered is not None:
                tapered.keep(area)
            prob[z] = p[0, 0].cpu()
            if tracking:
                tracked[z] = native
                m = (to_network(native[None].astype(np.float32), grid, mode="area") > 0.5).float().to(dev)
                area = float(m.sum())
            visited[0 if d < 0 else 1] = z
            prev_img, prev_mask, prev_area = q, m, area
            z += d
    full = from_network(prob, grid)
    for z, native in tracked.items():
        full[z] = native
    vol = volume_from_slices(full, grid)
    # without tracking the box network redoes the finished result; with it, the slices it carried are its own
    # (none when the range stopped at the annotated slice: that slice is then kept, as in a longer run)
    if box_segmenter is not None and not tracking:
        vol = refine_with_box_network(image, vol > 0.5, box_segmenter, axis, BOX_MARGIN).astype(np.float32)
    use_3d = shipped_box is not None and box3d_views is not None
    if use_3d:
        if cancel is not None and cancel():
            raise CancelledError("propagation cancelled; nothing was written")
        if progress is not None:
            progress(1.0, "3D box network over the propagated organ")
        mask = box3d_pass(image, vol > 0.5, shipped_box, box3d_views)
        np.moveaxis(mask, axis, 0)[slice_index] = annotation
        vol = mask.astype(np.float32)
    probs = {sup.label: vol}
    return Segmentation(combine_labels(probs), probs, (visited[0], visited[1] + 1),
                        {"axis": axis, "mode": mode, "support_slice": int(slice_index), "propagated": True,
                         "auto_range": slices is None, "box_network": box_segmenter is not None,
                         "box_exemplar": None if box_segmenter is None or box_exemplar is None
                         else dataclasses.asdict(box_exemplar),
                         "box3d_views": box3d_views if use_3d else None,
                         "dark_stop": dark_stop if dark_below is not None else None,
                         "carried_regrow": list(regrow_stop) if regrow_stop is not None and tracking else None})


def box3d_pass(image: Image, mask: np.ndarray, box_segmenter, views: int) -> np.ndarray:
    """`mask` redone by the box network's 3D box step (network with `views` views + 3D CRF) in its bounding
    box; a mask thinner than 2 voxels along an axis (or empty) is returned as it is."""
    from InteractiveRefineLib.core.prompts import box_from_mask
    from InteractiveRefineLib.engine.finetune import RefineConfig
    from InteractiveRefineLib.engine.session import InteractiveSession
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    box = box_from_mask(mask)
    if min(box.size) < 2:
        return mask.copy()
    # Every box with `views`, as the pass was chosen on training patients (propagate_box3d.md); the thin-box
    # rule of interactive boxes was not chosen for it (with it, test patient chaos_21's 9-slice spleen: 93.1 -> 88.8),
    # nor their depth limit (a latency budget of the interactive box step).
    config = RefineConfig(views3d=views, three_views_min_side=0, three_views_max_depth=None)
    session = InteractiveSession(image, box_segmenter, config=config, device=str(box_segmenter.device),
                                 validate=False)
    return session.set_box(box)


def box_slice(image: Image, sl: np.ndarray, z: int, axis: int, box_segmenter, margin: float = BOX_MARGIN,
              min_voxels: int = 20) -> np.ndarray:
    """One slice's mask (rows, cols) redone by the 2D box network in its bounding box (+ `margin` per side);
    masks under `min_voxels` voxels are returned as they are."""
    from InteractiveRefineLib.core.prompts import Box
    sl = np.asarray(sl, dtype=bool)
    if sl.sum() < min_voxels:
        return sl
    rows, cols = np.flatnonzero(sl.any(1)), np.flatnonzero(sl.any(0))
    lo, hi = [int(rows[0]), int(cols[0])], [int(rows[-1]) + 1, int(cols[-1]) + 1]
    for d in range(2):
        pad = int(round(margin * (hi[d] - lo[d]))) + 1
        lo[d], hi[d] = max(lo[d] - pad, 0), min(hi[d] + pad, sl.shape[d])
    lo.insert(axis, int(z))
    hi.insert(axis, int(z) + 1)
    pred = box_segmenter.predict(image, Box(tuple(lo), tuple(hi), axis), validate=False)
    return np.take(pred.mask, z, axis=axis)


def refine_with_box_network(image: Image, mask: np.ndarray, box_segmenter, axis: int = 0,
                            margin: float = BOX_MARGIN, min_voxels: int = 20) -> np.ndarray:
    """Each slice's mask -> its bounding box (+ `margin` of its size on each side) -> InteractiveRefine's 2D
    box network; the network's mask inside the box replaces the propagated one (slices with fewer than
    `min_voxels` voxels are kept as they are)."""
    mask = np.asarray(mask, dtype=bool)
    out = mask.copy()
    for z in np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))):
        idx = [slice(None)] * 3
        idx[axis] = z
        out[tuple(idx)] = box_slice(image, np.take(mask, z, axis=axis), z, axis, box_segmenter, margin, min_voxels)
    return out


def propagate_mask(segmenter: FewShotSegmenter, image: Image, mask2d: np.ndarray, slice_index: int,
                   axis: int = 0, **kw) -> Segmentation:
    """`propagate` from a 2D mask on one slice (e.g. InteractiveRefine's 2D box result: "Propagate to 3D")."""
    axis = check_axis(axis)
    mask2d = np.asarray(mask2d, dtype=bool)
    shape2d = tuple(s for a, s in enumerate(image.shape) if a != axis)
    if mask2d.shape != shape2d:
        raise PromptError(f"the slice mask has shape {mask2d.shape}; slice {slice_index} along axis {axis} of the "
                          f"image has {shape2d}")
    label = np.zeros(image.shape, dtype=np.uint8)
    idx = [slice(None)] * 3
    idx[axis] = int(slice_index)
    label[tuple(idx)] = mask2d
    return propagate(segmenter, image, label, slice_index, 1, axis, **kw)
