"""Which cut of InteractiveRefine's 2D box network should same-scan propagation use? Its settings were chosen with
the network's own 0.5; since the twelfth session boxes drawn by a user cut it at 0.3 (pnet2d.json). Measured on
TRAINING patients only (fold-0 training patients chaos_19, chaos_22, chaos_13, chaos_31; setting-2 fold-0
models), support = the organ's largest slice, reference range, propagation as shipped otherwise.
Usage (repository root): PYTHONPATH=InteractiveRefine:FewShotSeg:benchmarks/fewshot_choices python
benchmarks/fewshot_choices/propagate_cut.py OUT.jsonl [CASES]; the table: ... OUT.jsonl --table"""
import json
import sys

import numpy as np
import torch
from fold0_organs import fold0_organs  # this folder

from FewShotSegLib.engine.propagate import propagate
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter

CUTS = (0.5, 0.3)


def table(path):
    recs = [json.loads(line) for line in open(path)]
    print(f"{len(recs)} cases; Dice %\n\n| cut | liver | right kidney | left kidney | spleen | mean |")
    print("|---|---|---|---|---|---|")
    for c in CUTS:
        per = [100 * np.mean([r[str(c)] for r in recs if r["label"] == o]) for o in (1, 2, 3, 4)]
        print(f"| {c} | " + " | ".join(f"{x:.2f}" for x in per) + f" | **{np.mean(per):.2f}** |")


def run(path, cases):
    torch.set_num_threads(2)
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    boxes = {c: BoxSegmenter(device="cpu", threshold2d=c) for c in CUTS}
    with open(path, "a") as out:
        for pid, img, lab, seg, organ, k, z, ref in fold0_organs(ds, cases):
            rec = {"case": pid, "label": organ}
            for c, box in boxes.items():
                m = propagate(seg, img, lab, k, organ, slices=(int(z[0]), int(z[-1]) + 1), box_segmenter=box)
                rec[str(c)] = dice(m.labels == organ, ref)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(rec, flush=True)


if __name__ == "__main__":
    if "--table" in sys.argv:
        table(sys.argv[1])
    else:
        default = ["chaos_19", "chaos_22", "chaos_13", "chaos_31"]
        run(sys.argv[1], sys.argv[2].split(",") if len(sys.argv) > 2 else default)
