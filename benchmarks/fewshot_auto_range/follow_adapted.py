"""Follow after exemplar adaptation: propagate with the adapted network or with the base one? (TRAINING
patients only: the cases of single_slice_validate.py, 4 seeded pairs per fold without the 8 InteractiveRefine
test patients; the panel's case: one drawn support slice, the automatic window, the box network carried slice
to slice.) Per case: the fold's setting-2 model adapted to the one exemplar (AdaptConfig's defaults, as
`segment --adapt`), its window; then that window followed through the query with the base network
(`follow_base`, what `segment --follow --adapt` and the panel did) and with the adapted network
(`follow_adapted`, what `evaluate --follow --adapt` did); the same two without the box network
(`*_nobox`, as `evaluate --follow` propagates: protocol-clean). Dice over the whole volume.
  python benchmarks/fewshot_auto_range/follow_adapted.py N_PAIRS OUT.jsonl [--dataset DIR]"""
import numpy as np
from single_slice_cache import append_row, one_slice_study, organ_means, read_rows, window  # this folder

from FewShotSegLib.engine.adapt import adapt_segmenter
from FewShotSegLib.engine.follow import follow
from FewShotSegLib.engine.propagate import box_network
from FewShotSegLib.engine.segment import make_supports
from InteractiveRefineLib.core.metrics import dice

KEYS = ("window_adapted", "follow_base", "follow_adapted", "follow_base_nobox", "follow_adapted_nobox")


def main():
    out, cases = one_slice_study("follow after exemplar adaptation: base or adapted network", threads=2)
    box = box_network("cpu")  # the 0.5 cut propagation uses (since the twelfth session)
    for name, fold, organ, s_img, one, k, q_img, q_lab, seg in cases:
        sup = make_supports(s_img, one, k, [organ])
        ref = q_lab == organ
        adapted = adapt_segmenter(seg, sup, q_img)
        m = window(adapted, sup, s_img, one, organ, q_img).labels == organ
        row = {"case": name, "fold": fold, "organ": organ, "window_adapted": dice(m, ref),
               "follow_base": dice(follow(seg, q_img, m, box_segmenter=box), ref),
               "follow_adapted": dice(follow(adapted, q_img, m, box_segmenter=box), ref),
               "follow_base_nobox": dice(follow(seg, q_img, m), ref),
               "follow_adapted_nobox": dice(follow(adapted, q_img, m), ref)}
        append_row(out, row)
        print(name, {key: round(row[key], 3) for key in KEYS}, flush=True)
    rows = read_rows(out)
    for key in KEYS:
        print(organ_means(rows, lambda r, key=key: r[key], key, 15) + f"  n={len(rows)}")
    for fold in range(5):
        fr = [r for r in rows if r["fold"] == fold]
        if fr:
            print(f"fold {fold}: " + " ".join(f"{key} {np.mean([r[key] for r in fr]) * 100:.2f}" for key in KEYS))


if __name__ == "__main__":
    main()
