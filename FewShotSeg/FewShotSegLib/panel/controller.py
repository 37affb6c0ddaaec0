"""What the FewShotSeg panel does, without Slicer: choose the support slice, check a request, run it on a
background thread, and name the result segments.

The widget reads MRML nodes into plain arrays (slicer_bridge), builds a `FewShotRequest` on the GUI thread,
hands it to `FewShotController.start`, polls the controller from a timer, and writes the finished
`FewShotResult` back into segments on the GUI thread. Nothing here touches MRML or Qt, and torch is only
imported when a segmentation starts, so the Slicer module loads before its dependencies are installed.

Several support segments: each is its own 1-way 1-shot episode (as `python -m FewShotSegLib segment`),
each query voxel goes to the most probable segment (`combine_labels`). With exemplar adaptation, each
segment gets its own adapted copy of the network, and the adaptation budget is the total for the run,
split equally between the segments, so it does not grow with their number. It bounds the adaptation's
training steps only: the pseudo-labelling pass over the query and the segmentation itself come on top
(a few seconds on a CPU for a 34-slice MR).
Every range keeps, per segment, the 3D component consistent with the support position, as the evaluation
and the demo do (it raised Dice on every organ of the embedded sample pair).

"Propagate through this scan" (`propagate=True`): the query is the support volume itself, and each segment
is followed slice by slice outwards from the support slice (`propagate.propagate`, with InteractiveRefine's
2D box network redoing each slice, exactly as `python -m FewShotSegLib segment --propagate`); range
automatic (it stops where the organ ends) or given. InteractiveRefine's "Propagate to 3D" sends the same
request with its 2D result as the support (`propagation_request`).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from InteractiveRefineLib.core.errors import CancelledError, ImageError, ModelError, PromptError
from InteractiveRefineLib.core.worker import BusyError, Job
from InteractiveRefineLib.panel.ras_geometry import OBLIQUE_COS, roi_to_box
from InteractiveRefineLib.panel.segment_names import output_segment_names

if TYPE_CHECKING:  # image_io imports SimpleITK: only when a request is checked, not when Slicer loads the module
    from InteractiveRefineLib.core.image_io import Image

log = logging.getLogger(__name__)

#: Default exemplar-adaptation budget in seconds; equals adapt.GUI_TIME_CAP (adapt.py imports torch, this
#: module does not). FewShotSeg.py states these constants again for its parameter node; tests check all agree.
DEFAULT_ADAPT_SECONDS = 60.0
DEVICES = ("auto", "cuda", "cpu")
#: The panel's range modes; a request's range is ("auto",), ("slices", first, last) or ("box", lo, hi).
RANGE_MODES = ("auto", "roi", "slices")
AXIS_NAMES = ("K", "J", "I")

Range = Tuple[Any, ...]


# -- support slice -----------------------------------------------------------------------------------------
def _slice_areas(mask: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(a for a in range(3) if a != axis)
    return np.asarray(mask, bool).sum(axis=other)


def default_support_slice(mask_kji: Union[np.ndarray, Sequence[np.ndarray]], axis: int = 0,
                          view_index: Optional[int] = None, names: Optional[Sequence[str]] = None) -> int:
    """The support slice the panel proposes along array `axis`.

    mask_kji: one segment's mask (K, J, I), or a sequence of masks (several segments learnt together: each
    must be on the chosen slice). Returns `view_index` (the slice the Red view shows) if every segment is
    present there, else the slice where the smallest of the segments is largest (for one segment: its
    largest cross-section). PromptError if a segment is empty or the segments never share a slice;
    `names` (one per mask) name the segments in the messages.
    """
    axis = _check_axis(axis)
    masks = [mask_kji] if isinstance(mask_kji, np.ndarray) else list(mask_kji)
    if not masks:
        raise PromptError("no support segment selected: choose the segment(s) to learn")
    areas = []
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.ndim != 3:
            raise ImageError(f"a support mask must be 3D (K, J, I); got shape {m.shape}")
        a = _slice_areas(m, axis)
        if not a.any():
            what = repr(names[i]) if names is not None and i < len(names) else f"{i + 1} of {len(masks)}"
            raise PromptError(f"support segment {what} is empty: draw it on a slice of the support volume first")
        areas.append(a)
    if len({a.shape for a in areas}) != 1:
        raise ImageError("the support masks have different shapes")
    common = np.min(np.stack(areas), axis=0)
    if view_index is not None and 0 <= int(view_index) < common.size and common[int(view_index)] > 0:
        return int(view_index)
    if not common.any():
        raise PromptError(f"the selected segments are never on the same slice along axis {AXIS_NAMES[axis]}; "
                          "learn them one at a time or draw them on a common slice")
    return int(np.argmax(common))


def resolve_support_slice(masks: Sequence[np.ndarray], slice_index: int, axis: int,
                          view: Optional[Tuple[int, int, bool]] = None,
                          names: Optional[Sequence[str]] = None) -> Tuple[int, int]:
    """(axis, slice) of the support: `slice_index` >= 0 is the user's choice along `axis`; -1 means automatic:
    along the axis of the Red view (`view` = slice_of_view's (axis, index, oblique); ignored when oblique
    or None, then along `axis`), preferring the slice it shows (default_support_slice)."""
    if slice_index is not None and int(slice_index) >= 0:
        return _check_axis(axis), int(slice_index)
    view_index = None
    if view is not None and not view[2]:
        axis, view_index = int(view[0]), int(view[1])
    return _check_axis(axis), default_support_slice(list(masks), axis, view_index, names)


#: A support slice where a segment's area is below this fraction of its largest cross-section gets a note:
#: on the sample pair the right kidney gives Dice 0.18 from its slice 9 (small, at its pole) and 0.82 from
#: slice 11 (its largest).
SMALL_SLICE_FRACTION = 0.5


def support_slice_note(masks: Sequence[np.ndarray], axis: int, slice_index: int,
                       names: Optional[Sequence[str]] = None) -> str:
    """A hint when the support slice shows a segment much smaller than its largest cross-section
    ('' otherwise): few-shot results are much better from a slice through the middle of the organ."""
    notes = []
    for i, m in enumerate(masks):
        areas = _slice_areas(np.asarray(m), _check_axis(axis))
        if areas.max() > 0 and areas[int(slice_index)] < SMALL_SLICE_FRACTION * areas.max():
            name = names[i] if names is not None and i < len(names) else f"segment {i + 1}"
            notes.append(f"{name} is small on slice {int(slice_index)} ({areas[int(slice_index)] / areas.max():.0%} "
                         f"of its largest, slice {int(np.argmax(areas))})")
    if not notes:
        return ""
    return "; ".join(notes) + ": a slice through the middle of the organ usually segments better."


def axis_plane_names(ijk_to_ras) -> List[str]:
    """Anatomical plane of the slices along each array axis (K, J, I) of a volume: 'axial', 'coronal',
    'sagittal', or 'oblique' when the axis is tilted from the nearest patient axis (as slice views judge it)."""
    m = np.asarray(ijk_to_ras, dtype=float)
    names = []
    for axis in range(3):
        v = m[:3, 2 - axis]
        v = v / max(np.linalg.norm(v), 1e-12)
        ras = int(np.argmax(np.abs(v)))
        names.append(("sagittal", "coronal", "axial")[ras] if abs(v[ras]) >= OBLIQUE_COS else "oblique")
    return names


# -- query range ---------------------------------------------------------------------------------------------
def auto_range() -> Range:
    """Every query slice; per segment the 3D part consistent with the support position is kept."""
    return ("auto",)


def slice_range(first: int, last: int) -> Range:
    """Query slices first..last (inclusive) along the support axis."""
    return ("slices", int(first), int(last))


def roi_range(object_to_ras, size_mm, ijk_to_ras, shape_kji: Sequence[int]) -> Range:
    """A Markups ROI (its ObjectToWorld matrix and world size in mm) -> ("box", lo, hi) on the query grid
    (K, J, I, hi exclusive), clipped to the volume; PromptError if it misses the query volume or is empty."""
    size = np.asarray(size_mm, dtype=float)
    if size.shape != (3,) or not np.isfinite(size).all() or (size <= 0).any():
        raise PromptError(f"the query ROI has no extent (size {np.round(size, 2).tolist()} mm): place it "
                          "around the organ in the query volume")
    try:
        box = roi_to_box(object_to_ras, size, ijk_to_ras, shape_kji)
    except PromptError as exc:
        raise PromptError(f"the query ROI does not overlap the query volume: {exc}") from None
    return ("box", tuple(int(v) for v in box.lo), tuple(int(v) for v in box.hi))


# -- request -------------------------------------------------------------------------------------------------
def _check_axis(axis) -> int:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or int(axis) not in (0, 1, 2):
        raise PromptError(f"slice axis must be 0, 1 or 2 (array axes K, J, I); got {axis!r}")
    return int(axis)


def _slice_list(present: np.ndarray) -> str:
    idx = np.flatnonzero(present)
    if idx.size == 0:
        return "none"
    if idx.size == idx[-1] - idx[0] + 1:
        return f"{idx[0]}-{idx[-1]}" if idx.size > 1 else f"{idx[0]}"
    return ", ".join(str(i) for i in idx[:8]) + (", ..." if idx.size > 8 else "")


@dataclass
class FewShotRequest:
    """Everything one few-shot run needs, as plain data (built on the GUI thread, read by the worker).

    support_masks: {segment id: mask (K, J, I) on the support grid}, in the order of the output segments.
    slice_index: the support slice along `axis` (array axis 0 = K, 1 = J, 2 = I); the query is segmented
    slice by slice along the same array axis. query_range: ("auto",), ("slices", first, last) inclusive,
    or ("box", lo, hi) in query voxels (K, J, I), hi exclusive. adapt_seconds: the exemplar-adaptation
    budget for the whole run (split equally between segments). names: {segment id: name} for messages.
    The support and the query may be the same volume. propagate: same-scan propagation (the query must be the
    support volume; no adaptation); use_box_network: its 2D box network redoes each propagated slice.
    """

    support_image: Image
    support_masks: Dict[str, np.ndarray]
    slice_index: int
    query_image: Image
    axis: int = 0
    query_range: Range = ("auto",)
    adapt: bool = False
    adapt_seconds: float = DEFAULT_ADAPT_SECONDS
    device: str = "auto"
    names: Dict[str, str] = field(default_factory=dict)
    propagate: bool = False
    use_box_network: bool = True

    @property
    def segment_ids(self) -> List[str]:
        return list(self.support_masks)

    def name(self, segment_id: str) -> str:
        return self.names.get(segment_id) or str(segment_id)

    def validate(self) -> "FewShotRequest":
        """Check everything the run needs; PromptError/ImageError with a message naming the problem."""
        from InteractiveRefineLib.core.image_io import validate_image

        if not self.support_masks:
            raise PromptError("no support segment selected: choose the segment(s) to learn in the Support section")
        validate_image(self.support_image, "support volume")
        validate_image(self.query_image, "query volume")
        axis = _check_axis(self.axis)
        n = self.support_image.shape[axis]
        k = self.slice_index
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < n:
            raise PromptError(f"support slice {k} is outside the support volume (axis {AXIS_NAMES[axis]} has {n} "
                              f"slices, 0..{n - 1})")
        for sid, mask in self.support_masks.items():
            mask = np.asarray(mask)
            if mask.shape != self.support_image.shape:
                raise ImageError(f"segment {self.name(sid)!r}: mask shape {mask.shape} differs from the support "
                                 f"volume {self.support_image.shape}")
            present = _slice_areas(mask, axis) > 0
            if not present.any():
                raise PromptError(f"segment {self.name(sid)!r} is empty on the support volume: draw it first")
            if not present[int(k)]:
                raise PromptError(f"segment {self.name(sid)!r} is empty on support slice {int(k)} (axis "
                                  f"{AXIS_NAMES[axis]}); it is drawn on slice(s) {_slice_list(present)}: pick one "
                                  "of those, or set the slice to Auto")
        self._check_range(axis)
        if self.propagate:
            self._check_same_scan()
        if self.adapt:
            s = self.adapt_seconds
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
                raise PromptError(f"the adaptation time budget must be a positive number of seconds; got {s!r}")
        dev = (self.device or "").lower()
        if dev not in DEVICES and not dev.startswith("cuda:"):
            raise PromptError(f"unknown device {self.device!r}; use one of {', '.join(DEVICES)}")
        return self

    def _check_same_scan(self) -> None:
        q, s = self.query_image, self.support_image
        same = q is s or (q.shape == s.shape and np.allclose(q.spacing, s.spacing) and np.allclose(q.origin, s.origin)
                          and np.array_equal(q.array, s.array))
        if not same:
            raise PromptError("'Propagate through this scan' segments the support volume itself: choose the support "
                              "volume as the query volume (or turn propagation off)")
        if self.adapt:
            raise PromptError("'Propagate through this scan' does not combine with adaptation: turn one of them off")

    def _check_range(self, axis: int) -> None:
        r = tuple(self.query_range or ())
        shape = self.query_image.shape
        n = shape[axis]
        kind = r[0] if r else None
        if kind == "auto" and len(r) == 1:
            return
        if kind == "slices" and len(r) == 3:
            first, last = r[1], r[2]
            if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (first, last)):
                raise PromptError(f"query slices must be whole numbers; got {first!r}..{last!r}")
            if first > last:
                raise PromptError(f"query range: the first slice ({first}) is after the last slice ({last})")
            if first < 0 or last >= n:
                raise PromptError(f"query range {first}..{last} is outside the query volume (axis {AXIS_NAMES[axis]} "
                                  f"has {n} slices, 0..{n - 1})")
            return
        if kind == "box" and len(r) == 3:
            lo, hi = np.asarray(r[1]), np.asarray(r[2])
            if lo.shape != (3,) or hi.shape != (3,) or (lo < 0).any() or (hi > np.asarray(shape)).any() \
                    or (hi <= lo).any():
                raise PromptError(f"the query box {lo.tolist()}..{hi.tolist()} is empty or outside the query volume "
                                  f"{list(shape)} (K, J, I)")
            return
        raise PromptError(f"unknown query range {r!r}; use ('auto',), ('slices', first, last) or ('box', lo, hi)")

    def core_range(self) -> Dict[str, Any]:
        """Keyword arguments of FewShotSegmenter.segment for the query range."""
        r = tuple(self.query_range)
        if r[0] == "slices":
            return {"slices": (int(r[1]), int(r[2]) + 1)}
        if r[0] == "box":
            return {"box": (tuple(int(v) for v in r[1]), tuple(int(v) for v in r[2]))}
        return {}


# -- results -------------------------------------------------------------------------------------------------
@dataclass
class FewShotResult:
    """masks: {support segment id: bool (K, J, I) on the query grid}, in request order (disjoint).
    info: device (used), requested_device, fallback (None or the reason of a CPU fallback), seconds,
    adapted, adaptation (per segment id: steps, pseudo_steps, seconds), axis, support_slice,
    slices (first, last) inclusive along the axis, voxels and empty (segment ids with nothing found)."""

    masks: Dict[str, np.ndarray]
    info: Dict[str, Any]


@dataclass
class Status:
    """A poll result: the running or just-finished job, and its result once it finished well."""

    job: Job
    result: Optional[FewShotResult] = None


def result_segment_names(support_names: Sequence[str], existing: Iterable[str], same_node: bool) -> List[str]:
    """Names of the result segments: the support segments' names. In another segmentation a segment of
    that name is replaced (re-running updates it); in the support segmentation itself the support segment
    must survive, so a numbered name ('liver 2') is used instead."""
    return output_segment_names(list(support_names), existing, replace=not same_node)


def result_message(result: FewShotResult, names: Optional[Mapping[str, str]] = None) -> str:
    """One line for the panel's status label."""
    info = result.info
    names = names or {}
    parts = []
    for sid, mask in result.masks.items():
        vox = int(np.count_nonzero(mask))
        parts.append(f"{names.get(sid, sid)}: {'nothing found' if vox == 0 else f'{vox} voxels'}")
    first, last = info.get("slices", (0, 0))
    how = "adapted" if info.get("adapted") else "not adapted"
    return (f"{'; '.join(parts)} (slices {first}-{last} along {AXIS_NAMES[info.get('axis', 0)]}, {how}, "
            f"{info.get('seconds', 0.0):.1f} s on {info.get('device', '?')})"
            + "".join(f" Warning: {w}." for w in info.get("warnings") or []))


