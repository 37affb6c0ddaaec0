"""`large-volume` benchmark: time and peak memory of a box step and of FewShotSeg on a CT-sized volume.

A synthetic abdominal CT (default 300 x 512 x 512 voxels, 0.78 x 0.78 x 1.5 mm, int16 HU: air, body,
a liver-sized ellipsoid, kidneys, noise) is written once; each case then runs in a fresh process that
reads it, so the reported peak RSS (getrusage ru_maxrss) is the case's own, reading included. Cases:
a liver-sized 3D box, the whole-image 3D box, a 2D box, and FewShotSeg on every slice from one support
slice of the same volume. Not a test: it takes minutes; results go to OUT/results.jsonl and summary.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..core.atomic import write_text

SHAPE = (300, 512, 512)
SPACING = (0.78, 0.78, 1.5)  # x, y, z (ITK order), mm
CASES = ("liver_box_3d", "whole_image_box_3d", "liver_box_2d", "fewshot_whole_volume")
LIVER = 1


def synthetic_ct(shape: Sequence[int] = SHAPE, seed: int = 0):
    """(int16 HU array, label array) of a crude abdomen: body ellipse, liver, two kidneys, noise."""
    k, j, i = (np.arange(n, dtype=np.float32) for n in shape)
    zz, yy, xx = k[:, None, None] / shape[0], j[None, :, None] / shape[1], i[None, None, :] / shape[2]
    body = np.broadcast_to(((yy - 0.5) / 0.42) ** 2 + ((xx - 0.5) / 0.47) ** 2 <= 1.0, tuple(shape))
    liver = ((zz - 0.55) / 0.25) ** 2 + ((yy - 0.45) / 0.22) ** 2 + ((xx - 0.33) / 0.2) ** 2 <= 1.0
    kid = [((zz - 0.45) / 0.12) ** 2 + ((yy - 0.62) / 0.07) ** 2 + ((xx - c) / 0.05) ** 2 <= 1.0
           for c in (0.3, 0.7)]
    rng = np.random.default_rng(seed)
    hu = np.where(body, np.int16(40), np.int16(-1000)).astype(np.int16)
    hu[liver & body] = 90
    label = np.zeros(tuple(shape), np.uint8)
    label[liver & body] = LIVER
    for n, m in enumerate(kid, start=2):
        hu[m] = 160
        label[m] = n
    for z in range(shape[0]):  # slice by slice: no full-volume float noise array
        hu[z] += (rng.standard_normal(shape[1:], dtype=np.float32) * 15).astype(np.int16)
    return hu, label


def _child(case: str, image_path: str, label_path: str, threads: int) -> Dict:
    """One case in this (fresh) process; returns seconds, voxels and peak RSS."""
    import resource

    from ..core.threads import set_threads
    threads = set_threads(threads)
    from ..core.image_io import read_image, read_label
    from ..core.prompts import box_from_mask, make_box
    image = read_image(image_path)
    label = read_label(label_path)
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    liver = label == LIVER
    t0, cold = time.perf_counter(), None
    if case.startswith("fewshot"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "FewShotSeg"))
        from FewShotSegLib.engine.segment import FewShotSegmenter, make_supports
        k = int(np.argmax(liver.sum((1, 2))))
        seg = FewShotSegmenter(device="cpu")
        t0 = time.perf_counter()
        result = seg.segment(make_supports(image, label, k, [LIVER]), image)
        cold = time.perf_counter() - t0
        mask, box_voxels = result.labels == LIVER, None
    else:
        from ..engine.inference import BoxSegmenter
        from ..engine.session import InteractiveSession
        if case == "whole_image_box_3d":
            box = make_box((0, 0, 0), image.shape)
        elif case == "liver_box_3d":
            box = box_from_mask(liver)
        else:
            box = box_from_mask(liver, 0, int(np.argmax(liver.sum((1, 2)))))
        s = InteractiveSession(image, BoxSegmenter(device="cpu"), device="cpu", validate=False)
        t0 = time.perf_counter()
        s.set_box(box)  # the first box of a process also prepares kernels for the crop shape
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        mask = s.set_box(box)
        box_voxels = int(np.prod(box.size))
    seconds = time.perf_counter() - t0
    inter = float((mask & liver).sum())
    dice = 2 * inter / max(1.0, float(mask.sum() + liver.sum())) if case != "liver_box_2d" else None
    return {"case": case, "seconds": round(seconds, 2), "first_seconds": round(cold, 2), "box_voxels": box_voxels,
            "dice": dice,
            "rss_after_read_mb": round(rss_loaded), "peak_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "threads": threads}


def run_large_volume(out, shape: Sequence[int] = SHAPE, cases: Sequence[str] = CASES, threads: int = 0) -> Path:
    """Write the synthetic volume, run each case in a fresh process, write results.jsonl and summary.md."""
    from ..core.image_io import Image, write_image
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records: List[Dict] = []
    with tempfile.TemporaryDirectory(prefix="large-volume-") as tmp:
        hu, label = synthetic_ct(shape)
        img = Image(hu, SPACING)
        write_image(img, Path(tmp) / "ct.nii", hu)  # uncompressed: reading it costs little time
        write_image(img, Path(tmp) / "label.nii", label)
        del hu, label, img
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
        for case in cases:
            code = ("import json, sys; from InteractiveRefineLib.evaluation.large_volume import _child; "
                    f"print('RESULT', json.dumps(_child({case!r}, {str(Path(tmp) / 'ct.nii')!r}, "
                    f"{str(Path(tmp) / 'label.nii')!r}, {int(threads)})))")
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                rec = {"case": case, "error": (proc.stderr.strip().splitlines() or ["killed"])[-1],
                       "returncode": proc.returncode}
            else:
                rec = json.loads(line[len("RESULT "):])
            rec["shape"] = list(shape)
            records.append(rec)
            print(json.dumps(rec), flush=True)
    write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_text(out / "summary.md", _summary(records, shape))
    return out / "summary.md"


def _summary(records: List[Dict], shape: Sequence[int]) -> str:
    lines = [f"# Large volume: synthetic CT {' x '.join(map(str, shape))} voxels ({SPACING[0]} x {SPACING[1]} x "
             f"{SPACING[2]} mm), CPU", "",
             "Each case in a fresh process; peak RSS includes reading the image and loading the model. "
             f"Machine: {os.cpu_count()} cores, 1-minute load average {os.getloadavg()[0]:.1f} when written "
             "(other jobs share the cores: times are upper bounds).", "",
             "| case | box voxels | seconds (step) | first step in the process | peak RSS MB | RSS after read MB | "
             "Dice (liver) | threads |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['case']} | refused or failed: {r['error']} | | | | | | |")
            continue
        d = "–" if r.get("dice") is None else f"{r['dice']:.3f}"
        lines.append(f"| {r['case']} | {r.get('box_voxels') or '–'} | {r['seconds']} | {r['first_seconds']} | "
                     f"{r['peak_rss_mb']} | "
                     f"{r['rss_after_read_mb']} | {d} | {r['threads']} |")
    return "\n".join(lines) + "\n"
