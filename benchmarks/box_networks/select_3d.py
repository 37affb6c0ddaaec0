"""Chooses what serves 3D boxes, on the validation structures only (box_sources.py "val": CHAOS validation
patients' liver and spleen, 30 validation hippocampus subjects, cord grey/white matter of T2* and MT, fetal
cortex and corpus callosum on GA21-25): the shipped 3D PC-Net, or the 2D box network run slice by slice.
Tight 3D boxes, box only, network output without CRF; the filled box beside them.
Usage: python select_3d.py CANDIDATE_2D.json [PCNET3D.json] > select_3d.md"""
import sys
from collections import defaultdict

import numpy as np
import torch

from InteractiveRefineLib.box_sources import load_sources
from InteractiveRefineLib.inference import predict_box, wrap_for
from InteractiveRefineLib.metrics import dice
from InteractiveRefineLib.models import load_model
from InteractiveRefineLib.prompts import box_from_mask

torch.set_num_threads(2)
cand, _ = load_model(sys.argv[1])
cand_manifest = load_model(sys.argv[1])[1]
models = {"2d_slicewise": (wrap_for(cand, dict(cand_manifest, input=dict(cand_manifest["input"], slicewise=True)), 3),
                           dict(cand_manifest["input"], slicewise=True))}
if len(sys.argv) > 2:
    net3, m3 = load_model(sys.argv[2])
    models["pcnet3d"] = (net3, m3["input"])
res = defaultdict(lambda: defaultdict(list))
secs = defaultdict(list)
for v in load_sources("val"):
    for l in v.label_ids:
        m = v.labels == l
        if not m.any():
            continue
        box = box_from_mask(m)
        res[v.group]["filled_box"].append(dice(box.mask(m.shape), m))
        for name, (net, cfg) in models.items():
            p = predict_box(net, cfg, v.image, box, torch.device("cpu"))
            res[v.group][name].append(dice(p.mask, m))
            secs[name].append(p.seconds)
names = ["filled_box"] + list(models)
print("| group | n | " + " | ".join(names) + " |")
print("|---|---|" + "---|" * len(names))
for g, r in sorted(res.items()):
    print(f"| {g} | {len(r['filled_box'])} | " + " | ".join(f"{np.mean(r[n]):.3f}" for n in names) + " |")
print("| mean of groups | | " + " | ".join(f"{np.mean([np.mean(r[n]) for r in res.values()]):.3f}" for n in names) + " |")
print()
print("median seconds per 3D box: " + ", ".join(f"{n} {np.median(s):.3f}" for n, s in secs.items()))
