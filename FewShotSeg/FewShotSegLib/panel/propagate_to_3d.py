"""InteractiveRefine's "Propagate to 3D": its 2D box result becomes the support of FewShotSeg's same-scan
propagation, and the 3D result becomes the InteractiveRefine session's next step. Slicer-free; the
InteractiveRefine panel (InteractiveRefineSlicer/logic.py) only reads the segment and writes the update.

1. `start(current)`: the session's result on its 2D box's slice (what the segment holds there) is sent as a
   FewShotSeg propagation request (`panel.propagation_request`, with the box network, as
   `segment --propagate`) to the compute process the session lives in.
2. `poll()`: when the propagation is done, its 3D mask is adopted by the session (`RefineController.
   start_adopt`): one step, delivered by the controller's poll as an Update like any other, so the panel
   writes it into the same segment, and scribbles then correct it in 3D.
3. Adopting starts the session's history anew, so the undo back to the 2D result is kept here: right after
   the propagation (and after undoing every later step), `undo()` adopts the 2D result again with its 2D box,
   and `rebase` (used by the panel in place of the controller's) then also removes what the propagation
   added outside that box, which the controller's rebase would keep as the user's own content.

Headless equivalent: `python -m InteractiveRefineLib segment ... --box ...` (a 2D box) writes the 2D result;
`python -m FewShotSegLib segment --propagate --support-image IMG --support-label 2D_RESULT --slice K
--label 1 --out OUT` propagates it (docs/fewshot.md).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Tuple

import numpy as np

from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.panel.mask_update import changed_extent

from .controller import FewShotController, Range, propagation_request

SEGMENT = "object"
JOB_NAME = "propagate to 3D"
UNDO_ACTION = "undo_propagation"  # the Update.action of undo()'s step


class PropagateTo3D:
    """The hand-off for one RefineController (same compute process, same image)."""

    def __init__(self, controller, model: str = "default"):
        self.controller = controller
        self.fewshot = FewShotController(client=controller.client, model=model)
        self._pending: Optional[Tuple[np.ndarray, Any]] = None  # (segment before, 2D box) while propagating
        self._before: Optional[Tuple[np.ndarray, Any]] = None   # what undo() restores
        self._restoring: Optional[np.ndarray] = None  # the segment before the propagation, while undo() runs

    @property
    def busy(self) -> bool:
        return self._pending is not None

    @property
    def current(self):
        return self.fewshot.current if self.busy else None

    def start(self, current: np.ndarray, device: str = "auto", query_range: Range = ("auto",)):
        """Propagate the session's 2D result; `current` (K, J, I): what the segment holds now."""
        c = self.controller
        if c.busy or self.busy:
            raise PromptError("a step is still running; wait for it or press Cancel")
        box = c.box
        if box is None:
            raise PromptError("nothing to propagate yet: place a 2D box and press Segment")
        if box.axis is None:
            raise PromptError("Propagate to 3D starts from a 2D box result; this result is already 3D")
        current = np.asarray(current, bool)
        if current.shape != tuple(c.image.shape):
            raise PromptError(f"the segment's mask {current.shape} does not match the image {c.image.shape}")
        inside = np.zeros_like(current)
        inside[tuple(slice(int(lo), int(hi)) for lo, hi in zip(box.lo, box.hi))] = True
        request = propagation_request(c.image, current & inside, box.slice_index, box.axis, SEGMENT, query_range,
                                      device)
        job = self.fewshot.start(request)
        job.name = JOB_NAME
        self._pending = (current.copy(), box)
        return job

    def poll(self):
        """None when no propagation runs; else a refine_controller.Status: the propagation's progress, its
        failure or cancellation (nothing changed), or, once it is done, the adopt step it started (its
        Update comes from the controller's own poll)."""
        from InteractiveRefineLib.panel.refine_controller import Status

        if self._pending is None:
            return None
        status = self.fewshot.poll()
        if status is None:
            self._pending = None
            return None
        if not status.job.finished:
            return Status(status.job)
        before, self._pending = self._pending, None
        if status.job.state != "done":
            return Status(status.job)
        job = self.controller.start_adopt(status.result.masks[SEGMENT])
        job.name = JOB_NAME
        self._before = before
        return self.controller.poll()

    def cancel(self) -> bool:
        return self.busy and self.fewshot.cancel()

    def can_undo(self) -> bool:
        """Undo goes back to the 2D result: right after the propagation, or once its later steps are undone."""
        c = self.controller
        return self._before is not None and not c.busy and not self.busy and c.has_object and not c.can_undo()

    def undo(self):
        if not self.can_undo():
            raise PromptError("nothing to undo")
        mask, box = self._before
        self._before = None
        job = self.controller.start_adopt(mask, box)
        job.name, job.action = "undo propagate to 3D", UNDO_ACTION
        self._restoring = mask
        return job

    def rebase(self, update, current: np.ndarray):
        """RefineController.rebase, except for undo()'s step: the segment gets back what it held before the
        propagation (its voxels outside the 2D box included), the extent covering every voxel that differs
        from `current`."""
        if update.action != UNDO_ACTION or self._restoring is None:
            return self.controller.rebase(update, current)
        before, self._restoring = self._restoring, None
        out = self.controller.rebase(update, before)
        return dataclasses.replace(out, extent=changed_extent(np.asarray(current, bool), out.mask))

    def forget(self) -> None:
        """A new box or adopted segment: the 2D result is no longer this object's previous state."""
        self._before = self._restoring = None
