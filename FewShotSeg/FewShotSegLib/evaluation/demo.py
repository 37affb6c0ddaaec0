"""Demo on the embedded sample: one annotated slice of chaos_36 (support) segments chaos_8 (query).

Per organ (liver, kidneys, spleen) the support is the middle slice of the organ in chaos_36, and the query
range is the organ's slice range in chaos_8's reference (standing in for the range a user gives; the
automatic range is weaker, see the README); within it the 3D component under the support is kept, as in the
evaluation. Both patients were left out of the default model's training.
Runs without and with exemplar adaptation (DEMO_ADAPT: a fixed, short number of steps per organ, so the
adapted Dice does not depend on how loaded the machine is). Writes NIfTI label maps, PNG overlays
and metrics.json, staged and moved into place only at the end.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Dict

import numpy as np

from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.image_io import write_image
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.sample import sample_dataset
from InteractiveRefineLib.evaluation.demo import finish_figure, radiological_view, show_slice
from InteractiveRefineLib.evaluation.figures import ORGAN_COLOURS, mask_extent, zoom

from ..engine.adapt import AdaptConfig, adapt_segmenter
from ..engine.protocol import organ_slices
from ..engine.segment import FewShotSegmenter, combine_labels, make_supports

SUPPORT_CASE, QUERY_CASE = "chaos_36", "chaos_8"
LABELS = (1, 2, 3, 4)
# per organ: step counts, not seconds (the same Dice on a loaded or an idle machine); about 10 s an organ
# on a 2-core CPU
DEMO_ADAPT = AdaptConfig(steps=8, pseudo_steps=4, batch=4)


def _overlay(image, ref, pred, path: Path, title: str, names: Dict[int, str]) -> None:
    """Four slices of the 3D result across the organs' extent, zoomed to the organs; one colour per organ
    (reference dashed, result solid) with a legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    show = radiological_view(image)
    ks = np.flatnonzero(np.isin(ref, LABELS).any((1, 2)))
    picks = ks[np.linspace(0, len(ks) - 1, 4).astype(int)] if ks.size else [image.shape[0] // 2]
    fig, axes = plt.subplots(1, len(picks), figsize=(3 * len(picks), 3.6))
    lo, hi = mask_extent([np.isin(ref, LABELS).any(0), np.isin(pred, LABELS).any(0)])
    for ax, k in zip(np.atleast_1d(axes), picks):
        show_slice(ax, image, int(k), None, None, show)
        for organ, colour in zip(LABELS, ORGAN_COLOURS):
            for mask, style in ((ref == organ, "--"), (pred == organ, "-")):
                if mask[k].any():
                    ax.contour(show(mask[k]).astype(np.float32), levels=[0.5], colors=colour, linewidths=1.0,
                               linestyles=style)
        zoom(ax, image, lo, hi, context=0.1)
        ax.set_title(f"slice {k} of the 3D result", fontsize=8)
        ax.axis("off")
    handles = [Line2D([], [], color=c, label=names.get(o, str(o))) for o, c in zip(LABELS, ORGAN_COLOURS)]
    handles += [Line2D([], [], color="grey", ls="--", label="reference"), Line2D([], [], color="grey", label="result")]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    finish_figure(fig, path, title, dpi=100, bottom=0.12)


def run_demo(out: Path, device: str = "auto", adapt: bool = True) -> Dict[str, object]:
    segmenter = FewShotSegmenter(device=device)  # fails early on a missing or corrupted model
    ds = DecathlonDataset(sample_dataset("chaos"))
    s_img, s_lab = ds.load(SUPPORT_CASE)
    q_img, q_lab = ds.load(QUERY_CASE)
    metrics: Dict[str, object] = {"support": SUPPORT_CASE, "query": QUERY_CASE, "device": str(segmenter.device),
                                  "model": segmenter.manifest.get("name"), "range": "reference slice range"}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=out) as tmp:
        staging = Path(tmp)
        for name in ("plain", "adapted") if adapt else ("plain",):
            probs, per, secs, slices, steps = {}, {}, {}, {}, {}
            for organ in LABELS:
                t0 = time.monotonic()
                z = organ_slices(s_lab, organ)
                k = int(z[len(z) // 2])
                supports = make_supports(s_img, s_lab, k, [organ])
                seg = segmenter
                if name == "adapted":
                    seg = adapt_segmenter(segmenter, supports, q_img, 0, DEMO_ADAPT)
                    steps[ds.labels[organ]] = {k: seg.manifest["adapted"][k] for k in ("steps", "pseudo_steps")}
                zq = organ_slices(q_lab, organ)
                result = seg.segment(supports, q_img, slices=(int(zq[0]), int(zq[-1]) + 1), auto_range=True)
                probs[organ] = result.probabilities[organ]
                per[ds.labels[organ]] = round(dice(result.labels == organ, q_lab == organ), 4)
                secs[ds.labels[organ]] = round(time.monotonic() - t0, 2)
                slices[ds.labels[organ]] = {"support_slice": k, "query_range": [int(zq[0]), int(zq[-1])]}
            labels = combine_labels(probs)
            write_image(q_img, staging / f"{QUERY_CASE}_fewshot_{name}.nii.gz", labels)
            metrics[name] = {"dice": per, "mean_dice": round(float(np.mean(list(per.values()))), 4),
                             "seconds": secs, "slices": slices, **({"adaptation_steps": steps} if steps else {})}
            _overlay(q_img, q_lab, labels, staging / f"fewshot_{name}.png",
                     f"FewShotSeg ({name}): one slice of {SUPPORT_CASE} per organ -> {QUERY_CASE}; "
                     f"mean Dice {metrics[name]['mean_dice']:.3f}", ds.labels)
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        for f in staging.iterdir():
            os.replace(f, out / f.name)
    return metrics
