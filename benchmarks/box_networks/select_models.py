"""Chooses the shipped box models on the validation structures only (box_sources.py "val": CHAOS validation
patients' liver and spleen, the 30 validation hippocampus subjects, cord grey/white matter of T2* and MT,
fetal cortex and corpus callosum on GA21-25). Tight boxes, box only, network output without CRF; 2D: three
slices per structure (25/50/75% of its extent), 3D: the whole structure; the filled box beside them.
Usage: python select_models.py NEW_2D.json OLD_2D.json OLD_3D.json > select_models.md"""
import sys
from collections import defaultdict

import numpy as np
import torch
from tables import group_means_table  # this folder (the script's own)

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import predict_box, wrap_for
from InteractiveRefineLib.engine.models import load_model
from InteractiveRefineLib.training.box_sources import load_sources
from InteractiveRefineLib.training.train_box import validation_cases

torch.set_num_threads(1)
new, new_m = load_model(sys.argv[1])
old2, old2_m = load_model(sys.argv[2])
old3, old3_m = load_model(sys.argv[3])
cfg3 = dict(new_m["input"], slicewise=True)
models2d = {"new 2D net": (new, new_m["input"]), "old pnet2d": (old2, old2_m["input"])}
models3d = {"new 2D net slice by slice": (wrap_for(new, dict(new_m, input=cfg3), 3), cfg3),
            "old pcnet3d": (old3, old3_m["input"])}
res = {d: defaultdict(lambda: defaultdict(list)) for d in ("2d", "3d")}
secs = defaultdict(list)
cpu = torch.device("cpu")
for group, v, l, m, boxes2d, box3d in validation_cases(load_sources("val")):
    for b in boxes2d:
        k = b.lo[0]
        res["2d"][group]["filled_box"].append(dice(b.mask(m.shape)[k], m[k]))
        for name, (net, cfg) in models2d.items():
            p = predict_box(net, cfg, v.image, b, cpu)
            res["2d"][group][name].append(dice(p.mask[k], m[k]))
            secs[name].append(p.seconds)
    res["3d"][group]["filled_box"].append(dice(box3d.mask(m.shape), m))
    for name, (net, cfg) in models3d.items():
        p = predict_box(net, cfg, v.image, box3d, cpu)
        res["3d"][group][name].append(dice(p.mask, m))
        secs[name].append(p.seconds)
for dim, models in (("2d", models2d), ("3d", models3d)):
    names = ["filled_box"] + list(models)
    print(f"\n### {dim.upper()} boxes, validation structures (mean Dice)\n")
    print(group_means_table(res[dim], names, count="filled_box"))
print("\nmedian seconds per box (1 thread, shared machine): "
      + ", ".join(f"{n} {np.median(s):.3f}" for n, s in secs.items()))
