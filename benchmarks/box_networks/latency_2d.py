"""Latency of the 2D box step (network + CRF, InteractiveSession.set_box) with float32 and with bfloat16 features
(BoxSegmenter precision "fp32" / "auto"), on the evaluation structures (box_sources.py "eval"), a tight 2D box on
the largest slice of each structure; the median of `--repeats` runs per box, then the median per group.
Usage (repository root, nothing else running):
    python benchmarks/box_networks/latency_2d.py [--threads 2] [--hip 6] [--per-group 4] > latency_2d.md"""
import argparse
from collections import defaultdict

import numpy as np
import torch
from timing import eval_structures, median_seconds  # this folder (the script's own)

from InteractiveRefineLib.core.device import PRECISIONS
from InteractiveRefineLib.core.prompts import box_from_mask
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.session import InteractiveSession

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--hip", type=int, default=6, help="held-out hippocampus subjects")
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--per-group", type=int, default=4, help="volumes per group at most")
a = ap.parse_args()
torch.set_num_threads(a.threads)
segs = {p: BoxSegmenter(device="cpu", precision=p) for p in PRECISIONS}
secs = defaultdict(lambda: defaultdict(list))
for v, m in eval_structures(a.hip, a.per_group):
    box = box_from_mask(m, 0, int(m.sum((1, 2)).argmax()))
    for p, seg in segs.items():
        secs[v.group][p].append(median_seconds(lambda: InteractiveSession(v.image, seg, validate=False).set_box(box),
                                               a.repeats))
print(f"{a.threads} thread(s); median seconds per 2D box step (median of {a.repeats} runs each)\n")
print("| group | boxes | " + " | ".join(PRECISIONS) + " |\n|---|---|" + "---|" * len(PRECISIONS))
for g, d in sorted(secs.items()):
    print(f"| {g} | {len(d[PRECISIONS[0]])} | " + " | ".join(f"{np.median(d[p]):.3f}" for p in PRECISIONS) + " |")
