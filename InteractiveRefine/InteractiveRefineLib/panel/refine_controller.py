"""What the InteractiveRefine panel does, without Slicer: one session in the compute process, one log.

The widget converts MRML nodes to arrays, calls these methods, and writes the `Update`s that poll() returns
back into segments. Every step (box, adopt, refine, undo, redo, reset) is a request to the persistent compute
process (compute.ComputeClient), which owns the InteractiveSession; poll() never blocks. Scribbles are checked
here and sent ahead of the next step (requests run in order). While a step runs, every other step raises
BusyError (re-entry is blocked). The session's interaction events come back with each reply and are written
to this process's log, so the study log survives a crash of the compute process.

If the compute process ends while a step runs (killed, out of memory, a CUDA error), the step fails with a
message saying so, nothing is written (the segment keeps what it held), and the session's history is gone:
the next box or "Refine this segment" opens a new session in a new process.
All of this is tested end to end (Testing/test_refine_controller.py, Testing/test_compute.py).
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from ..compute.client import ComputeClient, Request
from ..compute.mailbox import box_from_message, box_message, image_message, pack_mask, unpack_mask
from ..core.errors import PromptError
from ..core.image_io import Image
from ..core.log import InteractionLog
from ..core.prompts import Box
from ..core.study import live_times, log_file_name
from ..core.worker import BusyError, Job
from ..engine.scribbles import kept_in_box
from .mask_update import Extent, changed_extent


@dataclass
class Update:
    """What the panel writes into MRML after a step.

    mask: the object's full-grid result (bool, K, J, I); extent: where it differs from what was last
    written (None: nothing to write); scribbles: (fg, bg) full-grid masks for the helper segments when
    the step changed them (box, adopt, undo/redo/reset), else None.
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