# -- the request as a compute-process message ----------------------------------------------------------------
def request_message(request: FewShotRequest, model: str = "default") -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """(JSON fields, arrays) of a request for the compute process (nothing pickled)."""
    from InteractiveRefineLib.compute.mailbox import image_message

    s_geo, s_arr = image_message(request.support_image)
    arrays = {"support": s_arr}
    same = request.query_image is request.support_image
    q_geo = s_geo
    if not same:
        q_geo, arrays["query"] = image_message(request.query_image)
    ids = [str(sid) for sid in request.support_masks]
    for i, mask in enumerate(request.support_masks.values()):
        arrays[f"mask{i}"] = np.asarray(mask) > 0
    r = tuple(request.query_range)
    rng = [r[0]] + [list(v) if isinstance(v, (tuple, list, np.ndarray)) else v for v in r[1:]]
    return ({"support": s_geo, "query": q_geo, "same": same, "ids": ids, "slice_index": int(request.slice_index),
             "axis": int(request.axis), "query_range": _plain_range(rng), "adapt": bool(request.adapt),
             "adapt_seconds": float(request.adapt_seconds), "device": str(request.device),
             "names": {str(k): str(v) for k, v in request.names.items()}, "model": model,
             "propagate": bool(request.propagate), "use_box_network": bool(request.use_box_network)}, arrays)


