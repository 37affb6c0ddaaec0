"""Chooses `slicewise_max_slices` (the lighter 3D path, issue 11 item 5) on the validation structures only
(box_sources.py "val": CHAOS validation patients' liver and spleen, the validation hippocampus subjects,
cord grey/white matter of T2* and MT, fetal cortex and corpus callosum on GA21-25). Tight 3D boxes, box
only: the network alone and the session's box step (network + CRF), per setting of max_slices (None = every
slice); median seconds of the box step, one thread. Usage (repository root):
    python benchmarks/box_networks/select_3d_slices.py [--max-slices none,32,24,16] [--hip N] > select_3d_slices.md"""
import argparse
import time
from collections import defaultdict

import numpy as np
import torch
from tables import group_means_table  # this folder (the script's own)
from val_cases import validation_subset  # this folder

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.networks import SliceWise
from InteractiveRefineLib.engine.session import InteractiveSession

ap = argparse.ArgumentParser()
ap.add_argument("--max-slices", default="none,32,24,16")
ap.add_argument("--hip", type=int, default=10, help="validation hippocampus subjects used (of 30)")
args = ap.parse_args()
torch.set_num_threads(1)
settings = [None if s == "none" else int(s) for s in args.max_slices.split(",")]
seg = BoxSegmenter(device="cpu")
net3, manifest = seg.model(3)
cases = validation_subset(args.hip)
res = {"net": defaultdict(lambda: defaultdict(list)), "box": defaultdict(lambda: defaultdict(list))}
secs, depth = defaultdict(list), []
for group, v, l, m, _, box3d in cases:
    depth.append(box3d.hi[0] - box3d.lo[0])
    res["net"][group]["filled_box"].append(dice(box3d.mask(m.shape), m))
    res["box"][group]["filled_box"].append(res["net"][group]["filled_box"][-1])
    for k in settings:
        name = f"max {k}" if k else "every slice"
        seg = seg.override(3, SliceWise(net3.net, k).eval(), manifest)
        res["net"][group][name].append(dice(seg.predict(v.image, box3d, validate=False).mask, m))
        t0 = time.perf_counter()
        mask = InteractiveSession(v.image, seg, validate=False).set_box(box3d)
        secs[name].append(time.perf_counter() - t0)
        res["box"][group][name].append(dice(mask, m))
names = ["filled_box"] + [f"max {k}" if k else "every slice" for k in settings]
print(f"{len(cases)} 3D validation boxes, box depth (slices) median {np.median(depth):.0f}, max {max(depth)}\n")
print("### network alone (mean Dice)\n")
print(group_means_table(res["net"], names, count="filled_box"))
print("\n### session box step: network + CRF (mean Dice)\n")
print(group_means_table(res["box"], names, count="filled_box"))
print("\nbox step seconds, median / max (1 thread, shared machine): "
      + ", ".join(f"{n} {np.median(s):.2f} / {max(s):.2f}" for n, s in secs.items()))
