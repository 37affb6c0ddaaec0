"""Running a FewShotSeg request in the compute process (torch is imported only here, when a run starts).

Several support segments: each is its own 1-way 1-shot episode (as `python -m FewShotSegLib segment`),
each query voxel goes to the most probable segment (`combine_labels`). With exemplar adaptation, each
segment gets its own adapted copy of the network, adapted by the core's fixed step counts (8 + 4, as
`segment --adapt`); the panel's time budget is only a cap on that, the total for the run split equally
between the segments (about 12 s per segment on a 2-core CPU, so the default 60 s cuts nothing for up to
four segments; a cut is named in the status line). It caps the adaptation's training steps only: the
pseudo-labelling pass over the query and the segmentation itself come on top (a few seconds on a CPU for a
34-slice MR).
Every range keeps, per segment, the 3D component consistent with the support position, as the evaluation
and the demo do (it raised Dice on every organ of the embedded sample pair). Auto with a segment drawn on
fewer than 3 support slices (one drawn slice) also keeps only a window of the length its cross-section
suggests, as `segment --range auto` does (query_range.one_slice_extent; on training patients 43.3 -> 51.1).
A segment drawn on 3 or more slices keeps the component step alone, as before (the support-length window of
`segment --range auto` would lower the embedded pair's right kidney from 0.80 to 0.49 here).

"Propagate through this scan" (`propagate=True`): the query is the support volume itself, and each segment
is followed slice by slice outwards from the support slice (`propagate.propagate`, with InteractiveRefine's
2D box network redoing each slice and its 3D box step the organ's box, exactly as `python -m FewShotSegLib
segment --propagate`); range
automatic (it stops where the organ ends) or given. InteractiveRefine's "Propagate to 3D" sends the same
request with its 2D result as the support (`request.propagation_request`).

"Follow through the query" (`follow=True`): each segment's few-shot result is then followed through the query by
same-scan propagation from its middle slice, with the box network (engine/follow.py, exactly as
`python -m FewShotSegLib segment --follow`): on training patients, with one drawn support slice and Auto, 52.2
-> 60.5 mean Dice (benchmarks/fewshot_auto_range/seed_box_redo.md, with the automatic range's stops as shipped).
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from InteractiveRefineLib.core.errors import CancelledError, ModelError

from .request import FewShotRequest, FewShotResult, _slice_areas

log = logging.getLogger(__name__)


def run_request(request: FewShotRequest, segmenter_for: Callable[[str], Any], progress, cancel,
                box_for: Optional[Callable[[str], Any]] = None) -> FewShotResult:
    """Run a validated request; `segmenter_for(device)` gives the (cached) segmenter, `box_for(device)`
    InteractiveRefine's BoxSegmenter for propagation (default: a new one). A GPU out-of-memory error runs it
    again on the CPU and says so in the result's info."""
    import torch

    from InteractiveRefineLib.core.device import OutOfMemoryError
    from InteractiveRefineLib.engine.memory import check_memory, fewshot_bytes

    from ..engine.intensity_check import modality_warning

    request.validate()
    # the memory guard of `segment`, before any model is loaded: a refusal, not the child killed mid-run
    check_memory(fewshot_bytes(request.query_image.shape, len(request.segment_ids)),
                 f"segmenting the query {request.query_image.shape}")
    t0 = time.perf_counter()
    device = request.device
    try:
        result = _run(request, segmenter_for, box_for, device, progress, cancel)
        fallback = None
    except OutOfMemoryError as exc:
        if segmenter_for(device).device.type == "cpu":
            raise ModelError("out of memory on the CPU: use a smaller query range or close other programs; "
                             "nothing was written") from exc
        log.warning("out of GPU memory (%s); running again on the CPU", str(exc).splitlines()[0] if str(exc)
                    else "")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        device, fallback = "cpu", "out of GPU memory"
        result = _run(request, segmenter_for, box_for, device, progress, cancel)
    used = str(segmenter_for(device).device)
    warning = modality_warning(request.support_image, request.query_image)  # as `segment` warns
    result.info.update(device=used, requested_device=request.device, fallback=fallback,
                       seconds=round(time.perf_counter() - t0, 2), warnings=[warning] if warning else [])
    return result


def _run(request: FewShotRequest, segmenter_for, box_for, device: str, progress, cancel) -> FewShotResult:
    box = None
    if request.use_box_network and (request.propagate or request.follow):
        if box_for is None:
            from ..engine.propagate import box_network as box_for
        box = box_for(device)
    if not request.propagate:
        return _segment(request, segmenter_for(device), box, progress, cancel)
    return _propagate(request, segmenter_for(device), box, progress, cancel)


def _inside_roi(request: FewShotRequest, vol: np.ndarray) -> np.ndarray:
    """`vol` with everything outside the query ROI set to 0 (range ROI; other ranges: unchanged)."""
    r = tuple(request.query_range)
    if r[0] != "box":
        return vol
    lo, hi = r[1], r[2]
    inside = np.zeros(vol.shape, bool)
    inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    return vol * inside


