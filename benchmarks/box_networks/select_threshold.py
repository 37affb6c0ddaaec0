"""Dice of the 2D / 3D box network's probability cut at t, per validation group (is 0.5 the right cut?).
The network alone (no CRF), tight boxes of box_sources "val" (train_box.validation_cases), N validation
hippocampus subjects. Usage (repository root): PYTHONPATH=InteractiveRefine python
benchmarks/box_networks/select_threshold.py N  (twelfth session: N = 6; output in select_threshold_s12.md)"""
import sys
from collections import defaultdict

import numpy as np
import torch

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.training.box_sources import load_sources
from InteractiveRefineLib.training.train_box import validation_cases

torch.set_num_threads(1)
TS = [0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
seg = BoxSegmenter(device="cpu", threshold2d=0.5, threshold3d=0.5)  # the networks' own probabilities
per = defaultdict(lambda: defaultdict(list))
for group, v, lab, m, boxes2d, box3d in validation_cases(load_sources("val", limit=int(sys.argv[1]))):
    for b in boxes2d:
        k = b.lo[0]
        p = seg.predict(v.image, b).probability[k]
        for t in TS:
            per[(group, "2d")][t].append(dice(p >= t, m[k]))
    p = seg.predict(v.image, box3d).probability
    for t in TS:
        per[(group, "3d")][t].append(dice(p >= t, m))
    print(group, v.name, lab, file=sys.stderr)
for dim in ("2d", "3d"):
    print(f"\n{dim}: " + " | ".join(f"t={t}" for t in TS))
    means = defaultdict(list)
    for (g, d), r in sorted(per.items()):
        if d != dim:
            continue
        row = [np.mean(r[t]) for t in TS]
        for t, x in zip(TS, row):
            means[t].append(x)
        print(f"{g:22s} " + " ".join(f"{x:.4f}" for x in row))
    print(f"{'mean of groups':22s} " + " ".join(f"{np.mean(means[t]):.4f}" for t in TS))
