"""`panel-timing`: how the Slicer panel's background work feels, measured without Slicer.

Runs the panel's controller (RefineController, its steps in the persistent compute process) through
box -> robot scribble -> refine rounds on the embedded MR patient, while the calling thread plays Slicer's
main thread: between two polls it idles for `tick` seconds, then polls, as the panel's QTimer does.

Two GUI loops are emulated:
- 'gil': the idle time is spent in a C call that keeps Python's GIL (ctypes.PyDLL usleep / Sleep), as in
  Slicer, whose Qt event loop never releases the GIL (PythonQt): a Python *thread* would then only run while
  the main thread runs Python. This is the loop that matters.
- 'sleep': the idle time is time.sleep, which releases the GIL (the free-running reference).
Per step it records the compute time (measured in the compute process) and the longest main-thread stall
(the longest time one start or poll call kept the main thread, i.e. how long the GUI froze). With both
loops the summary gives, per step, the compute speed under the GIL-holding loop relative to free-running.
Writes results.jsonl and summary.md.
"""
from __future__ import annotations

import ctypes
import json
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..compute.client import ComputeClient
from ..core.atomic import write_text
from ..core.data import DecathlonDataset
from ..core.prompts import box_from_mask, main_object
from ..core.sample import sample_dataset
from ..panel.refine_controller import RefineController
from .robot import next_scribble

CASE, LABELS = "chaos_8", {2: "right kidney", 3: "left kidney"}
GUI_LOOPS = ("sleep", "gil")


def hold_gil(seconds: float) -> None:
    """Block the calling thread for `seconds` inside a C call that keeps the GIL (PyDLL does not release it),
    like Slicer's Qt event loop between two Python callbacks."""
    if os.name == "nt":
        ctypes.PyDLL("kernel32").Sleep(int(seconds * 1000))
    else:
        ctypes.PyDLL(None).usleep(int(seconds * 1e6))


def gui_idle(loop: str, seconds: float) -> None:
    if loop == "gil":
        hold_gil(seconds)
    elif loop == "sleep":
        time.sleep(seconds)
    else:
        raise ValueError(f"unknown GUI loop {loop!r}; use one of {GUI_LOOPS}")


def drive(poll, start, tick: float, loop: str, timeout: float = 3600.0) -> Dict[str, float]:
    """Start a step and poll it as the GUI would until it ends: {status, max_stall, ticks, wall}."""
    t0 = time.perf_counter()
    start()
    stall = time.perf_counter() - t0
    ticks, status = 0, None
    while True:
        gui_idle(loop, tick)
        t = time.perf_counter()
        status = poll()
        stall = max(stall, time.perf_counter() - t)
        ticks += 1
        if status is not None and status.job.finished:
            break
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("the step did not finish")
    return {"status": status, "max_stall": stall, "ticks": ticks, "wall": time.perf_counter() - t0}


def _run_step(controller: RefineController, start, tick: float, loop: str) -> Dict[str, float]:
    r = drive(controller.poll, start, tick, loop)
    status = r["status"]
    if status.job.state != "done":
        raise status.job.error
    return {"compute_seconds": status.job.seconds, "max_gui_stall_seconds": r["max_stall"], "ticks": r["ticks"],
            "dice": status.update.dice, "mask": status.update.mask}


