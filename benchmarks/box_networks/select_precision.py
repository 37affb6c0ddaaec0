"""bfloat16 CPU inference (BoxSegmenter precision "auto") against float32, and the three-view depth limit
(networks.THREE_VIEWS_MAX_DEPTH), on the validation structures of box_sources.py only (never test or evaluation
data). Tight boxes, the box step (network + CRF, InteractiveSession.set_box); 2D: three slices per structure,
3D: the whole structure with one view and with three views without the depth limit (thin boxes keep one view;
the limit is then applied from the records: a box whose three-view grid is deeper takes its one-view result).
Usage (repository root): python benchmarks/box_networks/select_precision.py [--hip 6]
    [--records benchmarks/box_networks/select_precision.jsonl] > benchmarks/box_networks/select_precision.md"""
import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from val_cases import load_records, validation_subset  # this folder (the script's own)

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.inference import BoxSegmenter, three_view_depth
from InteractiveRefineLib.engine.session import InteractiveSession

ap = argparse.ArgumentParser()
ap.add_argument("--hip", type=int, default=6, help="validation hippocampus subjects")
ap.add_argument("--records", type=Path, default=Path(__file__).with_name("select_precision.jsonl"))
ap.add_argument("--limits", default="24,32,36,40,44,48", help="depth limits to tabulate")
a = ap.parse_args()
torch.set_num_threads(1)
PRECISIONS = ("fp32", "auto")
done = load_records(a.records)
segs = {p: BoxSegmenter(device="cpu", precision=p) for p in PRECISIONS}
configs = {1: RefineConfig(views3d=1), 3: RefineConfig(views3d=3, three_views_max_depth=None)}
_, manifest = segs["fp32"].model(3)
with a.records.open("a") as out:
    for group, v, label, m, boxes2d, box3d in validation_subset(a.hip):
        key = (v.name, int(label))
        if key in done:
            continue
        depth = three_view_depth(box3d, v.image, manifest["input"])
        rec = dict(group=group, case=v.name, label=int(label), depth=int(depth))
        for p, seg in segs.items():
            s = InteractiveSession(v.image, seg, validate=False)
            rec[f"2d_{p}"] = float(np.mean([dice(s.set_box(b)[b.lo[0]], m[b.lo[0]]) for b in boxes2d]))
            for views, cfg in configs.items():
                rec[f"3d_v{views}_{p}"] = dice(InteractiveSession(v.image, seg, config=cfg, validate=False)
                                               .set_box(box3d), m)
        out.write(json.dumps(rec) + "\n")
        out.flush()
        done[key] = rec


def group_means(value) -> dict:
    per = defaultdict(list)
    for r in done.values():
        per[r["group"]].append(value(r))
    return {g: float(np.mean(x)) for g, x in sorted(per.items())}


def row(name: str, means: dict) -> str:
    cells = " | ".join(f"{x:.3f}" for x in means.values())
    return f"| {name} | {cells} | **{np.mean(list(means.values())):.3f}** |"


groups = list(group_means(lambda r: 0.0))
head = "| variant | " + " | ".join(groups) + " | mean of groups |\n|---|" + "---|" * (len(groups) + 1)
print(f"# bfloat16 inference and the three-view depth limit (validation structures, {a.hip} hippocampus subjects)\n")
print("Box step (network + CRF), mean Dice per group.\n")
print(head)
for col, name in (("2d", "2D"), ("3d_v1", "3D one view"), ("3d_v3", "3D three views, no depth limit")):
    for p in PRECISIONS:
        print(row(f"{name}, {p}", group_means(lambda r, k=f"{col}_{p}": r[k])))
diffs = {c: [abs(r[f"{c}_fp32"] - r[f"{c}_auto"]) for r in done.values()] for c in ("2d", "3d_v1", "3d_v3")}
print("\nLargest per-structure difference auto - fp32: " +
      ", ".join(f"{c} {max(d):.4f} (mean {np.mean(d):.4f})" for c, d in diffs.items()) + "\n")
print("## Three views up to a grid depth (auto precision; deeper boxes take their one-view result)\n")
print(head)
for limit in [int(x) for x in a.limits.split(",")]:
    print(row(f"three views up to {limit} slices",
              group_means(lambda r, n=limit: r["3d_v3_auto"] if r["depth"] <= n else r["3d_v1_auto"])))
print("\nGrid depths (three views): " + ", ".join(f"{g} {sorted(r['depth'] for r in done.values() if r['group'] == g)}"
                                                for g in groups))
