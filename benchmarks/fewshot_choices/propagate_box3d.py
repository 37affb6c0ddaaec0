"""A lead for same-scan propagation (issue 12), measured on TRAINING patients only (fold-0 training patients
chaos_19, chaos_22, chaos_13, chaos_31: not test patients of either split), setting-2 fold-0 models, support =
the organ's largest slice, reference range: after `propagate` without its 3D pass (box network per slice, exemplar
tuning), InteractiveRefine's 3D box network in the propagated mask's bounding box, with one or three views
(`box1`, `box3`), or the propagated mask adopted and refined without scribbles (`adopt1`, `adopt3`); the
annotated slice is kept as annotated. Also the union, intersection and majority vote of the three-view variants.
Usage (repository root): python benchmarks/fewshot_choices/propagate_box3d.py OUT.jsonl CASES; then the table:
python benchmarks/fewshot_choices/propagate_box3d.py OUT.jsonl --table"""
import json
import sys
import time

import numpy as np
import torch
from fold0_organs import fold0_organs  # this folder

from FewShotSegLib.engine.propagate import box_network, propagate
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.session import InteractiveSession

VARIANTS = ["prop", "box1", "adopt1", "box3", "adopt3", "union3", "inter3", "vote3"]


def table(path):
    recs = [json.loads(line) for line in open(path)]
    print(f"{len(recs)} cases; Dice %\n")
    print("| variant | liver | right kidney | left kidney | spleen | mean |\n|---|---|---|---|---|---|")
    for v in VARIANTS:
        per = [100 * np.mean([r[v] for r in recs if r["label"] == o]) for o in (1, 2, 3, 4)]
        print(f"| {v} | " + " | ".join(f"{x:.2f}" for x in per) + f" | **{np.mean(per):.2f}** |")


def run(path, cases):
    torch.set_num_threads(2)
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    with open(path, "a") as out:
        for pid, img, lab, seg, organ, k, z, ref in fold0_organs(ds, cases):
            t0 = time.perf_counter()
            m = propagate(seg, img, lab, k, organ, slices=(int(z[0]), int(z[-1]) + 1), box_segmenter=box,
                          box3d_views=None).labels == organ  # propagation as it was before the 3D pass
            rec = {"case": pid, "label": organ, "prop": dice(m, ref),
                   "prop_s": round(time.perf_counter() - t0, 1)}
            b, masks = box_from_mask(m), {}
            for views in (1, 3):
                t0 = time.perf_counter()
                cfg = RefineConfig(views3d=views)
                bm = InteractiveSession(img, box, config=cfg, device="cpu", validate=False).set_box(b)
                s2 = InteractiveSession(img, box, config=cfg, device="cpu", validate=False)
                s2.adopt(m, b)
                am = s2.refine(mode="unsupervised")
                for name, mask in ((f"box{views}", bm), (f"adopt{views}", am)):
                    mask[k] = ref[k]  # the annotated slice stays as annotated
                    masks[name], rec[name] = mask, dice(mask, ref)
                rec[f"s{views}"] = round(time.perf_counter() - t0, 1)
            b3, a3 = masks["box3"], masks["adopt3"]
            rec.update(union3=dice(m | b3, ref), inter3=dice(m & b3, ref),
                       vote3=dice((m.astype(int) + b3 + a3) >= 2, ref))
            out.write(json.dumps(rec) + "\n")
            out.flush()


if __name__ == "__main__":
    if sys.argv[2:] == ["--table"]:
        table(sys.argv[1])
    else:
        run(sys.argv[1], sys.argv[2].split(","))
