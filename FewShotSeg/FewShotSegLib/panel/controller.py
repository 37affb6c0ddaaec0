"""What the FewShotSeg panel does, without Slicer: the controller that runs a request in the compute process
and the text and segment names of its result. The rest of the panel's logic lives beside it:

- request.py: the request and result as plain data, the query ranges, and every check of a request;
- support_slice.py: the support slice the panel proposes (and the hint when it is a poor one);
- messages.py: the request and result as compute-process messages;
- run.py: running a request in the compute process (segmentation, adaptation, same-scan propagation).

The widget reads MRML nodes into plain arrays (slicer_bridge), builds a `FewShotRequest` on the GUI thread,
hands it to `FewShotController.start`, polls the controller from a timer, and writes the finished
`FewShotResult` back into segments on the GUI thread. Nothing here touches MRML or Qt, and torch is only
imported when a segmentation starts, so the Slicer module loads before its dependencies are installed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from InteractiveRefineLib.core.worker import BusyError, Job
from InteractiveRefineLib.panel.segment_names import output_segment_names

from .messages import request_from_message, request_message, result_from_message
from .request import (
    AXIS_NAMES,
    DEFAULT_ADAPT_SECONDS,
    DEVICES,
    RANGE_MODES,
    FewShotRequest,
    FewShotResult,
    Range,
    auto_range,
    propagation_request,
    roi_range,
    slice_range,
)
from .run import run_request
from .support_slice import axis_plane_names, default_support_slice, resolve_support_slice, support_slice_note

# Imported from here by the Slicer module (FewShotSeg.py, FewShotSegSlicer), the compute service, propagate_to_3d,
# gpu_check, the benchmarks and the tests.
__all__ = ["AXIS_NAMES", "DEFAULT_ADAPT_SECONDS", "DEVICES", "RANGE_MODES", "FewShotController", "FewShotRequest",
           "FewShotResult", "Range", "Status", "auto_range", "axis_plane_names", "default_support_slice",
           "propagation_request", "request_from_message", "request_message", "resolve_support_slice",
           "result_from_message", "result_message", "result_segment_names", "roi_range", "run_request",
           "slice_range", "support_slice_note"]


# -- results -------------------------------------------------------------------------------------------------
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
    cut = sorted(sid for sid, a in (info.get("adaptation") or {}).items() if a.get("cut_by_time_cap"))
    if cut:  # the cap stopped the fixed steps early: say so, the result may be less adapted than usual
        how += f" (cut short by the time cap: {', '.join(names.get(sid, sid) for sid in cut)})"
    return (f"{'; '.join(parts)} (slices {first}-{last} along {AXIS_NAMES[info.get('axis', 0)]}, {how}, "
            f"{info.get('seconds', 0.0):.1f} s on {info.get('device', '?')})"
            + "".join(f" Warning: {w}." for w in info.get("warnings") or []))


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
