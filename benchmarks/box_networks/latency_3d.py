"""Latency of the 3D box step (network + CRF, InteractiveSession.set_box) and of the network alone, on the
evaluation structures (box_sources.py "eval": CHAOS test patients, held-out hippocampus subjects, fetal
tissues of the operated atlases, the tumour set), tight boxes; the median of `--repeats` runs per box, then
the median per group. Usage (repository root):
    python benchmarks/box_networks/latency_3d.py [--threads 1] [--hip 6] [--repeats 3] [--per-group 6]
    [--max-slices none|N] [--views3d 1|3] > latency_3d.md"""
import argparse
from collections import defaultdict

import numpy as np
import torch
from timing import eval_structures, median_seconds  # this folder (the script's own)

from InteractiveRefineLib.core.prompts import box_from_mask
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.networks import SliceWise
from InteractiveRefineLib.engine.session import InteractiveSession

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--hip", type=int, default=6, help="held-out hippocampus subjects")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--per-group", type=int, default=6, help="volumes per group at most")
ap.add_argument("--max-slices", default=None, help="override box3d.json's slicewise_max_slices ('none': every slice)")
ap.add_argument("--views3d", type=int, choices=(1, 3), default=None,
                help="the 3D network's views (default: box3d.json's)")
a = ap.parse_args()
torch.set_num_threads(a.threads)
seg = BoxSegmenter(device="cpu", views3d=a.views3d)
net3, manifest = seg.model(3)
if a.max_slices is not None:
    k = None if a.max_slices == "none" else int(a.max_slices)
    seg = seg.override(3, SliceWise(net3.net, k, net3.views).eval(), manifest)
secs = defaultdict(lambda: defaultdict(list))
depth = defaultdict(list)
for v, m in eval_structures(a.hip, a.per_group):
    if m.any((1, 2)).sum() < 2:
        continue
    box = box_from_mask(m)
    depth[v.group].append(box.hi[0] - box.lo[0])
    for name, run in (("network", lambda: seg.predict(v.image, box, validate=False)),
                      ("box step", lambda: InteractiveSession(v.image, seg, validate=False).set_box(box))):
        secs[v.group][name].append(median_seconds(run, a.repeats))
most = a.max_slices or manifest['input'].get('slicewise_max_slices')
print(f"{a.threads} thread(s), {net3.views} view(s), slicewise_max_slices {most}; median seconds per 3D box "
      f"(median of {a.repeats} runs each)\n")
print("| group | boxes | slices (median, max) | network | box step (network + CRF) |\n|---|---|---|---|---|")
for g in sorted(secs):
    print(f"| {g} | {len(depth[g])} | {np.median(depth[g]):.0f}, {max(depth[g])} | "
          f"{np.median(secs[g]['network']):.2f} | {np.median(secs[g]['box step']):.2f} |")