def _plain_range(rng):
    return [[int(x) for x in v] if isinstance(v, list) else (int(v) if isinstance(v, (int, np.integer)) else v)
            for v in rng]


def request_from_message(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> FewShotRequest:
    """The request back from request_message's fields and arrays (in the compute process)."""
    from InteractiveRefineLib.compute.mailbox import image_from_message

    support = image_from_message(fields["support"], arrays["support"])
    query = support if fields.get("same") else image_from_message(fields["query"], arrays["query"])
    masks = {sid: arrays[f"mask{i}"] for i, sid in enumerate(fields["ids"])}
    r = list(fields.get("query_range") or ["auto"])
    rng = tuple([r[0]] + [tuple(v) if isinstance(v, list) else v for v in r[1:]])
    return FewShotRequest(support, masks, int(fields["slice_index"]), query, int(fields.get("axis", 0)), rng,
                          bool(fields.get("adapt")), float(fields.get("adapt_seconds", DEFAULT_ADAPT_SECONDS)),
                          str(fields.get("device", "auto")), dict(fields.get("names") or {}),
                          bool(fields.get("propagate")), bool(fields.get("use_box_network", True)))


def result_from_message(fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray], shape) -> FewShotResult:
    from InteractiveRefineLib.compute.mailbox import unpack_mask

    masks = {sid: unpack_mask(shape, fields["mask_lo"][sid], arrays[f"mask{i}"])
             for i, sid in enumerate(fields["ids"])}
    info = dict(fields.get("info") or {})
    if "slices" in info:
        info["slices"] = tuple(info["slices"])
    return FewShotResult(masks, info)


