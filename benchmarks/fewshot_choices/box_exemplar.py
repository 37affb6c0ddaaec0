"""Chooses exemplar tuning of the box network in same-scan propagation (`propagate(box_exemplar=...)`) on
InteractiveRefine validation patients only (chaos_19, chaos_22: fold-0 training patients, neither box-network
training nor test patients), with the setting-2 fold-0 models, support = the organ's largest slice,
reference or automatic range. Usage (repository root): python benchmarks/fewshot_choices/box_exemplar.py OUT.jsonl
[--variants none,all_30_1e-4,...] [--cases chaos_19,chaos_22] [--range reference|auto]; prints the table (markdown)."""
import argparse
import json
import time

import numpy as np
import torch
from fold0_organs import fold0_organs  # this folder

from FewShotSegLib.engine.propagate import box_network, propagate
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.exemplar import ExemplarConfig

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--variants", default="none,head_30_1e-3,all_30_1e-4,all_30_3e-4,all_60_1e-4")
ap.add_argument("--cases", default="chaos_19,chaos_22")
ap.add_argument("--data", default="../shared/data/chaos-t2spir")
ap.add_argument("--range", default="reference", choices=["reference", "auto"],
                help="the organ's reference slice range, or automatic (propagation stops where the organ ends)")
a = ap.parse_args()
torch.set_num_threads(1)
ds = DecathlonDataset(a.data)
box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)


def config(v):
    if v == "none":
        return None
    layers, steps, lr = v.split("_")
    return ExemplarConfig(steps=int(steps), lr=float(lr), layers=layers)


res = {}
with open(a.out, "w") as f:
    for pid, img, lab, seg, organ, k, z, ref in fold0_organs(ds, a.cases.split(",")):
        for v in a.variants.split(","):
            t0 = time.perf_counter()
            rng = (int(z[0]), int(z[-1]) + 1) if a.range == "reference" else None
            r = propagate(seg, img, lab, k, organ, slices=rng, box_segmenter=box, box_exemplar=config(v),
                          box3d_views=None)  # this study came before the 3D pass
            rec = {"case": pid, "label": organ, "variant": v, "range": a.range,
                   "dice": dice(r.labels == organ, ref), "slices": [int(r.slices[0]), int(r.slices[1]) - 1],
                   "seconds": round(time.perf_counter() - t0, 2)}
            f.write(json.dumps(rec) + "\n")
            f.flush()
            res.setdefault(v, {}).setdefault(organ, []).append(rec["dice"])
print("| variant | liver | right kidney | left kidney | spleen | mean |\n|---|---|---|---|---|---|")
for v, per in res.items():
    m = [100 * float(np.mean(per[o])) for o in (1, 2, 3, 4)]
    print(f"| {v} | " + " | ".join(f"{x:.2f}" for x in m) + f" | **{np.mean(m):.2f}** |")