def run_panel_timing(out, rounds: int = 3, tick: float = 0.1, device: str = "cpu", seed: int = 0,
                     loops: Sequence[str] = GUI_LOOPS, client: Optional[ComputeClient] = None,
                     labels: Optional[Sequence[int]] = None, threads: int = 0) -> List[dict]:
    ds = DecathlonDataset(sample_dataset("chaos"))
    image, label = ds.load(CASE)
    own = client is None
    client = client or ComputeClient(threads=threads)  # the compute process's threads (0: the default)
    records = []
    try:
        warm = RefineController(image, device=device, client=client)  # model loading is not a step's time
        first = main_object(label == next(iter(LABELS)))
        for box in (box_from_mask(first, 0, int(np.argmax(first.sum(axis=(1, 2))))), box_from_mask(first)):
            warm.start_box(box)
            warm.wait(600)
            fg = np.zeros(label.shape, bool)
            fg[tuple((np.asarray(box.lo) + np.asarray(box.hi) - 1) // 2)] = True
            warm.set_scribbles(fg, np.zeros_like(fg))
            warm.start_refine("supervised")
            warm.wait(600)
        warm.close()
        for loop in loops:
            for value, name in LABELS.items():
                if labels is not None and value not in labels:
                    continue
                ref = main_object(label == value)
                k = int(np.argmax(ref.sum(axis=(1, 2))))
                for dim, box in (("2d", box_from_mask(ref, 0, k)), ("3d", box_from_mask(ref))):
                    controller = RefineController(image, device=device, reference=label == value, client=client)
                    rng = np.random.default_rng(seed)
                    try:
                        step = _run_step(controller, lambda: controller.start_box(box), tick, loop)
                        records.append({"loop": loop, "label": name, "dim": dim, "step": "box", "round": 0,
                                        **{k: v for k, v in step.items() if k != "mask"}})
                        fg, bg = np.zeros(label.shape, bool), np.zeros(label.shape, bool)
                        for r in range(1, rounds + 1):
                            stroke = next_scribble(step["mask"], label == value, box, image.spacing_kji, rng)
                            if stroke is None:
                                break
                            (fg if stroke.label == "fg" else bg)[tuple(np.asarray(stroke.voxels).T)] = True

                            def start():
                                controller.set_scribbles(fg, bg)
                                controller.start_refine("supervised")
                            step = _run_step(controller, start, tick, loop)
                            records.append({"loop": loop, "label": name, "dim": dim, "step": "refine", "round": r,
                                            **{k: v for k, v in step.items() if k != "mask"}})
                    finally:
                        controller.close()
    finally:
        if own:
            client.stop()
    out = Path(out)
    write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_text(out / "summary.md", summary(records, tick, device))
    return records


def speed_ratios(records: List[dict]) -> List[float]:
    """Per step present under both loops: free-running compute time / GIL-loop compute time (1 = as fast)."""
    free = {(r["label"], r["dim"], r["step"], r["round"]): r["compute_seconds"] for r in records
            if r["loop"] == "sleep"}
    return [free[key] / r["compute_seconds"] for r in records if r["loop"] == "gil"
            and (key := (r["label"], r["dim"], r["step"], r["round"])) in free and r["compute_seconds"] > 0]


def summary(records: List[dict], tick: float, device: str) -> str:
    lines = [f"# Panel timing ({CASE}, device {device}, GUI tick {tick * 1000:.0f} ms, compute in its own process)",
             "", "GUI loop 'gil': the main thread holds the GIL between polls, as Slicer's does; 'sleep': it "
             "releases it.", "",
             "| GUI loop | dim | step | n | median compute s | max compute s | median max stall s | worst stall s |",
             "|---|---|---|---|---|---|---|---|"]
    for loop in GUI_LOOPS:
        for dim in ("2d", "3d"):
            for step in ("box", "refine"):
                rs = [r for r in records if r["loop"] == loop and r["dim"] == dim and r["step"] == step]
                if not rs:
                    continue
                c = [r["compute_seconds"] for r in rs]
                g = [r["max_gui_stall_seconds"] for r in rs]
                lines.append(f"| {loop} | {dim} | {step} | {len(rs)} | {np.median(c):.2f} | {max(c):.2f} | "
                             f"{np.median(g):.3f} | {max(g):.3f} |")
    ratios = speed_ratios(records)
    if ratios:
        free = sum(r["compute_seconds"] for r in records if r["loop"] == "sleep")
        held = sum(r["compute_seconds"] for r in records if r["loop"] == "gil")
        lines += ["", f"Compute speed under the GIL-holding loop relative to free-running: all steps together "
                      f"{free / held:.2f} ({free:.1f} s free-running, {held:.1f} s under the GIL-holding loop); per "
                      f"step median {np.median(ratios):.2f}, lowest {min(ratios):.2f} ({len(ratios)} steps; short "
                      "steps are noisy on a shared machine)."]
    return "\n".join(lines) + "\n"
