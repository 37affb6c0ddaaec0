"""`panel-timing`: how the Slicer panel's background work feels, measured without Slicer.

Runs the panel's controller (RefineController on the persistent worker thread) through box -> robot
scribble -> refine rounds on the embedded MR patient, while the calling thread plays the GUI: it polls
every `tick` seconds, as the panel's QTimer does. Per step it records the compute time and the longest
gap between two GUI ticks (how long the GUI would have been frozen: the worker holds Python's GIL
in stretches). Writes results.jsonl and summary.md.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from .atomic import write_text
from .data import DecathlonDataset
from .prompts import box_from_mask, main_object
from .refine_controller import RefineController
from .robot import next_scribble
from .sample import sample_dataset

CASE, LABELS = "chaos_8", {2: "right kidney", 3: "left kidney"}


def _run_step(controller: RefineController, start, tick: float) -> Dict[str, float]:
    start()
    last, gap, ticks = time.perf_counter(), 0.0, 0
    while True:
        status = controller.poll()
        now = time.perf_counter()
        gap, last, ticks = max(gap, now - last), now, ticks + 1
        if status is not None and status.job.finished:
            break
        time.sleep(tick)
    if status.job.state != "done":
        raise status.job.error
    return {"compute_seconds": status.job.seconds, "max_gui_gap_seconds": gap, "ticks": ticks,
            "dice": status.update.dice, "mask": status.update.mask}


def run_panel_timing(out, rounds: int = 3, tick: float = 0.02, device: str = "cpu", seed: int = 0) -> List[dict]:
    ds = DecathlonDataset(sample_dataset("chaos"))
    image, label = ds.load(CASE)
    records = []
    for value, name in LABELS.items():
        ref = main_object(label == value)
        k = int(np.argmax(ref.sum(axis=(1, 2))))
        for dim, box in (("2d", box_from_mask(ref, 0, k)), ("3d", box_from_mask(ref))):
            controller = RefineController(image, device=device, reference=label == value)
            rng = np.random.default_rng(seed)
            try:
                step = _run_step(controller, lambda: controller.start_box(box), tick)
                records.append({"label": name, "dim": dim, "step": "box", "round": 0,
                                **{k: v for k, v in step.items() if k != "mask"}})
                fg, bg = np.zeros(label.shape, bool), np.zeros(label.shape, bool)
                for r in range(1, rounds + 1):
                    stroke = next_scribble(step["mask"], label == value, box, image.spacing_kji, rng)
                    if stroke is None:
                        break
                    (fg if stroke.label == "fg" else bg)[tuple(np.asarray(stroke.voxels).T)] = True
                    controller.set_scribbles(fg, bg)
                    step = _run_step(controller, lambda: controller.start_refine("supervised"), tick)
                    records.append({"label": name, "dim": dim, "step": "refine", "round": r,
                                    **{k: v for k, v in step.items() if k != "mask"}})
            finally:
                controller.close()
                controller.worker.shutdown()
    out = Path(out)
    write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_text(out / "summary.md", summary(records, tick, device))
    return records


def summary(records: List[dict], tick: float, device: str) -> str:
    lines = [f"# Panel timing ({CASE}, device {device}, GUI tick {tick * 1000:.0f} ms)", "",
             "| dim | step | n | median compute s | max compute s | median max GUI gap s | worst GUI gap s |",
             "|---|---|---|---|---|---|---|"]
    for dim in ("2d", "3d"):
        for step in ("box", "refine"):
            rs = [r for r in records if r["dim"] == dim and r["step"] == step]
            if not rs:
                continue
            c = [r["compute_seconds"] for r in rs]
            g = [r["max_gui_gap_seconds"] for r in rs]
            lines.append(f"| {dim} | {step} | {len(rs)} | {np.median(c):.2f} | {max(c):.2f} | {np.median(g):.3f} | "
                         f"{max(g):.3f} |")
    return "\n".join(lines) + "\n"
