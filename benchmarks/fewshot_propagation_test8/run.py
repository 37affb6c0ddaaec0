"""Same-scan propagation on the 8 test patients of the InteractiveRefine split (README.md): per organ, the
support copy and propagation from the largest slice (reference and automatic range), and from the middle slice
and the slice at 25% of the organ (reference range); with InteractiveRefine's box network carried slice to
slice unless --no-box. Prints the mean Dice per organ of each column.
Usage (repository root): python benchmarks/fewshot_propagation_test8/run.py OUT.jsonl [--no-box]"""
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fewshot_choices"))
from fold0_organs import support_slice, test8_organs  # noqa: E402  (../fewshot_choices)

from FewShotSegLib.engine.propagate import box_network, propagate  # noqa: E402
from FewShotSegLib.engine.segment import make_supports  # noqa: E402
from FewShotSegLib.evaluation.evaluate import support_copy  # noqa: E402
from InteractiveRefineLib.core.data import DecathlonDataset  # noqa: E402
from InteractiveRefineLib.core.metrics import dice  # noqa: E402

KEYS = ("support_copy", "propagate_gt", "propagate_auto", "propagate_gt_middle", "propagate_gt_p25")


def main():
    torch.set_num_threads(1)
    box = None if "--no-box" in sys.argv else box_network("cpu")  # the 0.5 cut propagation uses
    res = {}
    with open(sys.argv[1], "w") as out:
        for pid, img, lab, seg, organ, k, z, ref in test8_organs(DecathlonDataset("../shared/data/chaos-t2spir")):
            z0, z1 = int(z[0]), int(z[-1]) + 1
            cp = np.zeros_like(ref)
            cp[z0:z1] = support_copy(make_supports(img, lab, k, [organ]), img, z0, z1, np.zeros(z1 - z0, int))
            name = seg.manifest["name"]  # chaos_s2_f<fold>_<group>
            rec = {"case": pid, "fold": int(name.split("_f")[1].split("_")[0]), "model": name,
                   "label": organ, "support_slice": k, "range": [z0, z1 - 1], "support_copy": dice(cp, ref),
                   "propagate_gt": dice(propagate(seg, img, lab, k, organ, slices=(z0, z1),
                                                  box_segmenter=box).labels == organ, ref),
                   "propagate_auto": dice(propagate(seg, img, lab, k, organ, box_segmenter=box).labels == organ, ref)}
            for name in ("middle", "p25"):
                kk = support_slice(k, z, name)
                rec[f"{name}_slice"] = kk
                rec[f"propagate_gt_{name}"] = dice(propagate(seg, img, lab, kk, organ, slices=(z0, z1),
                                                             box_segmenter=box).labels == organ, ref)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            for key in KEYS:
                res.setdefault((key, organ), []).append(rec[key])
    for key in KEYS:
        per = [float(np.mean(res[(key, o)])) for o in (1, 2, 3, 4)]
        print(key, [round(p, 3) for p in per], "mean", round(float(np.mean(per)), 4))


if __name__ == "__main__":
    main()
