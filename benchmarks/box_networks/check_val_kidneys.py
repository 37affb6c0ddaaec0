"""Would the validation set have seen the kidney loss? The CHAOS VALIDATION patients' kidneys (never trained
on by any box network; not test patients) with the shipped network and candidates: tight 2D boxes on the
slices at 25/50/75% of each kidney (as train_box.validate) and the 3D box, the box step as the session runs it
(network + CRF; 3D with the shipped default, three views). Since session 11 these kidneys are a validation group
and this check is part of the shipping rule (docs/box_networks.md).
Usage (repository root): python benchmarks/box_networks/check_val_kidneys.py OUT.md "NAME=MODEL.json" ...
(check_val_kidneys.md: "candidate (6800)=checkpoints/box2d/best_it6800.json")"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from InteractiveRefineLib.core.data import DecathlonDataset, split_for
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.models import default_model_path, read_manifest
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.training.box_sources import Volume
from InteractiveRefineLib.training.train_box import install_models, validation_cases

KIDNEYS = {2: "right kidney", 3: "left kidney"}


def box_step(segmenter, image, box):
    return InteractiveSession(image, segmenter, device="cpu").set_box(box).astype(bool)


def main(out: Path, candidates) -> None:
    torch.set_num_threads(1)
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    its = read_manifest(default_model_path(2)).get("training", {}).get("iterations_at_best")
    # every network at its own 0.5 cut (a candidate's cut is chosen after it; the shipped 2D cut is 0.3 since
    # the twelfth session, select_threshold_s12.md), so the networks compare as trained
    segs = {f"shipped ({its} it.)" if its else "shipped": BoxSegmenter(device="cpu", threshold2d=0.5, threshold3d=0.5)}
    for arg in candidates:
        name, path = arg.split("=", 1)
        p2, p3 = install_models(Path(path), Path(tempfile.mkdtemp()))
        segs[name] = BoxSegmenter(model2d=p2, model3d=p3, device="cpu", threshold2d=0.5, threshold3d=0.5)
    rows = {name: {"2d": [], "3d": []} for name in segs}
    lines = ["| case | kidney | network | 2D (3 slices) | 3D |", "|---|---|---|---|---|"]
    volumes = [Volume(case, "chaos_kidneys", *ds.load(case), tuple(KIDNEYS), KIDNEYS)
               for case in split_for(ds)["val"]]
    for _, v, lab, m, boxes2d, box3d in validation_cases(volumes):  # the slices train_box.validate reads
        for net, seg in segs.items():
            d2 = [dice(box_step(seg, v.image, b)[b.lo[0]], m[b.lo[0]]) for b in boxes2d]
            d3 = dice(box_step(seg, v.image, box3d), m)
            rows[net]["2d"] += d2
            rows[net]["3d"].append(d3)
            lines.append(f"| {v.name} | {KIDNEYS[lab]} | {net} | {np.mean(d2):.3f} | {d3:.3f} |")
    lines += ["", "| network | mean 2D | mean 3D |", "|---|---|---|"]
    lines += [f"| {net} | {np.mean(r['2d']):.3f} | {np.mean(r['3d']):.3f} |" for net, r in rows.items()]
    title = ("# CHAOS validation patients' kidneys: the shipped box network and " + ", ".join(list(segs)[1:])
             + " (box step: network + CRF; written by check_val_kidneys.py)")
    out.write_text(title + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
