"""The 3D network's views (networks.SliceWise `views`, `view_slices`) on the validation structures only
(box_sources.py "val": CHAOS validation patients' liver and spleen, validation hippocampus subjects, cord
grey/white matter of T2* and MT, fetal cortex and corpus callosum on GA21-25). Tight 3D boxes, box only: the
network alone and the session's box step (network + CRF), per variant VIEWS:MAX:VIEW_SLICES[:VIEW_SIZE] (views 1
or 3, at most MAX slices across the box, at most VIEW_SLICES across each other axis, those planes resampled to
VIEW_SIZE x VIEW_SIZE pixels instead of the grid's size); box step seconds, one thread.
Records per structure go to --records (JSON lines); a re-run computes only the missing variants.
Usage (repository root): python benchmarks/box_networks/select_3d_views.py [--variants 1:16:16,3:16:16,3:16:8]
    [--hip N] [--records FILE] > select_3d_views.md"""
import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tables import group_means_table  # this folder (the script's own)
from val_cases import load_records, validation_subset  # this folder

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.networks import SliceWise
from InteractiveRefineLib.engine.session import InteractiveSession

ap = argparse.ArgumentParser()
ap.add_argument("--variants", default="1:16:16,3:16:16,3:16:8")
ap.add_argument("--hip", type=int, default=6, help="validation hippocampus subjects used (of 30)")
ap.add_argument("--records", default="benchmarks/box_networks/select_3d_views.jsonl")
args = ap.parse_args()
torch.set_num_threads(1)
variants = [tuple(int(x) for x in v.split(":")) for v in args.variants.split(",")]
seg = BoxSegmenter(device="cpu")
net3, manifest = seg.model(3)
path = Path(args.records)
done = load_records(path)
cases = validation_subset(args.hip)
with path.open("a") as f:
    for group, v, label, m, _, box3d in cases:
        key = (v.name, int(label))
        rec = done.setdefault(key, {"case": v.name, "label": int(label), "group": group,
                                    "filled_box": dice(box3d.mask(m.shape), m)})
        fresh = {}
        for views, most, side, *size in variants:
            name = ":".join(str(x) for x in (views, most, side, *size))
            if f"net {name}" in rec:
                continue
            man = dict(manifest, input=dict(manifest["input"], slicewise_views=views))
            seg = seg.override(3, SliceWise(net3.net, most, views, side, *size).eval(), man)
            fresh[f"net {name}"] = dice(seg.predict(v.image, box3d, validate=False).mask, m)
            t0 = time.perf_counter()
            fresh[f"box {name}"] = dice(InteractiveSession(v.image, seg, validate=False).set_box(box3d), m)
            fresh[f"seconds {name}"] = time.perf_counter() - t0
        if fresh:
            rec.update(fresh)
            f.write(json.dumps(dict(rec)) + "\n")
            f.flush()
names = [":".join(str(x) for x in v) for v in variants]
res = {"net": defaultdict(lambda: defaultdict(list)), "box": defaultdict(lambda: defaultdict(list))}
secs = defaultdict(list)
for group, v, label, *_ in cases:
    r = done[(v.name, int(label))]
    for kind in res:
        res[kind][group]["filled_box"].append(r["filled_box"])
        for n in names:
            res[kind][group][n].append(r[f"{kind} {n}"])
    for n in names:
        secs[n].append(r[f"seconds {n}"])
print(f"{len(cases)} 3D validation boxes; variants views:max slices across the box:max slices across the others\n")
print("### network alone (mean Dice)\n")
print(group_means_table(res["net"], ["filled_box"] + names, count="filled_box"))
print("\n### session box step: network + CRF (mean Dice)\n")
print(group_means_table(res["box"], ["filled_box"] + names, count="filled_box"))
print("\nbox step seconds, median / max (1 thread, shared machine): "
      + ", ".join(f"{n} {np.median(s):.2f} / {max(s):.2f}" for n, s in secs.items()))