def _propagate(request: FewShotRequest, base, box, progress, cancel) -> FewShotResult:
    """Same-scan propagation of each segment (as `segment --propagate`)."""
    from ..engine.propagate import propagate

    ids = request.segment_ids
    axis, k = int(request.axis), int(request.slice_index)
    slices = request.range_slices()
    probs: Dict[int, np.ndarray] = {}
    first, last = k, k
    for i, sid in enumerate(ids):
        res = propagate(base, request.support_image, _support_mask(request, sid), k, 1, axis, slices,
                        box_segmenter=box, progress=_share(progress, i, len(ids), request.name(sid)), cancel=cancel)
        probs[i + 1] = _inside_roi(request, res.probabilities[1])
        first, last = min(first, res.slices[0]), max(last, res.slices[1] - 1)
    return _result(request, base, probs, progress, cancel, "propagation", adapted=False, adaptation={},
                   slices=(int(first), int(last)), propagated=True, box_network=box is not None,
                   adapt_seconds_each=0.0)


def _segment(request: FewShotRequest, base, box, progress, cancel) -> FewShotResult:
    """Few-shot segmentation of the query, each segment from its own support (adapted first if asked), then
    followed through the query if asked (with the box network `box`, None: without)."""
    from ..engine.adapt import AdaptConfig, adapt_segmenter
    from ..engine.follow import follow
    from ..engine.segment import MIN_WINDOW_SLICES, auto_range_info, make_supports

    ids = request.segment_ids
    n = len(ids)
    axis, k = int(request.axis), int(request.slice_index)
    budget = float(request.adapt_seconds) / n if request.adapt else 0.0
    # each segment's part of the progress bar: adaptation 4, segmentation 1, following 1 (where asked)
    seg_share, end_share = _stage_bounds(request.adapt, request.follow)
    probs: Dict[int, np.ndarray] = {}
    adaptation: Dict[str, Any] = {}
    slices = (0, request.query_image.shape[axis])
    for i, sid in enumerate(ids):
        if cancel():
            raise CancelledError("segmentation cancelled; nothing was written")
        mask = _support_mask(request, sid)
        support = dataclasses.replace(make_supports(request.support_image, mask, k, [1], axis)[0], label=i + 1)
        auto = None
        if request.query_range[0] == "auto" and (_slice_areas(mask, axis) > 0).sum() < MIN_WINDOW_SLICES:
            # drawn on one slice: the window of the length its cross-section suggests, as `segment --range auto`
            auto = {i + 1: auto_range_info(request.support_image, mask, [1], request.query_image, axis)[1]}
        net = base
        if request.adapt:
            net = adapt_segmenter(base, [support], request.query_image, axis, AdaptConfig(time_budget=budget),
                                  progress=_share(progress, i, n, request.name(sid), 0.0, seg_share), cancel=cancel)
            adaptation[sid] = dict(net.manifest.get("adapted", {}))
        res = net.segment([support], request.query_image, axis=axis, auto_range=True,
                          progress=_share(progress, i, n, request.name(sid), seg_share, end_share), cancel=cancel,
                          auto=auto, **request.core_range())
        probs[i + 1] = res.probabilities[i + 1]
        slices = res.slices
        if request.follow:  # as `segment --follow`: the base network (also after adaptation:
            # benchmarks/fewshot_auto_range/follow_adapted.md), the box network, the range's slices
            followed = follow(base, request.query_image, res.labels == i + 1, axis, request.range_slices(),
                              box_segmenter=box, progress=_share(progress, i, n, request.name(sid), end_share, 1.0),
                              cancel=cancel)
            probs[i + 1] = _inside_roi(request, followed.astype(np.float32))
    return _result(request, base, probs, progress, cancel, "segmentation", adapted=bool(request.adapt),
                   adaptation=adaptation, slices=(int(slices[0]), int(slices[1]) - 1),
                   adapt_seconds_each=round(budget, 2), followed=bool(request.follow),
                   box_network=bool(request.follow and box is not None))


def _support_mask(request: FewShotRequest, sid: str) -> np.ndarray:
    return (np.asarray(request.support_masks[sid]) > 0).astype(np.uint8)


def _stage_bounds(adapt: bool, follow: bool) -> Tuple[float, float]:
    """Where segmentation starts and ends in a segment's part of the progress (adaptation before it, following
    after it), by the stages' weights: adaptation 4, segmentation 1, following 1."""
    weights = (4.0 if adapt else 0.0, 1.0, 1.0 if follow else 0.0)
    total = sum(weights)
    return weights[0] / total, (weights[0] + weights[1]) / total


def _share(progress, i: int, n: int, name: str, lo: float = 0.0, hi: float = 1.0):
    """Progress of segment i of n, stage lo..hi of its part, as a fraction of the whole run."""
    return lambda f, msg: progress((i + lo + (hi - lo) * float(f)) / n, f"{name}: {msg}")


def _result(request: FewShotRequest, base, probs: Dict[int, np.ndarray], progress, cancel, what: str,
            **info) -> FewShotResult:
    """The end both runs share: each query voxel to the most probable segment (probs keyed 1..n in request
    order), the masks, and the result's info (`info` plus the axis, support slice, voxels, empty, model)."""
    from ..engine.segment import combine_labels

    if cancel():
        raise CancelledError(f"{what} cancelled; nothing was written")
    labels = combine_labels(probs)
    masks = {sid: labels == i + 1 for i, sid in enumerate(request.segment_ids)}
    info.update(axis=int(request.axis), support_slice=int(request.slice_index),
                voxels={sid: int(m.sum()) for sid, m in masks.items()},
                empty=[sid for sid, m in masks.items() if not m.any()], model=base.manifest.get("name"))
    progress(1.0, "done")
    return FewShotResult(masks, info)
