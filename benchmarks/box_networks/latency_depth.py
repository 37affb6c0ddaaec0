"""Seconds of the 3D box step (network + CRF, InteractiveSession.set_box) with one view and with three views on
every box, against the depth of the three-view grid, on the validation structures (box_sources.py "val"; thin
boxes, which take one view anyway, left out): what chose networks.THREE_VIEWS_MAX_DEPTH. Median of 5 runs per
box after one warm-up. Usage (repository root, nothing else running):
    python benchmarks/box_networks/latency_depth.py [--threads 2] [--hip 6] \
        > benchmarks/box_networks/latency_depth.jsonl"""
import argparse
import json

import torch
from timing import median_seconds  # this folder (the script's own)
from val_cases import validation_subset  # this folder (the script's own)

from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.inference import BoxSegmenter, three_view_depth
from InteractiveRefineLib.engine.session import InteractiveSession

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--hip", type=int, default=6, help="validation hippocampus subjects")
a = ap.parse_args()
torch.set_num_threads(a.threads)
seg = BoxSegmenter(device="cpu")
configs = {"v3": RefineConfig(views3d=3, three_views_max_depth=None), "v1": RefineConfig(views3d=1)}
_, manifest = seg.model(3)
for group, v, label, m, boxes2d, box3d in validation_subset(a.hip):
    if min(box3d.size) < 10:
        continue
    rec = dict(group=group, case=v.name, label=int(label), depth=three_view_depth(box3d, v.image, manifest["input"]))
    for name, cfg in configs.items():
        rec[name] = round(median_seconds(lambda: InteractiveSession(v.image, seg, config=cfg, validate=False)
                                         .set_box(box3d), 5), 3)
    print(json.dumps(rec), flush=True)
