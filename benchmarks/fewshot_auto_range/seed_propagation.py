"""Few-shot to find the organ, same-scan propagation to follow it: after the shipped one-slice automatic
window (as single_slice_validate.py runs it: TRAINING patients only, 4 seeded pairs per fold without the 8
InteractiveRefine test patients), the query slice where the prediction is largest becomes the annotation of
a same-scan propagation through the query itself (propagate: automatic range with its stops, the box
network carried slice to slice); `centre`: the middle slice of the prediction instead. Dice over the whole
volume: `window` (shipped), `largest`, `centre` (each with the seed slice's Dice and its agreement with the
window's prediction).
  python benchmarks/fewshot_auto_range/seed_propagation.py N_PAIRS OUT.jsonl [--dataset DIR]"""
import numpy as np
from single_slice_cache import append_row, one_slice_study, organ_means, read_rows, variant_dice, window  # this folder

from FewShotSegLib.engine.propagate import box_network, propagate
from FewShotSegLib.engine.segment import make_supports
from InteractiveRefineLib.core.metrics import dice


def main():
    out, cases = one_slice_study("few-shot window, then same-scan propagation from its best slice", threads=2)
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    for name, fold, organ, s_img, one, k, q_img, q_lab, seg in cases:
        sup = make_supports(s_img, one, k, [organ])
        ref = q_lab == organ
        m = window(seg, sup, s_img, one, organ, q_img).labels == organ
        row = {"case": name, "fold": fold, "organ": organ, "window": dice(m, ref)}
        areas = m.sum((1, 2))
        on = np.flatnonzero(areas)
        seeds = {"largest": int(np.argmax(areas)), "centre": int(on[len(on) // 2])} if len(on) else {}
        for how, z in seeds.items():
            pseudo = np.zeros_like(q_lab)
            pseudo[z] = m[z] * organ
            p = propagate(seg, q_img, pseudo, z, organ, box_segmenter=box).labels == organ
            row[how] = {"seed": z, "seed_dice": dice(m[z], ref[z]), "dice": dice(p, ref), "agreement": dice(p, m)}
        append_row(out, row)
        print(name, round(row["window"], 3), {h: round(row[h]["dice"], 3) for h in seeds}, flush=True)
    rows = read_rows(out)
    for v in ("window", "largest", "centre"):
        print(organ_means(rows, lambda r, v=v: variant_dice(r, v), v, 7) + f"  n={len(rows)}")


if __name__ == "__main__":
    main()
