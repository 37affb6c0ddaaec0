"""Demo of refinement: box, then two rounds of simulated scribbles + BIFSeg refine, as PNG, NIfTI and a log."""
from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import numpy as np

from ..core.data import DecathlonDataset
from ..core.image_io import write_image
from ..core.prompts import box_from_mask, main_object
from ..engine.inference import BoxSegmenter
from ..engine.session import InteractiveSession
from .robot import next_scribble

ROUNDS = 2


def _panels_png(image, panels, path: Path, title: str) -> None:
    """One row per structure, one column per round: slice, reference (green), result (red), scribbles."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .demo import finish_figure, radiological_view, show_slice
    from .figures import draw_box, draw_scribbles, zoom

    show = radiological_view(image)

    n_rows, n_cols = len(panels), ROUNDS + 1
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 3.1 * n_rows), squeeze=False)
    for row, (name, k, ref, box, steps) in zip(axes, panels):
        for ax, (rnd, mask, fg, bg, d) in zip(row, steps):
            show_slice(ax, image, k, ref, mask, show)
            draw_box(ax, image, box.lo[1:], box.hi[1:])
            draw_scribbles(ax, fg[k], bg[k], show)
            zoom(ax, image, box.lo[1:], box.hi[1:])
            where = f"slice {k}," if box.axis is not None else f"slice {k} of the 3D result, 3D"
            ax.set_title(f"{name}, round {rnd}\n{where} Dice {d:.3f}", fontsize=8)
            ax.axis("off")
    finish_figure(fig, path, title + "\n(green: reference, red: result, yellow: box, blue / magenta: "
                  "foreground / background scribbles)", dpi=100)


def refine_case(segmenter: BoxSegmenter, ds: DecathlonDataset, case_id: str, label_ids: Sequence[int],
                staging: Path, seed: int = 0) -> List[dict]:
    """Box + ROUNDS robot rounds per structure, 2D (largest slice) and 3D; rows for metrics.json."""
    image, label = ds.load(case_id)
    rows: List[dict] = []
    session = InteractiveSession(image, segmenter, log=staging / f"{case_id}_refine_log.jsonl")
    try:
        for dim in (2, 3):
            panels, seg = [], np.zeros(image.shape, np.uint8)
            for lab in label_ids:
                ref = label == lab
                if not ref.any():
                    continue
                drawn = main_object(ref)
                k = int(np.argmax(drawn.sum(axis=(1, 2))))
                box = box_from_mask(drawn, 0, k) if dim == 2 else box_from_mask(drawn)
                oid = f"{ds.labels[lab]} {dim}d"
                session.set_box(box, object_id=oid, reference=ref)
                rng = np.random.default_rng(seed)
                steps = []
                for rnd in range(ROUNDS + 1):
                    if rnd:
                        s = next_scribble(session.mask(), ref, box, image.spacing_kji, rng)
                        if s is not None:
                            session.add_scribble(s.voxels, s.label)
                            session.refine()
                    fg, bg = session.state().scribbles.masks(image.shape)
                    mask = session.mask()
                    d = session.dice()
                    steps.append((rnd, mask, fg, bg, d))
                    rows.append({"case": case_id, "dim": f"{dim}d", "label": int(lab), "label_name": ds.labels[lab],
                                 "method": "bifseg", "round": rnd, "dice": round(float(d), 4)})
                seg[session.mask() & (seg == 0)] = lab
                shown = int(np.argmax((fg | bg).sum(axis=(1, 2)))) if (fg | bg).any() else k
                panels.append((ds.labels[lab], shown if dim == 3 else k, ref, box, steps))
            write_image(image, staging / f"{case_id}_bifseg{dim}d.nii.gz", seg)
            _panels_png(image, panels, staging / f"{case_id}_bifseg{dim}d.png",
                        f"{case_id}, {dim}D boxes + {ROUNDS} rounds of simulated scribbles")
    finally:
        session.close()
    return rows
