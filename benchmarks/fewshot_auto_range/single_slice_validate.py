"""The shipped one-slice window itself (FewShotSegmenter.segment with auto_range_info of a one-slice label, as
`segment --range auto` and the panel's Auto run it) against the component step alone, on single_slice_cache.py's
cases (TRAINING patients only): Dice over the whole volume and voxels labelled on slices without the organ.
  nice -n 10 python benchmarks/fewshot_auto_range/single_slice_validate.py N_PAIRS OUT.jsonl [--dataset DIR]
"""
import numpy as np
from single_slice_cache import append_row, one_slice_study, organ_means, read_rows  # this folder (the script's own)

from FewShotSegLib.engine.segment import auto_range_info, make_supports
from InteractiveRefineLib.core.metrics import dice


def main():
    out, cases = one_slice_study("the shipped one-slice window vs the component step alone")
    for name, fold, organ, s_img, one, k, q_img, q_lab, seg in cases:
        sup = make_supports(s_img, one, k, [organ])
        ref = q_lab == organ
        off = ~ref.any((1, 2))
        row = {"case": name, "fold": fold, "organ": organ}
        for variant, kw in (("none", {}), ("window", {"auto": auto_range_info(s_img, one, [organ], q_img)})):
            m = seg.segment(sup, q_img, auto_range=True, **kw).labels == organ
            row[variant] = {"dice": dice(m, ref), "off_voxels": int(m[off].sum()), "voxels": int(m.sum())}
        append_row(out, row)
        print(name, round(row["none"]["dice"], 3), round(row["window"]["dice"], 3), flush=True)
    rows = read_rows(out)
    for v in ("none", "window"):
        print(organ_means(rows, lambda r, v=v: r[v]["dice"], v, 7)
              + f"  off-organ voxels/case {np.mean([r[v]['off_voxels'] for r in rows]):.0f}"
              f" ({np.sum([r[v]['off_voxels'] for r in rows]) / max(np.sum([r[v]['voxels'] for r in rows]), 1):.1%}"
              f" of labelled), n={len(rows)}")


if __name__ == "__main__":
    main()
