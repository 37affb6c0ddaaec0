"""Which slice of a few-shot prediction should seed "follow" (engine/follow.py), measured without propagating:
on the cases of seed_propagation.py (TRAINING patients only: 4 seeded pairs per fold of the fold's training
patients without the 8 InteractiveRefine test patients; one drawn support slice, the shipped automatic window),
each rule's seed slice is scored by the Dice of the predicted mask on that slice with the reference (and whether
it lies on the organ: Dice > 0.5), as is, and redone by the 2D box network in its bounding box (+5%), as
propagation redoes every other slice. Rules:
- centre: the middle predicted slice (shipped);
- confident: the predicted slice with the highest mean foreground probability over its mask;
- centre_confident: the middle one of the predicted slices whose mean probability is at least the median's;
- area_median: the slice where the predicted volume reaches half its total along the axis.
  python benchmarks/fewshot_auto_range/seed_rules.py N_PAIRS OUT.jsonl [--dataset DIR]"""
import numpy as np
from single_slice_cache import ORGANS, append_row, one_slice_study, read_rows, window  # this folder

from FewShotSegLib.engine.propagate import box_network, box_slice
from FewShotSegLib.engine.segment import make_supports
from InteractiveRefineLib.core.metrics import dice


def seeds(mask: np.ndarray, prob: np.ndarray) -> dict:
    """Each rule's seed slice (axis 0) of a non-empty predicted mask; `prob` the foreground probability."""
    on = np.flatnonzero(mask.any((1, 2)))
    conf = np.array([prob[z][mask[z]].mean() for z in on])
    steady = on[conf >= np.median(conf)]
    cum = np.cumsum(mask.sum((1, 2)))
    return {"centre": int(on[len(on) // 2]), "confident": int(on[int(np.argmax(conf))]),
            "centre_confident": int(steady[len(steady) // 2]),
            "area_median": int(np.searchsorted(cum, cum[-1] / 2))}


def main():
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    out, cases = one_slice_study("seed rules of follow, scored on the seed slice")
    for name, fold, organ, s_img, one, k, q_img, q_lab, seg in cases:
        res = window(seg, make_supports(s_img, one, k, [organ]), s_img, one, organ, q_img)
        m, ref = res.labels == organ, q_lab == organ
        row = {"case": name, "fold": fold, "organ": organ, "window": dice(m, ref)}
        if m.any():
            for rule, z in seeds(m, res.probabilities[organ]).items():
                redone = box_slice(q_img, m[z], z, 0, box)
                row[rule] = {"seed": z, "dice": dice(m[z], ref[z]), "box_dice": dice(redone, ref[z])}
        append_row(out, row)
    rows = read_rows(out)
    print(f"{len(rows)} cases; seed-slice Dice % (as predicted / redone by the box network), on the organ %")
    for rule in ("centre", "confident", "centre_confident", "area_median"):
        cells = []
        for o, organ in ORGANS.items():
            got = [r[rule] for r in rows if r["organ"] == o and rule in r]
            cells.append(f"{organ} {100 * np.mean([g['dice'] for g in got]):.1f}/"
                         f"{100 * np.mean([g['box_dice'] for g in got]):.1f}")
        got = [r[rule] for r in rows if rule in r]
        print(f"{rule:17s} " + ", ".join(cells) + f"; mean {100 * np.mean([g['dice'] for g in got]):.1f}/"
              f"{100 * np.mean([g['box_dice'] for g in got]):.1f}, on the organ "
              f"{100 * np.mean([g['dice'] > 0.5 for g in got]):.0f}%")


if __name__ == "__main__":
    main()
