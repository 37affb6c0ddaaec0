"""Test-time augmentation of the box network (networks.Symmetric: each plane read under 1, 2, 4 or 8 in-plane
flips/transpositions, probabilities averaged) on the validation structures only (box_sources.py "val": CHAOS
validation patients' liver and spleen, validation hippocampus subjects, cord grey/white matter of T2* and MT,
fetal cortex and corpus callosum on GA21-25). Tight boxes, box only: the network alone and the session's box
step (network + CRF); 2D: three slices per structure (25/50/75% of its extent), 3D: the whole structure with
the shipped one view. Records per structure go to --records (JSON lines); a re-run computes only what is missing.
Usage (repository root): python benchmarks/box_networks/select_symmetries.py [--sym2d 1,2,4,8] [--sym3d 1,2,4]
    [--hip N] [--records FILE] > select_symmetries.md"""
import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from tables import group_means_table  # this folder (the script's own)
from val_cases import load_records, validation_subset  # this folder

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.session import InteractiveSession


def measure(seg: BoxSegmenter, image, box, m, k=None) -> dict:
    """Network-alone and box-step Dice of one box (slice k of a 2D box), and the box step's seconds."""
    net = seg.predict(image, box, validate=False).mask
    t0 = time.perf_counter()
    step = InteractiveSession(image, seg, validate=False).set_box(box)
    secs = time.perf_counter() - t0
    if k is not None:
        net, step, m = net[k], step[k], m[k]
    return {"net": dice(net, m), "box": dice(step, m), "seconds": secs}


ap = argparse.ArgumentParser()
ap.add_argument("--sym2d", default="1,2,4,8")
ap.add_argument("--sym3d", default="1,2,4")
ap.add_argument("--hip", type=int, default=6, help="validation hippocampus subjects used (of 30)")
ap.add_argument("--records", default="benchmarks/box_networks/select_symmetries.jsonl")
args = ap.parse_args()
torch.set_num_threads(1)
wanted = {"2d": [int(n) for n in args.sym2d.split(",")], "3d": [int(n) for n in args.sym3d.split(",")]}
segs = {n: BoxSegmenter(device="cpu", symmetries=n) for n in sorted(set(sum(wanted.values(), [])))}
path = Path(args.records)
done = load_records(path)
cases = validation_subset(args.hip)
with path.open("a") as f:
    for group, v, label, m, boxes2d, box3d in cases:
        rec = done.setdefault((v.name, int(label)), {"case": v.name, "label": int(label), "group": group})
        fresh = {}
        for n in wanted["2d"]:
            if f"2d {n}" not in rec:
                fresh[f"2d {n}"] = [measure(segs[n], v.image, b, m, b.lo[0]) for b in boxes2d]
        for n in wanted["3d"]:
            if f"3d {n}" not in rec:
                fresh[f"3d {n}"] = measure(segs[n], v.image, box3d, m)
        fresh.setdefault("filled 2d", [dice(b.mask(m.shape)[b.lo[0]], m[b.lo[0]]) for b in boxes2d])
        fresh.setdefault("filled 3d", dice(box3d.mask(m.shape), m))
        if any(k.startswith(("2d", "3d")) for k in fresh):
            rec.update(fresh)
            f.write(json.dumps(dict(rec)) + "\n")
            f.flush()
print(f"{len(cases)} validation structures (2D: up to 3 slices each; 3D: one view)\n")
for dim in ("2d", "3d"):
    names = [f"{n} readings" for n in wanted[dim]]
    res = {"net": defaultdict(lambda: defaultdict(list)), "box": defaultdict(lambda: defaultdict(list))}
    secs = defaultdict(list)
    for group, v, label, *_ in cases:
        r = done[(v.name, int(label))]
        filled = r[f"filled {dim}"] if dim == "2d" else [r["filled 3d"]]
        for kind in res:
            res[kind][group]["filled_box"].extend(filled)
            for n, name in zip(wanted[dim], names):
                got = r[f"{dim} {n}"] if dim == "2d" else [r[f"3d {n}"]]
                res[kind][group][name].extend(x[kind] for x in got)
                if kind == "box":
                    secs[name].extend(x["seconds"] for x in got)
    for kind, title in (("net", "network alone"), ("box", "session box step: network + CRF")):
        print(f"### {dim.upper()} boxes, {title} (mean Dice)\n")
        print(group_means_table(res[kind], ["filled_box"] + names, count="filled_box") + "\n")
    print(f"{dim.upper()} box step seconds, median / max (1 thread, shared machine): "
          + ", ".join(f"{n} {np.median(s):.3f} / {max(s):.3f}" for n, s in secs.items()) + "\n")
