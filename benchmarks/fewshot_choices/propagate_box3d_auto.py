"""The 3D box pass of same-scan propagation with the AUTOMATIC range, on fold-0 TRAINING patients only
(chaos_19, chaos_22, chaos_13, chaos_31), setting-2 fold-0 models, support = the organ's largest slice:
propagation without (`prop`) and with the pass (`box3`, three views). Usage (repository root):
python benchmarks/fewshot_choices/propagate_box3d_auto.py OUT.jsonl chaos_19,chaos_22,chaos_13,chaos_31"""
import json
import sys

import torch
from fold0_organs import fold0_organs  # this folder

from FewShotSegLib.engine.propagate import box3d_pass, box_network, propagate
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.metrics import dice

torch.set_num_threads(2)
ds = DecathlonDataset("../shared/data/chaos-t2spir")
box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
cases = sys.argv[2].split(",")
for c in cases:  # an unknown case stops here, before OUT (perhaps an earlier run's records) is overwritten
    ds.case(c)
with open(sys.argv[1], "w") as out:
    for pid, img, lab, seg, organ, k, z, ref in fold0_organs(ds, cases):
        m = propagate(seg, img, lab, k, organ, box_segmenter=box, box3d_views=None).labels == organ
        b3 = box3d_pass(img, m, box, 3)
        b3[k] = ref[k]  # the annotated slice stays as annotated, as in propagate
        out.write(json.dumps({"case": pid, "label": organ, "range": "auto", "prop": dice(m, ref),
                              "box3": dice(b3, ref)}) + "\n")
