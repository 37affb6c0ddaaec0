"""Which support slice the FewShotSeg panel proposes, the hint when it is a poor one, and the anatomical
plane of each array axis (for the axis choice)."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from InteractiveRefineLib.core.errors import ImageError, PromptError
from InteractiveRefineLib.panel.ras_geometry import OBLIQUE_COS

from .request import AXIS_NAMES, _check_axis, _slice_areas


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


