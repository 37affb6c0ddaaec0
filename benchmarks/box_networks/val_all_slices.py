"""The CHAOS VALIDATION patients (not test patients) read as the CHAOS benchmark reads the test patients: a tight
2D box on EVERY slice where the organ covers at least 20 pixels (benchmark.py's min_area), not only the three
quartile slices of train_box.validate. The box step as the session runs it (network + CRF, each network at the
2D cut given, the shipped 0.3 by default). Per organ, and per slice-area third (small / middle / large slices).
Session 18: does the validation see what the test benchmark's all-slices protocol sees (docs/box_networks.md)?
Usage (repository root): python benchmarks/box_networks/val_all_slices.py OUT.md [--cut C] "NAME=MODEL.json" ...
(NAME=shipped uses the installed models)"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from InteractiveRefineLib.core.data import DecathlonDataset, split_for
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask, main_object, validate_box
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.evaluation.benchmark import benchmark_slices
from InteractiveRefineLib.training.train_box import install_models

ORGANS = {1: "liver", 4: "spleen", 2: "right kidney", 3: "left kidney"}


def segmenter(spec: str, cut: float):
    name, path = spec.split("=", 1)
    if path == "shipped":
        return name, BoxSegmenter(device="cpu", threshold2d=cut)
    p2, p3 = install_models(Path(path), Path(tempfile.mkdtemp()))
    return name, BoxSegmenter(model2d=p2, model3d=p3, device="cpu", threshold2d=cut)


def slice_scores(seg, image, mask):
    """(area, Dice) of the box step on every slice the CHAOS benchmark reads (benchmark.benchmark_slices)."""
    drawn = main_object(mask)
    out = []
    for k in benchmark_slices(drawn):
        box = validate_box(box_from_mask(drawn, 0, k), image.shape)
        pred = InteractiveSession(image, seg, device="cpu").set_box(box).astype(bool)
        out.append((int(drawn[k].sum()), dice(pred[k], mask[k])))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--cut", type=float, default=0.3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    segs = dict(segmenter(c, args.cut) for c in args.candidates)
    per = {(net, org): [] for net in segs for org in ORGANS.values()}
    lines = ["| case | organ | network | slices | mean Dice |", "|---|---|---|---|---|"]
    for case in split_for(ds)["val"]:
        image, label = ds.load(case)
        for lab, organ in ORGANS.items():
            mask = label.astype(int) == lab
            for net, seg in segs.items():
                scores = slice_scores(seg, image, mask)
                per[(net, organ)] += scores
                lines.append(f"| {case} | {organ} | {net} | {len(scores)} | {np.mean([d for _, d in scores]):.3f} |")
                print(lines[-1], flush=True)
    lines += ["", "Mean over slices (both patients); thirds by the slice's organ area within each organ:", "",
              "| organ | network | all | small third | middle third | large third |", "|---|---|---|---|---|---|"]
    for (net, organ), scores in per.items():
        areas = np.array([a for a, _ in scores])
        ds_ = np.array([d for _, d in scores])
        edges = np.quantile(areas, [1 / 3, 2 / 3])
        thirds = [ds_[areas <= edges[0]], ds_[(areas > edges[0]) & (areas <= edges[1])], ds_[areas > edges[1]]]
        lines.append(f"| {organ} | {net} | {ds_.mean():.3f} | " + " | ".join(f"{t.mean():.3f}" for t in thirds) + " |")
    title = f"# CHAOS validation patients, every slice (box step: network + CRF, 2D cut {args.cut}; val_all_slices.py)"
    args.out.write_text(title + "\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines[-2 - len(per):]))


if __name__ == "__main__":
    main()
