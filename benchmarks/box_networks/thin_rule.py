"""Three views except for thin boxes (networks.THREE_VIEWS_MIN_SIDE), from records already measured: a box
thinner than the threshold along any axis is read with one view, which gives exactly the one-view result
(test_views3d.py), so its one-view record stands in for it. Validation (select_3d_views.jsonl box only,
select_views3d.jsonl rounds) decides the threshold; the evaluation folders are reported, nothing chosen there.
Usage (repository root): PYTHONPATH=InteractiveRefine python benchmarks/box_networks/thin_rule.py > thin_rule.md"""
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from val_cases import validation_subset  # noqa: E402  (this folder)

THRESHOLDS = (0, 8, 10, 12)


def mean_of_groups(per_group):
    means = {g: float(np.mean(v)) for g, v in sorted(per_group.items())}
    return means, float(np.mean(list(means.values())))


def validation():
    recs = defaultdict(dict)
    for line in open(HERE / "select_3d_views.jsonl"):
        r = json.loads(line)
        recs[(r["case"], r["label"])].update(r)
    rounds = defaultdict(dict)
    for line in open(HERE / "select_views3d.jsonl"):
        r = json.loads(line)
        rounds[(r["case"], r["label"])][r["config"]] = r["3d"]["bifseg"]
    sides = {(v.name, int(label)): min(h - lo for lo, h in zip(b.lo, b.hi))
             for _, v, label, _, _, b in validation_subset(6)}
    print("## Validation structures (box step, 30 boxes; select_3d_views.jsonl)\n")
    print("| three views from | " + " | ".join(sorted({r["group"] for r in recs.values()})) + " | mean of groups |")
    print("|---|---|---|---|---|---|")
    for thr in ("one view",) + THRESHOLDS:
        per = defaultdict(list)
        for key, r in recs.items():
            three = thr != "one view" and sides[key] >= thr
            per[r["group"]].append(r["box 3:16:16" if three else "box 1:16:16"])
        means, mean = mean_of_groups(per)
        name = thr if thr == "one view" else f"{thr} voxels"
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means.values()) + f" | **{mean:.3f}** |")
    print("\n## Validation rounds (bifseg, 3D; select_views3d.jsonl: chaos, cord, 3 hippocampus subjects)\n")
    groups = {k: recs[k]["group"] for k in rounds}
    print("| three views from | round | " + " | ".join(sorted(set(groups.values()))) + " | mean | never lower? |")
    print("|---|---|---|---|---|---|---|")
    for thr in ("one view",) + THRESHOLDS:
        first = None
        for rnd in range(4):
            per = defaultdict(list)
            for key, cfg in rounds.items():
                three = thr != "one view" and sides[key] >= thr
                per[groups[key]].append(cfg["views3" if three else "safe_lr1e-4"][rnd])
            means, mean = mean_of_groups(per)
            first = first or means
            ok = "" if rnd == 0 else ("yes" if all(means[g] >= first[g] - 1e-9 for g in means) else
                                      "no: " + ",".join(g for g in means if means[g] < first[g] - 1e-9))
            name = thr if thr == "one view" else f"{thr} voxels"
            print(f"| {name} | {rnd} | " + " | ".join(f"{m:.3f}" for m in means.values()) + f" | {mean:.3f} | {ok} |")


def evaluation(one, three, thr, title):
    def load(folder):
        out = {}
        for line in open(HERE / folder / "results.jsonl"):
            r = json.loads(line)
            if r["dim"] == "3d" and r["method"] == "bifseg" and r.get("jitter", 0) == 0:
                out[(r["case"], r["label"], r["round"])] = r
        return out
    a, b = load(one), load(three)
    keys = sorted(set(a) & set(b))
    rows = defaultdict(lambda: defaultdict(list))
    thin = set()
    for k in keys:
        side = min(h - lo for lo, h in zip(b[k]["box_lo"], b[k]["box_hi"]))
        if side < thr:
            thin.add(k[:2])
        rows[k[2]]["one view"].append(a[k]["dice"])
        rows[k[2]]["three views"].append(b[k]["dice"])
        rows[k[2]][f"three from {thr}"].append((a if side < thr else b)[k]["dice"])
    n = len({k[:2] for k in keys})
    print(f"\n### {title}: {n} structures, {len(thin)} thinner than {thr} voxels ({one} / {three})\n")
    print("| bifseg, 3D | " + " | ".join(f"round {r}" for r in sorted(rows)) + " |")
    print("|---|" + "---|" * len(rows))
    for name in ("one view", "three views", f"three from {thr}"):
        print(f"| {name} | " + " | ".join(f"{np.mean(rows[r][name]):.3f}" for r in sorted(rows)) + " |")


if __name__ == "__main__":
    validation()
    print("\n## Evaluation data (measured after the choice; nothing chosen here)")
    for one, three, title in (("chaos_3d_views1_rounds", "chaos_3d_views3_rounds", "CHAOS kidneys"),
                              ("chaos", "chaos_3d_box_views3", "CHAOS, all organs, box only"),
                              ("hippocampus", "hippocampus_3d_views3", "held-out hippocampus"),
                              ("tumour", "tumour_3d_views3", "brain tumour")):
        evaluation(one, three, 10, title)