def config_dict(config: Any) -> Optional[Dict[str, Any]]:
    """RefineConfig keyword arguments from a RefineConfig, a dict (settings.refine_config_kwargs) or None."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(config)


class RefineController:
    """One image, one object (the segment being refined), its history (in the compute process) and its log.

    Args:
        image: the volume as a core Image.
        config: refinement settings (a RefineConfig, or a dict of its fields; None: the defaults).
        device: 'auto', 'cuda' or 'cpu'.
        log_folder: write the session log there as `<participant>_<case>_<time>.jsonl` (None: the log
            is kept in memory only, for the panel's live timing).
        participant, case: user-study ids written into the log's first event.
        reference: a reference mask (K, J, I) for Dice in the log (user studies), or None.
        client: the compute process (one per Slicer session, shared by the panels); a new one by default.
    """

    def __init__(self, image: Image, config: Any = None, device: str = "auto", log_folder=None,
                 participant: str = "", case: str = "", reference: Optional[np.ndarray] = None,
                 client: Optional[ComputeClient] = None):
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
        self.image = image
        self.config = config
        self.requested_device = device
        self.reference = None if reference is None else np.asarray(reference, bool)
        self.client = client or ComputeClient()
        self.session_id = uuid.uuid4().hex
        self.object_id = "object"
        self._generation: Optional[int] = None  # the client generation the session was opened in
        self._state: Dict[str, Any] = {}  # the session's state as of the last reply
        self._scribbles = (np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64))
        self._written: Optional[np.ndarray] = None  # what the segment holds, as far as this session knows
        self._outside: Optional[np.ndarray] = None  # the segment's voxels outside the object's box: kept
        self._job: Optional[Request] = None  # the step the panel waits for
        self._quick: list = []  # scribble updates sent ahead of the next step
        self._delivered = True
        self._lost_note = ""  # set when the compute process ended and took the session's history with it

    # -- state shown by the panel --------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self._job is not None and not self._job.finished

    @property
    def current(self) -> Optional[Request]:
        return self._job

    @property
    def has_object(self) -> bool:
        return bool(self._state.get("has_object")) and self._generation == self.client.generation

    @property
    def box(self) -> Optional[Box]:
        return box_from_message(self._state.get("box")) if self.has_object else None

    @property
    def has_scribbles(self) -> bool:
        return self.has_object and sum(self._state.get("scribbles", [0, 0])) > 0

    @property
    def device_text(self) -> str:
        """The device in use, with a note when it is not the one asked for (fallback to the CPU)."""
        used = self._state.get("device")
        if used is None:
            return ""
        fell_back = any(e.get("event") == "device_fallback" for e in self.log.events)
        if fell_back or (self.requested_device.startswith("cuda") and used == "cpu"):
            return f"{used} (fell back to the CPU: " + ("out of GPU memory)" if fell_back else "no CUDA GPU)")
        return used

    def can_undo(self) -> bool:
        return not self.busy and self.has_object and bool(self._state.get("can_undo"))

    def can_redo(self) -> bool:
        return not self.busy and self.has_object and bool(self._state.get("can_redo"))

    def times(self) -> dict:
        """Live {user_seconds, compute_seconds, interactions} for the panel."""
        job = self._job
        running = job.started if job is not None and not job.finished and job.started else None
        return live_times(self.log.events, time.monotonic(), running)

    # -- steps -----------------------------------------------------------------------------------
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
        return self._submit("refine.box", "segment", {"box": box_message(box)}, {}, "box", cancellable=False)

    def start_adopt(self, current: np.ndarray, box: Optional[Box] = None) -> Job:
        """Take the segment's current content (K, J, I) as the starting result (session.adopt): scribbles
        then correct it. Nothing is rewritten until a step changes it."""
        self._idle()
        current = self._check_mask(current)
        self._written, self._outside = current, None
        if box is not None:  # the default box holds all of `current`
            self._outside = current & ~box.mask(current.shape)
        lo, crop = pack_mask(current)
        return self._submit("refine.adopt", "adopt", {"box": box_message(box), "current_lo": lo},
                            {"current": crop}, "adopt", cancellable=False)

    def start_refine(self, mode: str = "supervised", time_budget: Optional[float] = None) -> Job:
        """Fine-tune + CRF ('supervised' with the scribbles; 'unsupervised' without)."""
        self._idle()
        self._check_object("refine needs a segmentation first: place a box and press Segment")
        return self._submit("refine.refine", f"refine ({mode})", {"mode": mode, "time_budget": time_budget}, {},
                            f"refine_{mode}")

    def undo(self) -> Job:
        return self._history("undo")

    def redo(self) -> Job:
        return self._history("redo")

    def reset(self) -> Job:
        self._check_object("nothing to reset: place a box and press Segment first")
        return self._history("reset")

    def _history(self, action: str) -> Job:
        self._idle()
        self._check_object(f"nothing to {action}: place a box and press Segment first")
        return self._submit(f"refine.{action}", action, {}, {}, action, cancellable=False)

    def set_scribbles(self, fg_mask: np.ndarray, bg_mask: np.ndarray) -> Tuple[int, str]:
        """Take the helper segments' content as the scribbles (sent ahead of the next step). Voxels outside
        the box (or off the slice of a 2D box) and voxels marked both fg and bg are ignored; returns
        (ignored voxels, message). `scribbles_changed` tells whether they differ from the session's."""
        self._idle()
        self._check_object("scribbles need a segmentation first: place a box and press Segment")
        box = self.box
        fg, bg = (np.asarray(m, bool) for m in (fg_mask, bg_mask))
        if fg.shape != self.image.shape or bg.shape != self.image.shape:
            raise PromptError(f"scribble masks of shape {fg.shape}/{bg.shape} do not match the image "
                              f"{self.image.shape}")
        kept_fg, kept_bg = kept_in_box(fg, bg, box)
        ignored = int((fg | bg).sum() - kept_fg.sum() - kept_bg.sum())
        new = (np.argwhere(kept_fg).astype(np.int64), np.argwhere(kept_bg).astype(np.int64))
        self.scribbles_changed = any(not _same_voxels(a, b) for a, b in zip(new, self._scribbles))
        if self.scribbles_changed:
            self._scribbles = new
            self._state["scribbles"] = [len(new[0]), len(new[1])]
            self._state["can_undo"] = True
            self._quick.append(self.client.submit("refine.scribbles", self._args({}), {"fg": new[0], "bg": new[1]},
                                                  name="scribbles", cancellable=False))
        message = ""
        if ignored:
            where = "the box" if box.axis is None else f"slice {box.slice_index} of the 2D box"
            message = f"{ignored} scribbled voxel(s) outside {where} or marked both fg and bg were ignored"
        return ignored, message

    scribbles_changed = False

    def cancel(self) -> bool:
        return self.busy and self.client.cancel(self._job)

    def poll(self) -> Optional[Status]:
        """Progress of the current step; once it ended, its Update (if it succeeded). Never blocks."""
        self.client.poll()
        for job in [j for j in self._quick if j.finished]:
            self._quick.remove(job)
            if job.result is not None:
                self._take_state(job.result[0])
            if job.state != "done" and (self._job is None or self._job.finished):  # else nothing would report it
                self._job, self._delivered = job, False
        job = self._job
        if job is None or (job.finished and self._delivered):
            return None
        status = Status(job)
        if job.finished:
            self._delivered = True
            if job.state == "done":
                status.update = self._finish(job)
            elif job.result is not None:  # a failed or cancelled step's log events (e.g. 'cancelled')
                self._take_state(job.result[0])
            if job.state != "done" and (self.client.generation != self._generation or not self.client.running):
                self._lost()  # the compute process ended: its sessions are gone
        return status

    def wait(self, timeout: Optional[float] = None) -> Optional[Status]:
        """Poll until the current step (and scribbles sent ahead) ended; its Status (scripts and self-tests)."""
        end = None if timeout is None else time.monotonic() + timeout
        while self.busy or any(not j.finished for j in self._quick):
            if end is not None and time.monotonic() > end:
                raise TimeoutError("the step did not finish in time")
            time.sleep(0.01)
            self.client.poll()
        return self.poll()

    def accept(self) -> None:
        """End the session: log it, close the log and the session in the compute process."""
        self._idle()
        self.log.write("accept", object=self.object_id)
        self.close()

    def close(self) -> None:
        if self._generation == self.client.generation and self.client.running:
            self.client.submit("refine.close", {"session": self.session_id}, name="close", cancellable=False)
        self._generation = None
        self._state = {}
        self.log.close()

    def rebase(self, update: Update, current: np.ndarray) -> Update:
        """`update` against what the segment holds now (`current`, K, J, I, read back just before the write),
        so a hand edit of the segment made since the last write (another module's Segment Editor, a failed
        write) leaves nothing stale: inside the object's box the session's result replaces the segment; outside
        it the segment's own content is kept (and stays kept through later steps); the extent covers every
        voxel that differs from `current`."""
        current = self._check_mask(current)
        mask = np.asarray(update.mask, bool)
        box = self.box
        if box is not None:
            inside = box.mask(current.shape)
            self._outside = current & ~inside
            mask = np.where(inside, mask, current)
        self._written = mask.copy()
        return dataclasses.replace(update, mask=mask, extent=changed_extent(current, mask))

    def mark_written(self, mask: Optional[np.ndarray]) -> None:
        """Tell the controller what the segment really holds (after a failed write, or after the user edited
        the segment by hand), so later extents are computed against it and nothing stale is left."""
        self._written = None if mask is None else np.asarray(mask, bool).copy()

    # -- internals -------------------------------------------------------------------------------
    def _idle(self) -> None:
        if self.busy:
            raise BusyError(f"{self._job.name} is still running; wait for it or press Cancel")

    def _args(self, args: Dict[str, Any]) -> Dict[str, Any]:
        return {"session": self.session_id, "object": self.object_id, "config": config_dict(self.config), **args}

    def _ensure_open(self) -> None:
        """Open the session in the compute process (again, after a restart)."""
        if self._generation == self.client.generation and self.client.running:
            return
        geometry, array = image_message(self.image)
        arrays = {"image": array}
        if self.reference is not None:
            arrays["reference"] = self.reference
        self._quick.append(self.client.submit("refine.open", self._args({"image": geometry,
                                                                         "device": self.requested_device}),
                                              arrays, name="open", cancellable=False))
        self._generation = self.client.generation
        self._lost_note = ""
        self._state = {}
        self._scribbles = (np.zeros((0, 3), np.int64), np.zeros((0, 3), np.int64))

    def _submit(self, op: str, name: str, args, arrays, action: str, cancellable: bool = True) -> Job:
        if op in ("refine.box", "refine.adopt"):
            self._ensure_open()
        elif self._generation != self.client.generation or not self.client.running:
            self._lost()
            self._check_object("")
        job = self.client.submit(op, self._args(args), arrays, name=name, cancellable=cancellable)
        job.action = action
        self._job, self._delivered = job, False
        return job

    def _lost(self) -> None:
        if self._generation is not None:
            self._lost_note = ("the compute process was restarted and this session's history is gone: place the "
                               "box and press Segment (or Refine this segment) again")
        self._state = {}
        self._generation = None

    def _check_object(self, message: str) -> None:
        if not self.has_object:
            raise PromptError(self._lost_note or message)

    def _take_state(self, fields: Mapping[str, Any]) -> None:
        if "state" in fields:
            self._state = dict(fields["state"])
        for event in fields.get("events", []):
            self.log.append(event)

    def _finish(self, job: Request) -> Update:
        fields, arrays = job.result
        self._take_state(fields)
        mask = unpack_mask(self.image.shape, fields["mask_lo"], arrays["mask"])
        scribbles = None
        if "fg" in arrays:
            self._scribbles = (arrays["fg"].astype(np.int64), arrays["bg"].astype(np.int64))
            scribbles = tuple(_voxel_mask(v, self.image.shape) for v in self._scribbles)
        if self._outside is not None:
            mask = mask | self._outside
        extent = changed_extent(self._written, mask)
        self._written = mask.copy()
        return Update(job.action, mask, extent, scribbles, self._state.get("dice"))

    def _check_mask(self, mask: np.ndarray) -> np.ndarray:
        mask = np.asarray(mask, bool)
        if mask.shape != self.image.shape:
            raise PromptError(f"the segment's mask {mask.shape} does not match the image {self.image.shape}")
        return mask


def _voxel_mask(voxels: np.ndarray, shape) -> np.ndarray:
    mask = np.zeros(tuple(shape), bool)
    if len(voxels):
        mask[tuple(np.asarray(voxels).T)] = True
    return mask


def _same_voxels(a: np.ndarray, b: np.ndarray) -> bool:
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    return np.array_equal(np.unique(a, axis=0), np.unique(b, axis=0))
