"""The automatic range with and without its intensity stop (propagate `dark_stop`, chosen on training
patients: ../fewshot_choices/auto_dark_stop.md), on the 8 test patients of the InteractiveRefine split, as
run.py measures them (the shipped setting-2 model of the fold where the patient is a query, the box network
carried slice to slice, support = the organ's largest slice; `--support middle|p25` for the other supports).
The regrowth stop added since (auto_regrow.py) is off here, as it was when these were measured.
Usage (repository root): python benchmarks/fewshot_propagation_test8/auto_dark.py OUT.jsonl [--support S]"""
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fewshot_choices"))
from fold0_organs import support_slice, test8_organs  # noqa: E402  (../fewshot_choices)

from FewShotSegLib.engine.propagate import DARK_STOP, box_network, propagate  # noqa: E402
from InteractiveRefineLib.core.data import DecathlonDataset  # noqa: E402
from InteractiveRefineLib.core.metrics import dice  # noqa: E402

torch.set_num_threads(1)
support = sys.argv[sys.argv.index("--support") + 1] if "--support" in sys.argv else "largest"
ds = DecathlonDataset("../shared/data/chaos-t2spir")
box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
with open(sys.argv[1], "w") as out:
    for pid, img, lab, seg, organ, k, z, ref in test8_organs(ds):
        k = support_slice(k, z, support)
        rec = {"case": pid, "label": organ, "support": support, "support_slice": k,
               "range": [int(z[0]), int(z[-1]) + 1]}
        for name, dark in (("auto", None), ("auto_dark", DARK_STOP)):
            s = propagate(seg, img, lab, k, organ, box_segmenter=box, dark_stop=dark, carried_regrow=None)
            rec[name], rec[f"{name}_slices"] = dice(s.labels == organ, ref), list(s.slices)
        out.write(json.dumps(rec) + "\n")
        out.flush()