# -- running (in the compute process) -----------------------------------------------------------------------
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
    if not request.propagate:
        return _segment(request, segmenter_for(device), progress, cancel)
    box = None
    if request.use_box_network:
        if box_for is None:
            from InteractiveRefineLib.engine.inference import BoxSegmenter

            def box_for(dev):
                return BoxSegmenter(device=dev)
        box = box_for(device)
    return _propagate(request, segmenter_for(device), box, progress, cancel)


def _propagate(request: FewShotRequest, base, box, progress, cancel) -> FewShotResult:
    """Same-scan propagation of each segment (as `segment --propagate`); overlaps go to the most probable."""
    from ..engine.propagate import propagate
    from ..engine.segment import combine_labels

    ids = request.segment_ids
    axis, k = int(request.axis), int(request.slice_index)
    r = tuple(request.query_range)
    slices = None
    if r[0] == "slices":
        slices = (int(r[1]), int(r[2]) + 1)
    elif r[0] == "box":
        slices = (int(r[1][axis]), int(r[2][axis]))
    probs: Dict[int, np.ndarray] = {}
    first, last = k, k
    for i, sid in enumerate(ids):
        mask = (np.asarray(request.support_masks[sid]) > 0).astype(np.uint8)
        res = propagate(base, request.support_image, mask, k, 1, axis, slices, box_segmenter=box,
                        progress=lambda f, msg, i=i, sid=sid: progress((i + f) / len(ids), f"{request.name(sid)}: {msg}"),
                        cancel=cancel)
        vol = res.probabilities[1]
        if r[0] == "box":  # nothing outside the box
            lo, hi = r[1], r[2]
            inside = np.zeros(vol.shape, bool)
            inside[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
            vol = vol * inside
        probs[i + 1] = vol
        first, last = min(first, res.slices[0]), max(last, res.slices[1] - 1)
    if cancel():
        raise CancelledError("propagation cancelled; nothing was written")
    labels = combine_labels(probs)
    masks = {sid: labels == i + 1 for i, sid in enumerate(ids)}
    info = {"adapted": False, "adaptation": {}, "axis": axis, "support_slice": k, "slices": (int(first), int(last)),
            "propagated": True, "box_network": box is not None, "adapt_seconds_each": 0.0,
            "voxels": {sid: int(m.sum()) for sid, m in masks.items()},
            "empty": [sid for sid, m in masks.items() if not m.any()], "model": base.manifest.get("name")}
    progress(1.0, "done")
    return FewShotResult(masks, info)


def propagation_request(image: "Image", mask: np.ndarray, slice_index: int, axis: int, name: str = "segment",
                        query_range: Range = ("auto",), device: str = "auto") -> FewShotRequest:
    """A validated propagation request from one slice of a mask (InteractiveRefine's "Propagate to 3D": its
    2D box result as the support): only slice `slice_index` of `mask` is read."""
    mask = np.asarray(mask, bool)
    if mask.shape != image.shape:
        raise ImageError(f"the mask {mask.shape} does not match the image {image.shape}")
    axis = _check_axis(axis)
    one = np.zeros(mask.shape, bool)
    idx = [slice(None)] * 3
    idx[axis] = int(slice_index)
    one[tuple(idx)] = mask[tuple(idx)]
    if not one.any():
        raise PromptError(f"nothing to propagate: the segment is empty on slice {int(slice_index)} "
                          f"(axis {AXIS_NAMES[axis]})")
    return FewShotRequest(image, {name: one}, int(slice_index), image, axis, query_range, device=device,
                          names={name: name}, propagate=True).validate()


def _segment(request: FewShotRequest, base, progress, cancel) -> FewShotResult:
    from ..engine.adapt import AdaptConfig, adapt_segmenter
    from ..engine.segment import combine_labels, make_supports

    ids = request.segment_ids
    n = len(ids)
    axis, k = int(request.axis), int(request.slice_index)
    budget = float(request.adapt_seconds) / n if request.adapt else 0.0
    probs: Dict[int, np.ndarray] = {}
    adaptation: Dict[str, Any] = {}
    slices = (0, request.query_image.shape[axis])
    for i, sid in enumerate(ids):
        if cancel():
            raise CancelledError("segmentation cancelled; nothing was written")
        name = request.name(sid)
        seg_share = 0.8 if request.adapt else 0.0

        def report(lo, hi, i=i, name=name):
            return lambda f, msg: progress((i + lo + (hi - lo) * float(f)) / n, f"{name}: {msg}")
        mask = (np.asarray(request.support_masks[sid]) > 0).astype(np.uint8)
        support = dataclasses.replace(make_supports(request.support_image, mask, k, [1], axis)[0], label=i + 1)
        net = base
        if request.adapt:
            net = adapt_segmenter(base, [support], request.query_image, axis,
                                  AdaptConfig(time_budget=budget), progress=report(0.0, seg_share), cancel=cancel)
            adaptation[sid] = dict(net.manifest.get("adapted", {}))
        res = net.segment([support], request.query_image, axis=axis, auto_range=True,
                          progress=report(seg_share, 1.0), cancel=cancel, **request.core_range())
        probs[i + 1] = res.probabilities[i + 1]
        slices = res.slices
    if cancel():
        raise CancelledError("segmentation cancelled; nothing was written")
    labels = combine_labels(probs)
    masks = {sid: labels == i + 1 for i, sid in enumerate(ids)}
    info = {"adapted": bool(request.adapt), "adaptation": adaptation, "axis": axis, "support_slice": k,
            "slices": (int(slices[0]), int(slices[1]) - 1), "adapt_seconds_each": round(budget, 2),
            "voxels": {sid: int(m.sum()) for sid, m in masks.items()},
            "empty": [sid for sid, m in masks.items() if not m.any()], "model": base.manifest.get("name")}
    progress(1.0, "done")
    return FewShotResult(masks, info)


# -- controller ----------------------------------------------------------------------------------------------
class FewShotController:
    """Runs few-shot segmentations in the persistent compute process; one per panel.

    Args:
        client: the compute process (compute.ComputeClient, shared by the panels in Slicer); by default a new
            one, which shutdown() stops.
        model: shipped model name or manifest path (the compute process loads it once per device and keeps it).
        segmenter_factory: `device -> FewShotSegmenter` (tests pass their own): the request loop then runs in a
            thread of this process with that factory (same messages and files).

    start() validates the request and sends it; while it runs every start() raises BusyError. poll() (GUI
    thread, never blocks) returns the job's progress and, once, the finished job with its FewShotResult.
    """

    def __init__(self, client=None, model: str = "default",
                 segmenter_factory: Optional[Callable[[str], Any]] = None):
        from InteractiveRefineLib.compute.client import ComputeClient

        self._own_client = client is None
        if client is None and segmenter_factory is not None:
            from InteractiveRefineLib.compute.service import ComputeService

            client = ComputeClient(service_factory=lambda: ComputeService(segmenter_factory=segmenter_factory),
                                   name="FewShotSeg")
        self.client = client or ComputeClient(name="FewShotSeg")
        self.model = model
        self._job = None
        self._shape = None
        self._delivered = True
        self._device: Dict[str, Any] = {}

    # -- state shown by the panel --------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.finished

    @property
    def current(self):
        return self._job

    @property
    def device_text(self) -> str:
        """The device the last run used, with a note when it is the CPU although a GPU was asked for or
        would have been used ('' before the first run)."""
        d = self._device
        if not d:
            return ""
        used, requested, fallback = d["used"], d["requested"], d.get("fallback")
        if fallback:
            return f"{used} (fell back to the CPU: {fallback})"
        if used == "cpu" and requested.startswith("cuda"):
            return f"{used} (fell back to the CPU: no CUDA GPU available)"
        if used == "cpu" and requested == "auto":
            return f"{used} (no CUDA GPU available)"
        return used

    # -- running -------------------------------------------------------------------------------------------
    def start(self, request: FewShotRequest) -> Job:
        """Validate and send `request`; BusyError while a run is going on."""
        if self.busy:
            raise BusyError(f"{self._job.name} is still running; wait for it or press Cancel")
        request.validate()
        fields, arrays = request_message(request, self.model)
        self._shape = request.query_image.shape
        self._job = self.client.submit("fewshot.run", fields, arrays, name="few-shot segmentation")
        self._delivered = False
        return self._job

    def cancel(self) -> bool:
        return self.busy and self.client.cancel(self._job)

    def poll(self) -> Optional[Status]:
        self.client.poll()
        job = self._job
        if job is None or (job.finished and self._delivered):
            return None
        if not job.finished:
            return Status(job)
        self._delivered = True
        if job.state != "done":
            return Status(job)
        result = result_from_message(*job.result, self._shape)
        info = result.info
        self._device = {"used": info.get("device"), "requested": info.get("requested_device", ""),
                        "fallback": info.get("fallback")}
        return Status(job, result)

    def wait(self, timeout: Optional[float] = None) -> Optional[Status]:
        """Poll until the current run ends and return its Status (scripts and self-tests)."""
        if self._job is not None:
            self.client.wait(self._job, timeout)
        return self.poll()

    def shutdown(self) -> None:
        """Cancel what runs; stop the compute process if this controller created it (panel cleanup)."""
        if self._own_client:
            self.client.stop()
        else:
            self.cancel()
