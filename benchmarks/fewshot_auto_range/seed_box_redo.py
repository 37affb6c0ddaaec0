"""Follow (engine/follow.py) with its seed slice redone by the 2D box network first: on the cases of
seed_propagation.py (TRAINING patients only: 4 seeded pairs per fold of the fold's training patients without
the 8 InteractiveRefine test patients; one drawn support slice, the shipped automatic window, the fold's
setting-2 model), the middle predicted slice seeds same-scan propagation through the query (automatic range
with its stops, the box network carried slice to slice, as `segment --follow`), once as predicted (shipped) and
once redone by the box network in its bounding box (+5%), as propagation redoes every other slice
(seed_rules.md: the seed slice's Dice 63.0 -> 68.7). Dice over the whole volume.
  python benchmarks/fewshot_auto_range/seed_box_redo.py N_PAIRS OUT.jsonl [--dataset DIR]"""
import numpy as np
from single_slice_cache import append_row, one_slice_study, organ_means, read_rows, variant_dice, window  # here

from FewShotSegLib.engine.follow import seed_slice
from FewShotSegLib.engine.propagate import box_network, box_slice, propagate
from FewShotSegLib.engine.segment import make_supports
from InteractiveRefineLib.core.metrics import dice


def main():
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    out, cases = one_slice_study("follow with the seed slice as predicted or redone by the box network")
    for name, fold, organ, s_img, one, k, q_img, q_lab, seg in cases:
        m = window(seg, make_supports(s_img, one, k, [organ]), s_img, one, organ, q_img).labels == organ
        ref = q_lab == organ
        row = {"case": name, "fold": fold, "organ": organ, "window": dice(m, ref)}
        z = seed_slice(m)
        if z is not None:
            for how, seed in (("as_predicted", m[z]), ("box_redone", box_slice(q_img, m[z], z, 0, box))):
                label = np.zeros(q_lab.shape, np.uint8)
                label[z] = seed
                p = propagate(seg, q_img, label, z, 1, box_segmenter=box).labels == 1 if seed.any() else m
                row[how] = {"seed_dice": dice(seed, ref[z]), "dice": dice(p, ref)}
        append_row(out, row)
    rows = read_rows(out)
    for v in ("window", "as_predicted", "box_redone"):
        print(organ_means(rows, lambda r, v=v: variant_dice(r, v), v, 12, ", ", "; mean ") + f" (n={len(rows)})")


if __name__ == "__main__":
    main()
