"""The FewShotSeg panel's request and result as plain data: the query range, the request with every check
it needs before a run (`FewShotRequest.validate`), and `propagation_request` (InteractiveRefine's "Propagate
to 3D" hand-off). Nothing here touches MRML, Qt or torch."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from InteractiveRefineLib.core.errors import ImageError, PromptError
from InteractiveRefineLib.panel.ras_geometry import roi_to_box

if TYPE_CHECKING:  # image_io imports SimpleITK: only when a request is checked, not when Slicer loads the module
    from InteractiveRefineLib.core.image_io import Image

#: Default exemplar-adaptation budget in seconds; equals adapt.GUI_TIME_CAP (adapt.py imports torch, this
#: module does not). FewShotSeg.py states these constants again for its parameter node; tests check all agree.
DEFAULT_ADAPT_SECONDS = 60.0
DEVICES = ("auto", "cuda", "cpu")
#: The panel's range modes; a request's range is ("auto",), ("slices", first, last) or ("box", lo, hi).
RANGE_MODES = ("auto", "roi", "slices")
AXIS_NAMES = ("K", "J", "I")

Range = Tuple[Any, ...]


def _slice_areas(mask: np.ndarray, axis: int) -> np.ndarray:
    other = tuple(a for a in range(3) if a != axis)
    return np.asarray(mask, bool).sum(axis=other)


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


# -- query range ---------------------------------------------------------------------------------------------
def auto_range() -> Range:
    """Every query slice; per segment the 3D part consistent with the support position is kept (for a segment
    drawn on one slice, on a window of the organ's estimated slices, as `segment --range auto`)."""
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
@dataclass
class FewShotRequest:
    """Everything one few-shot run needs, as plain data (built on the GUI thread, read by the worker).

    support_masks: {segment id: mask (K, J, I) on the support grid}, in the order of the output segments.
    slice_index: the support slice along `axis` (array axis 0 = K, 1 = J, 2 = I); the query is segmented
    slice by slice along the same array axis. query_range: ("auto",), ("slices", first, last) inclusive,
    or ("box", lo, hi) in query voxels (K, J, I), hi exclusive. adapt_seconds: the exemplar-adaptation
    budget for the whole run (split equally between segments). names: {segment id: name} for messages.
    The support and the query may be the same volume. propagate: same-scan propagation (the query must be the
    support volume; no adaptation); use_box_network: its 2D box network redoes each propagated slice, and its
    3D box step finally the propagated organ's box (propagate.box3d_pass).
    follow: "Follow through the query": each segment's few-shot result is then followed through the query by
    same-scan propagation from its middle slice (engine/follow.py; not with `propagate`).
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
    follow: bool = False

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
            if self.follow:
                raise PromptError("'Follow through the query' follows a few-shot result through another scan; "
                                  "'Propagate through this scan' already follows the support slice: turn one off")
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
        rng, k = self.range_slices(), int(self.slice_index)
        if rng is not None and not rng[0] <= k < rng[1]:  # before any network is loaded or tuned
            raise PromptError(f"'Propagate through this scan' starts on support slice {k}, which lies outside the "
                              f"range {rng[0]}..{rng[1] - 1}: widen the range or pick a slice inside it")

    def range_slices(self) -> Optional[Tuple[int, int]]:
        """(first, last + 1) along the axis: the given slices or the ROI's (what segmentation, propagation and
        follow run through); None: Auto."""
        r, axis = tuple(self.query_range), int(self.axis)
        if r[0] == "slices":
            return int(r[1]), int(r[2]) + 1
        if r[0] == "box":
            return int(r[1][axis]), int(r[2][axis])
        return None

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
            return {"slices": self.range_slices()}
        if r[0] == "box":
            return {"box": (tuple(int(v) for v in r[1]), tuple(int(v) for v in r[2]))}
        return {}


# -- result --------------------------------------------------------------------------------------------------
@dataclass
class FewShotResult:
    """masks: {support segment id: bool (K, J, I) on the query grid}, in request order (disjoint).
    info: device (used), requested_device, fallback (None or the reason of a CPU fallback), seconds,
    adapted, adaptation (per segment id: steps, pseudo_steps, seconds), axis, support_slice,
    slices (first, last) inclusive along the axis, voxels and empty (segment ids with nothing found), model;
    propagated after same-scan propagation, followed after "Follow through the query", and box_network."""

    masks: Dict[str, np.ndarray]
    info: Dict[str, Any]


# -- InteractiveRefine's "Propagate to 3D" ----------------------------------------------------------------
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
