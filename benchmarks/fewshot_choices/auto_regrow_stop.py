"""The automatic range's regrowth stop on the carried masks (propagate `carried_regrow`, RegrowthStop), chosen
on fold-0 TRAINING patients only by exact replay of auto_dark_stop.py's records (propagation without the dark
stop, the box network carried slice to slice, each slice's carried area, true positives and mean intensity):
chaos_13/19/22/31 with the largest, middle and 25% slice as the support, chaos_20/32/33/34/38 with the largest.
A stop only ever ends a direction earlier, so the shipped dark stop (1.5) and each (shrink, grow) replay exactly.
`check CASE:ORGAN:SUPPORT ...` reruns propagation with the shipped stops on such records and prints its Dice
beside the replay's (the replay must be exact).
`variants`: each ceiling on every record set (how the shipped 1.1 was chosen). `heldout`: the shipped stop on records of
folds 2-4 collected after the choice.
Usage (repository root):
    python benchmarks/fewshot_choices/auto_regrow_stop.py [check CASE:ORGAN:SUPPORT ... | variants | heldout]"""
import json
import sys
from pathlib import Path

import numpy as np
from auto_dark_stop import kept, organ_dice  # this folder (the records' own script)

from FewShotSegLib.engine.propagate import CARRIED_REGROW, DARK_STOP

HERE = Path(__file__).resolve().parent
SETS = {"largest, chaos_13/19/22/31": "auto_dark_stop_choice.jsonl",
        "largest, chaos_20/32/33/34/38": "auto_dark_stop_heldout.jsonl",
        "middle, chaos_13/19/22/31": "auto_dark_stop_middle.jsonl",
        "25%, chaos_13/19/22/31": "auto_dark_stop_p25.jsonl"}
# collected after the choice (seventh session), a check on more training patients, not used to choose: fold 0's
# models on chaos_20/32/33/34/38 from the middle and 25% slices, fold 1's on chaos_1/2/3 (fold-1 training patients)
CHECK_SETS = {"middle, chaos_20/32/33/34/38": "auto_regrow_more_f0_middle.jsonl",
              "25%, chaos_20/32/33/34/38": "auto_regrow_more_f0_p25.jsonl",
              "largest, chaos_1/2/3 (fold 1)": "auto_regrow_more_f1_largest.jsonl",
              "middle, chaos_1/2/3 (fold 1)": "auto_regrow_more_f1_middle.jsonl",
              "25%, chaos_1/2/3 (fold 1)": "auto_regrow_more_f1_p25.jsonl"}
# collected after the ceiling was chosen (eighth session), never used to choose: folds 2, 3 and 4's models on
# three of each fold's training patients (outside the InteractiveRefine test split)
HELDOUT_SETS = {f"{s}, {cases} (fold {f})": f"auto_regrow_more_f{f}_{s}.jsonl"
                for f, cases in ((2, "chaos_32/33/34"), (3, "chaos_13/20/38"), (4, "chaos_2/3/22"))
                for s in ("largest", "middle", "p25")}
SHRINK = (0.7, 0.8, 0.85, 0.9, 0.95)
GROW = (1.15, 1.2, 1.25, 1.3, 1.4)


def organ_means(recs, regrow):
    """Each organ's mean Dice % with the shipped dark stop and `regrow` (None: no regrowth stop)."""
    return organ_dice(recs, DARK_STOP, regrow)


