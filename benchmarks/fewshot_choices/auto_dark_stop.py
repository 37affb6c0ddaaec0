"""The automatic range's intensity stop (propagate `dark_stop`), chosen on fold-0 TRAINING patients only
(never test patients of either split): chaos_19/22/13/31 (the choice set of the other propagation studies)
and chaos_20/32/33/34/38 (the other fold-0 training patients outside the InteractiveRefine test split), fold-0
setting-2 models, the box network carried slice to slice, automatic range.

`collect` runs propagation WITHOUT the stop and records, per propagated slice, its mask's area, true
positives and mean intensity. A stop only ever ends a direction earlier, and until it does the propagation
is the same, so `table` replays each threshold on the records exactly (Dice from the kept slices).
Usage (repository root):
    python benchmarks/fewshot_choices/auto_dark_stop.py collect OUT.jsonl chaos_19,chaos_22 [largest|middle|p25 [FOLD]]
    python benchmarks/fewshot_choices/auto_dark_stop.py table FILE.jsonl [FILE.jsonl ...]"""
import json
import sys

import numpy as np

THRESHOLDS = (None, 1.2, 1.4, 1.5, 1.6, 1.8, 2.0)


def collect(path, cases, support="largest", fold=0):
    import torch
    from fold0_organs import fold0_organs, support_slice  # this folder

    from FewShotSegLib.engine.propagate import box_network, propagate
    from InteractiveRefineLib.core.data import DecathlonDataset
    torch.set_num_threads(2)
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    with open(path, "w") as out:
        for pid, img, lab, seg, organ, k, z, ref in fold0_organs(ds, cases, {c: int(fold) for c in cases}):
            k = support_slice(k, z, support)
            m = propagate(seg, img, lab, k, organ, box_segmenter=box, dark_stop=None,
                          carried_regrow=None).labels == organ
            ann = img.array[k][ref[k]]
            rows = [dict(z=int(i), area=int(m[i].sum()), tp=int((m[i] & ref[i]).sum()),
                         mean=float(img.array[i][m[i]].mean())) for i in np.flatnonzero(m.any((1, 2)))]
            out.write(json.dumps(dict(case=pid, organ=organ, support=support, k=k, ref_total=int(ref.sum()),
                                      ann_mean=float(ann.mean()), ann_std=float(ann.std()), rows=rows)) + "\n")
            out.flush()


def kept(rec, dark, regrow=None):
    """The slices a run keeps: outwards from the annotated slice until the first one darker than `dark` (None:
    no dark stop) or, with `regrow` (propagate.RegrowthStop's (shrink, grow[, ceiling])), its regrowth stop."""
    rows = {r["z"]: r for r in rec["rows"]}
    k = rec["k"]
    keep = [rows[k]] if k in rows else []
    if regrow is not None:
        from FewShotSegLib.engine.propagate import RegrowthStop
    for d in (1, -1):
        growth = None if regrow is None or k not in rows else RegrowthStop(rows[k]["area"], *regrow)
        z = k + d
        while z in rows and (dark is None or rows[z]["mean"] >= rec["ann_mean"] - dark * rec["ann_std"]):
            if growth is not None:
                if growth.ends(rows[z]["area"]):
                    break
                growth.keep(rows[z]["area"])
            keep.append(rows[z])
            z += d
    return keep


def organ_dice(recs, dark, regrow=None):
    """Mean Dice % of each organ (liver, right kidney, left kidney, spleen) over `recs`, replayed by `kept`."""
    per = []
    for organ in (1, 2, 3, 4):
        d = []
        for r in recs:
            if r["organ"] == organ:
                k = kept(r, dark, regrow)
                d.append(2 * sum(x["tp"] for x in k) / (sum(x["area"] for x in k) + r["ref_total"]))
        per.append(100 * float(np.mean(d)))
    return per


def table(paths):
    recs = [json.loads(line) for p in paths for line in open(p)]
    cases = sorted({r["case"] for r in recs})
    print(f"{len(recs)} organs of {', '.join(cases)}; support: {sorted({r['support'] for r in recs})}; Dice %\n")
    print("| dark_stop | liver | right kidney | left kidney | spleen | mean |\n|---|---|---|---|---|---|")
    for dark in THRESHOLDS:
        per = organ_dice(recs, dark)
        print(f"| {'off' if dark is None else dark} | " + " | ".join(f"{x:.2f}" for x in per)
              + f" | **{np.mean(per):.2f}** |")


if __name__ == "__main__":
    if sys.argv[1] == "collect":
        collect(sys.argv[2], sys.argv[3].split(","), *sys.argv[4:6])
    else:
        table(sys.argv[2:])
