"""The automatic range with and without its intensity stop (propagate `dark_stop`, chosen on training
patients: ../fewshot_choices/auto_dark_stop.md), on the 8 test patients of the InteractiveRefine split, as
run.py measures them (the shipped setting-2 model of the fold where the patient is a query, the box network
carried slice to slice, support = the organ's largest slice; `--support middle|p25` for the other supports).
Usage (repository root): python benchmarks/fewshot_propagation_test8/auto_dark.py OUT.jsonl [--support S]"""
import json
import sys

import numpy as np
import torch

from FewShotSegLib.engine.models import fold_model_name, models_dir
from FewShotSegLib.engine.propagate import DARK_STOP, propagate
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, fold_cases, organ_slices
from FewShotSegLib.engine.segment import FewShotSegmenter
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter

torch.set_num_threads(1)
support = sys.argv[sys.argv.index("--support") + 1] if "--support" in sys.argv else "largest"
ds = DecathlonDataset("../shared/data/chaos-t2spir")
box = BoxSegmenter(device="cpu")
test = json.load(open("InteractiveRefine/Resources/Splits/chaos_t2spir.json"))["test"]
fold_of = {q: f for f in range(5) for q in fold_cases(ds.case_ids, f)["query"]}
with open(sys.argv[1], "w") as out:
    for pid in test:
        img, lab = ds.load(pid)
        for group, organs in CHAOS_GROUPS.items():
            seg = FewShotSegmenter(models_dir() / f"{fold_model_name(2, fold_of[pid], group)}.json", device="cpu")
            for organ in organs:
                z = organ_slices(lab, organ)
                k = {"largest": int(z[np.argmax([(lab[i] == organ).sum() for i in z])]),
                     "middle": int(z[len(z) // 2]), "p25": int(z[int(0.25 * len(z))])}[support]
                rec = {"case": pid, "label": organ, "support": support, "support_slice": k,
                       "range": [int(z[0]), int(z[-1]) + 1]}
                for name, dark in (("auto", None), ("auto_dark", DARK_STOP)):
                    s = propagate(seg, img, lab, k, organ, box_segmenter=box, dark_stop=dark)
                    rec[name], rec[f"{name}_slices"] = dice(s.labels == organ, lab == organ), list(s.slices)
                out.write(json.dumps(rec) + "\n")
                out.flush()
