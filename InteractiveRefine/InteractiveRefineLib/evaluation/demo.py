"""Demo on the embedded sample: boxes from reference labels -> CNN -> NIfTI, PNG overlays, metrics.json;
then two rounds of simulated scribbles and BIFSeg refinement on the kidneys (demo_refine.py).

Boxes come from the reference labels (2D: the slice where the structure is largest; 3D: its whole
extent). Kidneys were never seen in training (the shipped models learned liver and spleen only); the
CT case is a modality never seen in training.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from ..core.data import DecathlonDataset
from ..core.image_io import Image, write_image
from ..core.metrics import dice
from ..core.prompts import box_from_mask, main_object
from ..core.sample import sample_dataset
from ..engine.inference import BoxSegmenter
from .figures import draw_box, draw_slice, show_view, zoom

# (sample dataset, case, label ids) shown by the demo.
DEMO_CASES = (("chaos", "chaos_8", (1, 2, 3, 4)), ("totalseg_ct", "totalseg_ct", (5, 1, 2, 3)))
REFINE_LABELS = (2, 3)  # refinement is shown on the unseen kidneys of the first case


def radiological_view(image: Image):
    """A function that flips an axial slice (or mask) of `image` into radiological orientation."""
    return show_view(image)


def finish_figure(fig, path: Path, title: str, dpi: int, bottom: float = 0.0) -> None:
    """Title, layout (`bottom`: room kept for a figure legend), write to `path` and free the figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if bottom:
        fig.subplots_adjust(bottom=bottom)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def show_slice(ax, image: Image, k: int, ref: np.ndarray, pred: np.ndarray, show) -> None:
    """Axial slice k (CT: soft-tissue window; MR: percentiles 1-99; true aspect) with reference (green) and
    result (red) contours."""
    draw_slice(ax, image, k, ref, pred, show)


def _overlay_png(image: Image, slices: Dict[str, tuple], path: Path, title: str) -> None:
    """One panel per structure: the slice, reference contour (green), prediction contour (red), box."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    show = radiological_view(image)
    n = len(slices)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (name, (k, ref, pred, box, d)) in zip(axes[0], slices.items()):
        show_slice(ax, image, k, ref, pred, show)
        draw_box(ax, image, box.lo[1:], box.hi[1:])
        zoom(ax, image, box.lo[1:], box.hi[1:])
        what = f"slice {k}" if box.axis is not None else f"slice {k} of the 3D result, 3D Dice"
        ax.set_title(f"{name}\n{what} {d:.3f}" if box.axis is None else f"{name}\n{what}, Dice {d:.3f}",
                     fontsize=8)
        ax.axis("off")
    finish_figure(fig, path, title + "  (green: reference, red: CNN, yellow: box)", dpi=100)


def run_case(segmenter: BoxSegmenter, ds: DecathlonDataset, case_id: str, label_ids: Sequence[int],
             staging: Path) -> List[dict]:
    image, label = ds.load(case_id)
    rows: List[dict] = []
    for dim in (2, 3):
        seg = np.zeros(image.shape, dtype=np.uint8)
        best = np.zeros(image.shape, dtype=np.float32)
        panels = {}
        for lab in label_ids:
            ref = label == lab
            if not ref.any():
                continue
            name = ds.labels[lab]
            drawn = main_object(ref)
            k = int(np.argmax(drawn.sum(axis=(1, 2))))
            box = box_from_mask(drawn, 0, k) if dim == 2 else box_from_mask(drawn)
            pred = segmenter.predict(image, box)
            d = dice(pred.mask[k], ref[k]) if dim == 2 else dice(pred.mask, ref)
            take = pred.mask & (pred.probability > best)  # overlaps go to the most probable structure
            seg[take], best[take] = lab, pred.probability[take]
            panels[name] = (k, ref, pred.mask, box, d)
            rows.append({"case": case_id, "dim": f"{dim}d", "label": int(lab), "label_name": name,
                         "dice": round(float(d), 4), "seconds": round(float(pred.seconds), 4),
                         "box_lo": list(box.lo), "box_hi": list(box.hi)})
        write_image(image, staging / f"{case_id}_cnn{dim}d.nii.gz", seg)
        _overlay_png(image, panels, staging / f"{case_id}_cnn{dim}d.png", f"{case_id}, {dim}D boxes")
    write_image(image, staging / f"{case_id}_image.nii.gz")
    write_image(image, staging / f"{case_id}_reference.nii.gz", label.astype(np.uint8))
    return rows


def run_demo(out: Path, device: str = "auto") -> List[dict]:
    """Run the demo; everything is written to a staging folder and moved into `out` only at the end."""
    segmenter = BoxSegmenter(device=device)
    for dim in (2, 3):
        segmenter.model(dim)  # fail early (missing / corrupted model) before any output is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=out) as tmp:
        staging = Path(tmp)
        for sample, case_id, labels in DEMO_CASES:
            ds = DecathlonDataset(sample_dataset(sample))
            rows += run_case(segmenter, ds, case_id, labels, staging)
        from .demo_refine import refine_case
        sample, case_id, _ = DEMO_CASES[0]
        refined = refine_case(segmenter, DecathlonDataset(sample_dataset(sample)), case_id, REFINE_LABELS, staging)
        (staging / "metrics.json").write_text(json.dumps({"device": str(segmenter.device), "structures": rows,
                                                          "refinement": refined}, indent=2) + "\n")
        for f in staging.iterdir():
            os.replace(f, out / f.name)
    print(f"{'case':<12} {'dim':<3} {'structure':<14} {'Dice':>6} {'seconds':>8}")
    for r in rows:
        print(f"{r['case']:<12} {r['dim']:<3} {r['label_name']:<14} {r['dice']:>6.3f} {r['seconds']:>8.3f}")
    print(f"\nrefinement (BIFSeg, simulated scribbles), {case_id}:")
    for r in refined:
        print(f"{r['dim']:<3} {r['label_name']:<14} round {r['round']}  Dice {r['dice']:.3f}")
    print(f"wrote NIfTI, PNG overlays, the interaction log and metrics.json to {out}")
    return rows
