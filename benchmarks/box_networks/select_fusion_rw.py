"""The 2D box network's probability mixed with the random walker's (w * network + (1 - w) * random walker,
thresholded at 0.5), on the validation structures of box_sources.py only (never test or evaluation data): could
the classical method's boundary help the network on 2D boxes? Tight boxes, three slices per structure; bifseg =
the box step (network + CRF). Usage (repository root):
    python benchmarks/box_networks/select_fusion_rw.py [--hip 6] > benchmarks/box_networks/select_fusion_rw.jsonl
then `python benchmarks/box_networks/select_fusion_rw.py --table` prints the table from the records."""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

RECORDS = Path(__file__).with_name("select_fusion_rw.jsonl")
ap = argparse.ArgumentParser()
ap.add_argument("--hip", type=int, default=6, help="validation hippocampus subjects")
ap.add_argument("--table", action="store_true", help="print the table of the committed records")
a = ap.parse_args()

if a.table:
    recs = [json.loads(line) for line in RECORDS.read_text().splitlines()]
    keys = [k for k in recs[0] if k not in ("group", "case", "label", "k")]
    per = defaultdict(lambda: defaultdict(list))
    for r in recs:
        for k in keys:
            per[r["group"]][k].append(r[k])
    print("| group | boxes | " + " | ".join(keys) + " |\n|---|---|" + "---|" * len(keys))
    means = defaultdict(list)
    for g, d in sorted(per.items()):
        for k in keys:
            means[k].append(np.mean(d[k]))
        print(f"| {g} | {len(d[keys[0]])} | " + " | ".join(f"{np.mean(d[k]):.3f}" for k in keys) + " |")
    print("| **mean of groups** | | " + " | ".join(f"**{np.mean(means[k]):.3f}**" for k in keys) + " |")
    sys.exit(0)

from val_cases import validation_subset  # noqa: E402  (this folder, the script's own)

from InteractiveRefineLib.core.metrics import dice  # noqa: E402
from InteractiveRefineLib.engine.inference import BoxSegmenter  # noqa: E402
from InteractiveRefineLib.engine.session import InteractiveSession  # noqa: E402
from InteractiveRefineLib.evaluation.baselines import graphcut_segment, random_walker_segment  # noqa: E402

torch.set_num_threads(1)
seg = BoxSegmenter(device="cpu")
for group, v, label, m, boxes2d, box3d in validation_subset(a.hip):
    for b in boxes2d:
        k = b.lo[0]
        gt = m[k]
        bif = InteractiveSession(v.image, seg, validate=False).set_box(b)[k]
        p = seg.predict(v.image, b, validate=False).probability[k]
        r = random_walker_segment(v.image, b).probability[k]
        rec = dict(group=group, case=v.name, label=int(label), k=int(k), bifseg=dice(bif, gt), cnn=dice(p >= .5, gt),
                   rw=dice(r >= .5, gt), gc=dice(graphcut_segment(v.image, b).probability[k] > .5, gt),
                   filled=dice(b.mask(m.shape)[k], gt))
        for w in (0.75, 0.5, 0.25):
            rec[f"mix{w}"] = dice(w * p + (1 - w) * r >= .5, gt)
        print(json.dumps(rec), flush=True)
