"""Few-shot inference on a whole query volume from annotated support slices.

Each label of the support is one 1-way 1-shot episode; overlaps between labels go to the most probable
label. Every query slice starts from the prototype step (start="prototype") or, as RP-Net's released code
does, from the support mask affine-registered onto it (start="affine", registration.py), and is refined
recurrently (10 steps by default), in batches of slices, so a whole volume costs a few network passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from InteractiveRefineLib.core.device import choose_device
from InteractiveRefineLib.core.errors import CancelledError, ImageError, PromptError
from InteractiveRefineLib.core.image_io import Image, validate_image
from InteractiveRefineLib.core.prompts import whole_indices

from .intensity_check import check_not_constant
from .models import DEFAULT_NAME, load_rpnet
from .network import RPNet
from .query_range import (
    CHUNK_FRACTIONS,
    IMAGE_WEIGHT,
    ONE_SLICE_IMAGE_WEIGHT,
    keep_consistent_component,
    one_slice_extent,
    place_window,
)
from .registration import registered_masks
from .slices import NETWORK_SIZE, check_axis, from_network, image_slices, to_network, volume_from_slices

TEST_ITERATIONS = 10
STARTS = ("prototype", "affine")
# The prototype start was kept: on training patients of folds 0 and 1 (setting 2) it scored higher than the
# affine start (see README, "Protocol choices").
DEFAULT_START = "prototype"
Progress = Optional[Callable[[float, str], None]]
Cancel = Optional[Callable[[], bool]]


@dataclass
class Support:
    """One support slice on the network grid: image and binary mask, each (1, 1, S, S)."""

    image: torch.Tensor
    mask: torch.Tensor
    label: int
    slice_index: int


MIN_WINDOW_SLICES = 3  # support slices a label must cover for `--range auto` to use its length as the window's


@dataclass
class AutoRange:
    """What `--range auto` knows of one label from the support volume (auto_range_info): the organ's length
    in query slices, its centre as a fraction of the support's slices, and support slices at CHUNK_FRACTIONS
    of the organ. estimated: a label drawn on fewer than MIN_WINDOW_SLICES slices; its length is estimated
    from its largest drawn cross-section (query_range.one_slice_extent), its one support slice placed there."""

    extent: float
    centre_fraction: float
    supports: List["Support"]
    estimated: bool = False


@dataclass
class Segmentation:
    """Result on the query grid: label map (K, J, I), per-label probabilities, and what was done."""

    labels: np.ndarray
    probabilities: Dict[int, np.ndarray]
    slices: Tuple[int, int]
    info: Dict[str, object] = field(default_factory=dict)


def make_supports(image: Image, label: np.ndarray, slice_index: int, label_ids: Optional[Sequence[int]] = None,
                  axis: int = 0, size: int = NETWORK_SIZE) -> List[Support]:
    """Support slices of `label_ids` (default: every label on that slice) at `slice_index` along `axis`."""
    validate_image(image, "support image")
    check_not_constant(image, "support image")
    axis = check_axis(axis)
    label = np.asarray(label)
    if label.shape != image.shape:
        raise ImageError(f"support label shape {label.shape} differs from the support image shape {image.shape}")
    n = image.shape[axis]
    slice_index = whole_indices([slice_index], "support slice")[0]  # 11.0 is slice 11; 11.5 is refused
    if not 0 <= slice_index < n:
        raise PromptError(f"support slice {slice_index} is outside the support volume (axis {axis} has {n} slices, "
                          f"0..{n - 1})")
    lab2d = np.take(label, int(slice_index), axis=axis)
    present = sorted(int(v) for v in np.unique(lab2d) if v != 0)
    if not present:
        raise PromptError(f"the support mask is empty on slice {slice_index} (axis {axis}); annotate the organ there")
    ids = present if label_ids is None else list(whole_indices(list(label_ids), "support label id"))
    missing = [v for v in ids if v not in present]
    if missing:
        raise PromptError(f"label(s) {missing} absent from support slice {slice_index} (axis {axis}); "
                          f"labels on that slice: {present}")
    imgs, grid = image_slices(image, axis, size)
    out = []
    for v in ids:
        m = to_network((lab2d == v)[None].astype(np.float32), grid, mode="area")
        m = (m > 0.5).float() if (m > 0.5).any() else (m > 0).float()  # tiny masks survive the resize
        out.append(Support(imgs[slice_index:slice_index + 1], m, v, int(slice_index)))
    return out


class FewShotSegmenter:
    """A loaded RP-Net on a device, ready to segment query volumes."""

    def __init__(self, model=DEFAULT_NAME, device: str = "auto", iterations: int = TEST_ITERATIONS,
                 batch: int = 16, net: Optional[RPNet] = None, start: str = DEFAULT_START):
        if start not in STARTS:
            raise PromptError(f"start must be one of {STARTS}; got {start!r}")
        self.start = start
        self.device = choose_device(device)
        if net is None:
            net, self.manifest = load_rpnet(model, self.device)
        else:
            self.manifest = {"name": "in-memory"}
            net = net.to(self.device).eval()
        self.net = net
        self.iterations = int(iterations)
        self.batch = int(batch)

    @torch.no_grad()
    def predict(self, supports: Sequence[Support], query: torch.Tensor, assignment: np.ndarray,
                progress: Progress = None, cancel: Cancel = None) -> torch.Tensor:
        """Foreground probability (n, S, S) of query slices (n, 1, S, S); slice i uses supports[assignment[i]]."""
        dev = self.device
        states = [self.net.support_state(s.image.to(dev), s.mask.to(dev)) for s in supports]
        out = torch.zeros(query.shape[0], query.shape[-2], query.shape[-1])
        for start in range(0, query.shape[0], self.batch):
            if cancel is not None and cancel():
                raise CancelledError("segmentation cancelled; nothing was written")
            idx = np.arange(start, min(start + self.batch, query.shape[0]))
            q = query[idx].to(dev)
            feats = self.net.encoder(q)
            a = assignment[idx]
            raw = torch.cat([states[j]["raw_prototypes"] for j in a])
            protos = torch.cat([states[j]["prototypes"] for j in a])
            init = None
            if self.start == "affine":
                s_img = torch.cat([supports[j].image for j in a]).to(dev)
                s_mask = torch.cat([supports[j].mask for j in a]).to(dev)
                init = registered_masks(s_img, s_mask, q)
            logits, _ = self.net.refine(feats, raw, protos, self.iterations, q.shape[-2:], init)
            out[idx] = logits[-1].softmax(1)[:, 1].float().cpu()
            if progress:
                progress(float(idx[-1] + 1) / query.shape[0], "segmenting")
        return out

    def _auto_window(self, vol: np.ndarray, info: AutoRange, qimgs: torch.Tensor, grid, footprint: np.ndarray,
                     axis: int, cancel: Cancel) -> np.ndarray:
        """The kept component `vol` -> the organ's window (place_window), its slices segmented again with
        their chunk's support slice, the component step again; 0 outside the window."""
        from .protocol import query_chunks

        other = tuple(a for a in range(3) if a != axis)
        area = (vol > 0.5).sum(axis=other).astype(float)
        images = torch.cat([s.image for s in info.supports])[:, 0].numpy()
        keep = place_window(area, qimgs[:, 0].numpy(), images, info.extent, info.centre_fraction,
                            ONE_SLICE_IMAGE_WEIGHT if info.estimated else IMAGE_WEIGHT)
        z = np.flatnonzero(keep)
        chunks = query_chunks(int(z[0]), int(z[-1])) if len(info.supports) == len(CHUNK_FRACTIONS) \
            else np.zeros(z.size, dtype=int)
        p = self.predict(info.supports, qimgs[z[0]:z[-1] + 1], chunks, cancel=cancel)
        full = np.zeros((qimgs.shape[0], grid.rows, grid.cols), dtype=np.float32)
        full[z[0]:z[-1] + 1] = from_network(p, grid)
        out = volume_from_slices(full, grid)
        return out * keep_consistent_component(out > 0.5, footprint, axis) if (out > 0.5).any() else out

    def segment(self, supports: Sequence[Support], query_image: Image, axis: int = 0,
                slices: Optional[Tuple[int, int]] = None, chunk_of_slice: Optional[np.ndarray] = None,
                auto_range: bool = False, box: Optional[Tuple[Sequence[int], Sequence[int]]] = None,
                progress: Progress = None, cancel: Cancel = None,
                extents: Optional[Dict[int, float]] = None,
                auto: Optional[Dict[int, AutoRange]] = None) -> Segmentation:
        """Segment `query_image` along `axis`.

        slices: (first, last + 1) query slice range (default: all); chunk_of_slice: support index per slice
        of that range (default: 0 for all, i.e. one support per label: pass one Support per label then).
        box: (lo, hi) voxel indices (K, J, I), hi exclusive: its slices are the range, and nothing outside it
        is labelled. auto_range: keep only the 3D component consistent with the support position, per label.
        extents: {label: the organ's extent in query slices} (support_extents): with auto_range, only the
        window of that many slices centred on the slice with the largest kept cross-section is labelled (the
        organ is about as long as in the support; on training patients +7.6 Dice points in setting 2).
        auto: {label: AutoRange} (auto_range_info), with auto_range: the window is placed by
        query_range.place_window (network, image and position cues) and its slices are segmented again with
        the support slice of their chunk; replaces `extents` for that label. Not with box or slices (refused:
        the window could lie outside them). info["windowed"]: the labels a window was placed for.
        """
        if not supports:
            raise PromptError("no support slice given: annotate the organ on one slice of the support volume")
        if auto and (box is not None or slices is not None):  # the window would label slices outside them
            raise PromptError("the automatic window (auto=) chooses its own query slices and cannot be combined "
                              "with a box or a slice range: pass one or the other")
        validate_image(query_image, "query image")
        check_not_constant(query_image, "query image")
        axis = check_axis(axis)
        n = query_image.shape[axis]
        inside = None
        if box is not None:
            lo, hi = (np.asarray(v, dtype=int) for v in box)
            if lo.shape != (3,) or hi.shape != (3,) or (lo < 0).any() or (hi > query_image.shape).any() \
                    or (hi <= lo).any():
                raise PromptError(f"query box {lo.tolist()}..{hi.tolist()} is empty or outside the query volume "
                                  f"{list(query_image.shape)}")
            inside = np.zeros(query_image.shape, dtype=bool)
            inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
            slices = (int(lo[axis]), int(hi[axis]))
        k0, k1 = (0, n) if slices is None else (int(slices[0]), int(slices[1]))
        if k0 >= k1:
            raise PromptError(f"query slice range {k0}..{k1 - 1} is empty or reversed: the first slice must not "
                              "come after the last")
        if not 0 <= k0 < k1 <= n:
            raise PromptError(f"query slice range {k0}..{k1 - 1} is outside the query volume (0..{n - 1})")
        qimgs, grid = image_slices(query_image, axis)
        by_label: Dict[int, List[Support]] = {}
        for s in supports:
            by_label.setdefault(s.label, []).append(s)
        probs: Dict[int, np.ndarray] = {}
        windowed = []
        for li, (lab, sups) in enumerate(by_label.items()):
            assign = np.zeros(k1 - k0, dtype=int) if chunk_of_slice is None else np.asarray(chunk_of_slice)
            if assign.shape != (k1 - k0,) or assign.max() >= len(sups):
                raise PromptError(f"chunk assignment must give one of {len(sups)} supports per query slice")

            def sub(frac, msg, li=li):
                if progress:
                    progress((li + frac) / len(by_label), f"label {lab}: {msg}")
            p = self.predict(sups, qimgs[k0:k1], assign, sub, cancel)
            full = np.zeros((n, grid.rows, grid.cols), dtype=np.float32)
            full[k0:k1] = from_network(p, grid)
            vol = volume_from_slices(full, grid)
            if inside is not None:
                vol = vol * inside
            if auto_range:
                footprint = from_network(sups[len(sups) // 2].mask[:, 0], grid)[0] > 0.5
                vol = vol * keep_consistent_component(vol > 0.5, footprint, axis)
                if auto and lab in auto:
                    vol = self._auto_window(vol, auto[lab], qimgs, grid, footprint, axis, cancel)
                    windowed.append(lab)
                elif extents and lab in extents:
                    vol = vol * np.expand_dims(extent_window(vol > 0.5, extents[lab], axis), tuple(
                        a for a in range(3) if a != axis))
            probs[lab] = vol
        labels = combine_labels(probs)
        return Segmentation(labels, probs, (k0, k1), {"axis": axis, "iterations": self.iterations,
                                                       "device": str(self.device), "auto_range": auto_range,
                                                       "windowed": windowed})


def auto_range_info(support_image: Image, support_label: np.ndarray, labels: Sequence[int], query_image: Image,
                    axis: int = 0) -> Dict[int, AutoRange]:
    """AutoRange of each label from the support volume's label map (support_extents, the organ's relative
    position, and its slices at CHUNK_FRACTIONS, chosen as the protocol chooses its chunk supports).

    A label drawn on fewer than MIN_WINDOW_SLICES support slices (a one-slice annotation) says nothing of the
    organ's length: its window's length is estimated from its largest drawn cross-section, that slice is its
    support and its position the centre (AutoRange.estimated)."""
    from .protocol import support_chunk_slices

    extents = support_extents(support_image, support_label, labels, query_image, axis)
    other = tuple(a for a in range(3) if a != axis)
    out = {}
    for lab, ext in extents.items():
        z = np.flatnonzero((np.asarray(support_label) == lab).any(axis=other))
        if z.size < MIN_WINDOW_SLICES:
            areas = (np.asarray(support_label) == lab).sum(axis=other)
            k = int(np.argmax(areas))
            mm2 = float(areas[k]) * float(np.prod([support_image.spacing_kji[a] for a in other]))
            out[lab] = AutoRange(one_slice_extent(mm2, float(query_image.spacing_kji[axis])),
                                 k / support_image.shape[axis],
                                 make_supports(support_image, support_label, k, [lab], axis), estimated=True)
            continue
        ks = support_chunk_slices(support_label, lab, len(CHUNK_FRACTIONS), axis)
        sups = [make_supports(support_image, support_label, k, [lab], axis)[0] for k in ks]
        out[lab] = AutoRange(ext, (z[0] + z[-1]) / 2 / support_image.shape[axis], sups)
    return out


def support_extents(support_image: Image, support_label: np.ndarray, labels: Sequence[int], query_image: Image,
                    axis: int = 0) -> Dict[int, float]:
    """Extent of each label along `axis` in the support (first to last slice, in mm), in query slices."""
    other = tuple(a for a in range(3) if a != axis)
    out = {}
    for lab in labels:
        z = np.flatnonzero((np.asarray(support_label) == lab).any(axis=other))
        if z.size:
            mm = (z[-1] - z[0] + 1) * float(support_image.spacing_kji[axis])
            out[int(lab)] = mm / float(query_image.spacing_kji[axis])
    return out


def extent_window(mask: np.ndarray, extent: float, axis: int = 0) -> np.ndarray:
    """Bool per slice: the window of `extent` slices (rounded outwards, so up to one more) centred on the
    slice with the largest cross-section of `mask`."""
    area = mask.sum(axis=tuple(a for a in range(3) if a != axis))
    keep = np.zeros(area.shape[0], dtype=bool)
    if area.max() == 0:
        return keep
    center, half = int(np.argmax(area)), extent / 2
    lo, hi = int(np.floor(center - half + 0.5)), int(np.ceil(center + half - 0.5))
    keep[max(lo, 0):hi + 1] = True
    return keep


def combine_labels(probs: Dict[int, np.ndarray], threshold: float = 0.5) -> np.ndarray:
    """Label map: the most probable label where its probability is >= threshold, else 0."""
    labs = list(probs)
    stack = np.stack([probs[v] for v in labs])
    best = stack.argmax(0)
    out = np.asarray(labs, dtype=np.int16)[best]
    out[stack.max(0) < threshold] = 0
    return out
