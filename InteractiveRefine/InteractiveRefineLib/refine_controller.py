"""What the InteractiveRefine panel does, without Slicer: one session, one worker, one log.

The widget converts MRML nodes to arrays, calls these methods, and writes the `Update`s they return
back into segments. Long steps (box, refine) run on the persistent Worker; quick ones (scribbles,
undo, redo, reset) run at once. While a step runs, every other call raises BusyError (re-entry is
blocked). All of this is tested with real threads and the shipped models (Testing/test_refine_controller).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np

from .errors import PromptError
from .finetune import RefineConfig
from .image_io import Image
from .log import InteractionLog
from .mask_update import Extent, changed_extent
from .prompts import Box
from .session import InteractiveSession
from .study import live_times, log_file_name
from .worker import Job, Worker


@dataclass
class Update:
    """What the panel writes into MRML after a step.

    mask: the object's full-grid result (bool, K, J, I); extent: where it differs from what was last
    written (None: nothing to write); scribbles: (fg, bg) full-grid masks for the helper segments when
    the step changed them (undo/redo/reset), else None.
    """

    action: str
    mask: Optional[np.ndarray] = None
    extent: Optional[Extent] = None
    scribbles: Optional[Tuple[np.ndarray, np.ndarray]] = None
    dice: Optional[float] = None
    message: str = ""


@dataclass
class Status:
    """A poll result: the running or just-finished job, and the update once it finished well."""

    job: Job
    update: Optional[Update] = None


class RefineController:
    """One image, one object (the segment being refined), its history and its interaction log.

    Args:
        image: the volume as a core Image.
        config: refinement settings (the panel's Advanced section).
        device: 'auto', 'cuda' or 'cpu'.
        log_folder: write the session log there as `<participant>_<case>_<time>.jsonl` (None: the log
            is kept in memory only, for the panel's live timing).
        participant, case: user-study ids written into the log's first event.
        reference: a reference mask (K, J, I) for Dice in the log (user studies), or None.
        worker: the persistent Worker (one per panel); a new one by default.
        session_factory: builds the InteractiveSession (tests pass their own segmenter through it).
    """

    def __init__(self, image: Image, config: Optional[RefineConfig] = None, device: str = "auto",
                 log_folder=None, participant: str = "", case: str = "", reference: Optional[np.ndarray] = None,
                 worker: Optional[Worker] = None,
                 session_factory: Callable[..., InteractiveSession] = InteractiveSession):
        path = None
        if log_folder is not None:  # one file per session, never appended to another session's
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = Path(log_folder) / log_file_name(participant, case, stamp)
            n = 2
            while path.exists():
                path = Path(log_folder) / log_file_name(participant, case, f"{stamp}-{n}")
                n += 1
        self.log = InteractionLog(path)
        self.log.write("study", participant=participant, case=case)
        self.session = session_factory(image, config=config, device=device, log=self.log)
        self.requested_device = device
        self.reference = None if reference is None else np.asarray(reference, bool)
        self.worker = worker or Worker()
        self._written: Optional[np.ndarray] = None  # what the segment holds, as far as this session knows
        self._outside: Optional[np.ndarray] = None  # the segment's voxels outside the object's box: kept
        self._pending: Optional[Callable[[object], Update]] = None
        self.object_id = "object"

    # -- state shown by the panel --------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.worker.busy

    @property
    def has_object(self) -> bool:
        return self.object_id in self.session.objects

    @property
    def device_text(self) -> str:
        """The device in use, with a note when it is not the one asked for (fallback to the CPU)."""
        used = str(self.session.device)
        fell_back = any(e.get("event") == "device_fallback" for e in self.log.events)
        if fell_back or (self.requested_device.startswith("cuda") and self.session.device.type == "cpu"):
            return f"{used} (fell back to the CPU: " + ("out of GPU memory)" if fell_back else "no CUDA GPU)")
        return used

    def can_undo(self) -> bool:
        return not self.busy and self.session.can_undo(self.object_id)

    def can_redo(self) -> bool:
        return not self.busy and self.session.can_redo(self.object_id)

    def times(self) -> dict:
        """Live {user_seconds, compute_seconds, interactions} for the panel."""
        job = self.worker.current
        running = job.started if job is not None and not job.finished else None
        return live_times(self.log.events, time.monotonic(), running)

    # -- long steps (worker) -------------------------------------------------------------------
    def start_box(self, box: Box, current: Optional[np.ndarray] = None) -> Job:
        """Segment the object in `box` (a new object: history and scribbles restart).

        current: what the segment holds now (K, J, I), if anything. The result replaces it inside the box;
        voxels outside the box are kept, through this object's later steps too (e.g. a FewShotSeg result
        on other slices, or an earlier box's result). Without it, the result replaces this session's
        earlier result.
        """
        self._idle()
        if current is not None:
            current = self._check_mask(current)
            self._written, self._outside = current, current & ~box.mask(current.shape)
        else:
            self._outside = None
        return self._submit("segment", lambda progress, cancel: self.session.set_box(
            box, self.object_id, reference=self.reference), lambda mask: self._update("box", mask, scribbles=True),
            cancellable=False)

    def start_adopt(self, current: np.ndarray, box: Optional[Box] = None) -> Job:
        """Take the segment's current content (K, J, I) as the starting result (session.adopt): scribbles
        then correct it. Nothing is rewritten until a step changes it."""
        self._idle()
        current = self._check_mask(current)
        self._written, self._outside = current, None
        if box is not None:  # the default box holds all of `current`
            self._outside = current & ~box.mask(current.shape)
        return self._submit("adopt", lambda progress, cancel: self.session.adopt(
            current, box, self.object_id, reference=self.reference),
            lambda mask: self._update("adopt", mask, scribbles=True), cancellable=False)

    def start_refine(self, mode: str = "supervised", time_budget: Optional[float] = None) -> Job:
        """Fine-tune + CRF ('supervised' with the scribbles; 'unsupervised' without)."""
        self._idle()
        if not self.has_object:
            raise PromptError("refine needs a segmentation first: place a box and press Segment")
        return self._submit(f"refine ({mode})", lambda progress, cancel: self.session.refine(
            mode, self.object_id, progress=progress, cancel=cancel, time_budget=time_budget),
            lambda mask: self._update(f"refine_{mode}", mask))

    def cancel(self) -> bool:
        return self.worker.cancel()

    def poll(self) -> Optional[Status]:
        """Progress of the current job; once it ended, its Update (if it succeeded). GUI thread only."""
        job = self.worker.poll()
        if job is None:
            return None
        status = Status(job)
        if job.finished and self._pending is not None:
            finish, self._pending = self._pending, None
            if job.state == "done":
                status.update = finish(job.result)
        return status

    def wait(self, timeout: Optional[float] = None) -> Optional[Status]:
        """Block until the current job ends and return its Status (scripts and self-tests)."""
        self.worker.wait(timeout)
        return self.poll()

    # -- quick steps (GUI thread) ----------------------------------------------------------------
    def set_scribbles(self, fg_mask: np.ndarray, bg_mask: np.ndarray) -> Tuple[int, str]:
        """Take the helper segments' content as the scribbles. Voxels outside the box (or off the slice
        of a 2D box) and voxels marked both fg and bg are ignored; returns (ignored voxels, message)."""
        self._idle()
        if not self.has_object:
            raise PromptError("scribbles need a segmentation first: place a box and press Segment")
        box = self.session.state(self.object_id).box
        fg, bg = (np.asarray(m, bool) for m in (fg_mask, bg_mask))
        if fg.shape != self.session.image.shape or bg.shape != self.session.image.shape:
            raise PromptError(f"scribble masks of shape {fg.shape}/{bg.shape} do not match the image "
                              f"{self.session.image.shape}")
        inside = box.mask(fg.shape)
        both = fg & bg
        kept_fg, kept_bg = fg & inside & ~both, bg & inside & ~both
        ignored = int((fg | bg).sum() - kept_fg.sum() - kept_bg.sum())
        self.session.set_scribbles(np.argwhere(kept_fg), np.argwhere(kept_bg), self.object_id)
        message = ""
        if ignored:
            where = "the box" if box.axis is None else f"slice {box.slice_index} of the 2D box"
            message = f"{ignored} scribbled voxel(s) outside {where} or marked both fg and bg were ignored"
        return ignored, message

    def undo(self) -> Update:
        self._idle()
        return self._update("undo", self.session.undo(self.object_id), scribbles=True)

    def redo(self) -> Update:
        self._idle()
        return self._update("redo", self.session.redo(self.object_id), scribbles=True)

    def reset(self) -> Update:
        self._idle()
        if not self.has_object:
            raise PromptError("nothing to reset: place a box and press Segment first")
        return self._update("reset", self.session.reset(self.object_id), scribbles=True)

    def accept(self) -> None:
        """End the session: log it and close the log (the result stays in the segment)."""
        self._idle()
        self.log.write("accept", object=self.object_id)
        self.close()

    def close(self) -> None:
        self.session.close()

    def mark_written(self, mask: Optional[np.ndarray]) -> None:
        """Tell the controller what the segment really holds (e.g. after a failed write), so later extents
        are computed against it."""
        self._written = None if mask is None else np.asarray(mask, bool).copy()

    # -- internals -------------------------------------------------------------------------------
    def _idle(self) -> None:
        self.worker.ensure_idle()

    def _submit(self, name: str, fn, finish: Callable[[object], Update], cancellable: bool = True) -> Job:
        job = self.worker.submit(name, fn, cancellable)
        self._pending = finish
        return job

    def _check_mask(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, bool)
        if mask.shape != self.session.image.shape:
            raise PromptError(f"the segment's mask {mask.shape} does not match the image {self.session.image.shape}")
        return mask

    def _update(self, action: str, mask: np.ndarray, scribbles: bool = False) -> Update:
        mask = np.asarray(mask, bool)
        if self._outside is not None:
            mask = mask | self._outside
        extent = changed_extent(self._written, mask)
        self._written = mask.copy()
        scr = self.session.state(self.object_id).scribbles.masks(mask.shape) if scribbles else None
        return Update(action, mask, extent, scr, self.session.dice(self.object_id))
