"""The GPU run's stored networks scored with the training's validation as it reads 3D boxes since session 18
(three views, 16 slices, as box3d.json) instead of one view: which snapshot would each mean have picked?
Usage (repository root): python benchmarks/box_networks/s18_3d/rescore_snapshots.py OUT.md"""
import sys
from pathlib import Path

import numpy as np
import torch

from InteractiveRefineLib.engine.models import load_model
from InteractiveRefineLib.training.box_sources import load_sources
from InteractiveRefineLib.training.train_box import BoxTrainConfig, validate, validation_cases

RUN = Path("checkpoints/box2d_gpu_s16")
NETS = {6000: RUN / "pnet2d_box.json", **{it: RUN / "snapshots" / f"it{it}.json" for it in range(15000, 20001, 1000)}}
GROUPS = ("chaos", "chaos_kidneys_val", "cord_gm_wm", "fetal", "hippocampus")


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cases = validation_cases(load_sources("val", limit=BoxTrainConfig().val_hippocampus))
    lines = ["| iteration | score | mean 2D | mean 3D | " + " | ".join(f"{g} 3D" for g in GROUPS) + " |",
             "|---|---|---|---|" + "---|" * len(GROUPS)]
    for it, path in NETS.items():
        net, manifest = load_model(path)
        s = validate(net, manifest["input"], cases, torch.device("cpu"))
        m2, m3 = (np.mean([s[f"{g}_{d}"] for g in GROUPS]) for d in ("2d", "3d"))
        lines.append(f"| {it} | {s['score']:.4f} | {m2:.4f} | {m3:.4f} | "
                     + " | ".join(f"{s[f'{g}_3d']:.3f}" for g in GROUPS) + " |")
        print(lines[-1], flush=True)
    out.write_text("# The GPU run's networks, validation with 3D boxes read as box3d.json reads them "
                   "(rescore_snapshots.py)\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
