"""The automatic range with the regrowth stop on the carried masks (propagate `carried_regrow`, chosen on
training patients: ../fewshot_choices/auto_regrow_stop.md), on the 8 test patients of the InteractiveRefine
split, as auto_dark.py measures them (the shipped setting-2 model of the fold where the patient is a query, the
box network carried slice to slice; support = the organ's largest, middle or 25% slice). The run without it is
the dark stop's record (results_auto_dark*.jsonl, column auto_dark): where the new run differs, the run without
the stop is repeated here (auto_dark_rerun) to show the difference is the stop's.
Usage (repository root): python benchmarks/fewshot_propagation_test8/auto_regrow.py OUT.jsonl [--support S]"""
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fewshot_choices"))
from fold0_organs import support_slice, test8_organs  # noqa: E402  (../fewshot_choices)

from FewShotSegLib.engine.propagate import box_network, propagate  # noqa: E402
from InteractiveRefineLib.core.data import DecathlonDataset  # noqa: E402
from InteractiveRefineLib.core.metrics import dice  # noqa: E402

torch.set_num_threads(1)
support = sys.argv[sys.argv.index("--support") + 1] if "--support" in sys.argv else "largest"
before_file = HERE / ("results_auto_dark.jsonl" if support == "largest" else f"results_auto_dark_{support}.jsonl")
before = {(r["case"], r["label"]): r for r in map(json.loads, open(before_file))}
ds = DecathlonDataset("../shared/data/chaos-t2spir")
box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
with open(sys.argv[1], "w") as out:
    for pid, img, lab, seg, organ, k, z, ref in test8_organs(ds):
        k = support_slice(k, z, support)
        old = before[(pid, organ)]
        assert old["support_slice"] == k
        rec = {"case": pid, "label": organ, "support": support, "support_slice": k, "range": old["range"],
               "auto_dark": old["auto_dark"], "auto_dark_slices": old["auto_dark_slices"]}
        s = propagate(seg, img, lab, k, organ, box_segmenter=box)
        rec["auto_regrow"], rec["auto_regrow_slices"] = dice(s.labels == organ, ref), list(s.slices)
        if list(s.slices) != old["auto_dark_slices"] or abs(rec["auto_regrow"] - old["auto_dark"]) > 1e-9:
            s = propagate(seg, img, lab, k, organ, box_segmenter=box, carried_regrow=None)
            rec["auto_dark_rerun"] = dice(s.labels == organ, ref)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        print(pid, organ, round(rec["auto_dark"], 4), round(rec["auto_regrow"], 4), rec.get("auto_dark_rerun"),
              flush=True)