def main():
    sets = {name: [json.loads(line) for line in open(HERE / f)] for name, f in SETS.items()}
    names = list(sets)
    print("Mean Dice % of the 4 organs per record set (dark stop 1.5 on in every row)\n")
    print("| shrink, grow | " + " | ".join(names) + " | mean of sets |\n|---|" + "---|" * (len(names) + 1))
    for regrow in [None] + [(s, g) for s in SHRINK for g in GROW]:
        ms = [float(np.mean(organ_means(sets[n], regrow))) for n in names]
        print(f"| {'off' if regrow is None else regrow} | " + " | ".join(f"{m:.2f}" for m in ms)
              + f" | **{np.mean(ms):.2f}** |")
    print("\nPer organ (liver, right kidney, left kidney, spleen), off -> shipped (0.85, 1.25):\n")
    for n in names:
        a, b = organ_means(sets[n], None), organ_means(sets[n], (0.85, 1.25))
        print(f"- {n}: " + ", ".join(f"{x:.1f} -> {y:.1f}" for x, y in zip(a, b)))
    check = {n: [json.loads(line) for line in open(HERE / f)] for n, f in CHECK_SETS.items() if (HERE / f).exists()}
    if check:
        print("\nChecked after the first choice on more training patients, off -> (0.85, 1.25):\n")
        print("| record set | liver | right kidney | left kidney | spleen | mean |\n|---|---|---|---|---|---|")
        for n, recs in check.items():
            a, b = organ_means(recs, None), organ_means(recs, (0.85, 1.25))
            print(f"| {n} | " + " | ".join(f"{x:.1f} -> {y:.1f}" for x, y in zip(a, b))
                  + f" | **{np.mean(a):.2f} -> {np.mean(b):.2f}** |")


def heldout():
    """The shipped stop (with its ceiling) and the stop without the ceiling against none, on HELDOUT_SETS."""
    print("| record set | no stop | (0.85, 1.25) | shipped (0.85, 1.25, 1.1) |\n|---|---|---|---|")
    rows = []
    for n, f in HELDOUT_SETS.items():
        recs = [json.loads(line) for line in open(HERE / f)]
        rows.append([float(np.mean(organ_means(recs, r))) for r in (None, (0.85, 1.25), CARRIED_REGROW)])
        print(f"| {n} | " + " | ".join(f"{x:.2f}" for x in rows[-1]) + " |")
    print("| **mean** | " + " | ".join(f"**{x:.2f}**" for x in np.mean(rows, axis=0)) + " |")


def check(specs):
    import torch
    from fold0_organs import fold0_organs, support_slice  # this folder

    from FewShotSegLib.engine.propagate import box_network, propagate
    from InteractiveRefineLib.core.data import DecathlonDataset
    from InteractiveRefineLib.core.metrics import dice
    torch.set_num_threads(1)
    recs = {(r["case"], r["organ"], r["support"]): r for f in SETS.values() for r in map(json.loads, open(HERE / f))}
    wanted = [(c, int(o), s) for c, o, s in (spec.split(":") for spec in specs)]
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    for pid, img, lab, seg, organ, k, z, ref in fold0_organs(ds, sorted({c for c, _, _ in wanted})):
        for support in [s for c, o, s in wanted if (c, o) == (pid, organ)]:
            r = recs[(pid, organ, support)]
            kept_rows = kept(r, DARK_STOP, CARRIED_REGROW)
            replay = 2 * sum(x["tp"] for x in kept_rows) / (sum(x["area"] for x in kept_rows) + r["ref_total"])
            m = propagate(seg, img, lab, support_slice(k, z, support), organ, box_segmenter=box).labels == organ
            print(f"{pid} organ {organ} {support}: rerun {dice(m, ref):.4f}, replay {replay:.4f}", flush=True)


def variants():
    """The ceiling on all record sets (choice and check): change of each set's mean against no stop."""
    sets = {n: [json.loads(line) for line in open(HERE / f)] for n, f in {**SETS, **CHECK_SETS}.items()}
    print("| variant | " + " | ".join(sets) + " | mean |\n|---|" + "---|" * (len(sets) + 1))
    base = {n: float(np.mean(organ_means(r, None))) for n, r in sets.items()}
    for ceiling in (None, 1.0, 1.05, 1.1, 1.15, 1.2, 1.3):
        for regrow in ((0.85, 1.25), (0.9, 1.25)) if ceiling == 1.1 else ((0.85, 1.25),):
            full = regrow if ceiling is None else (*regrow, ceiling)
            d = [float(np.mean(organ_means(r, full))) - base[n] for n, r in sets.items()]
            print(f"| {regrow}, ceiling {ceiling} | " + " | ".join(f"{x:+.2f}" for x in d) + f" | {np.mean(d):+.2f} |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["check"]:
        check(sys.argv[2:])
    elif sys.argv[1:2] == ["variants"]:
        variants()
    elif sys.argv[1:2] == ["heldout"]:
        heldout()
    else:
        main()
