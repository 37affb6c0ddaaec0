"""Which of the shipped 3D path's two differences from the training's validation (three views instead of one; the
CRF after the network) reverses the order of snapshots 6000 and 15000 on the CHAOS validation patients' kidneys
(and their liver and spleen)? The 3D box step for each network x {1, 3 views} x {network alone, + CRF}.
Usage (repository root): python benchmarks/box_networks/s18_3d/views_crf.py OUT.md"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from InteractiveRefineLib.core.data import DecathlonDataset, split_for
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.training.train_box import install_models

NETS = {"6000 (shipped)": "checkpoints/box2d_gpu_s16/pnet2d_box.json",
        "15000": "checkpoints/box2d_gpu_s16/snapshots/it15000.json"}
ORGANS = {2: "right kidney", 3: "left kidney", 1: "liver", 4: "spleen"}


def main(out: Path) -> None:
    torch.set_num_threads(1)
    ds = DecathlonDataset("../shared/data/chaos-t2spir")
    rows = {}
    for name, path in NETS.items():
        p2, p3 = install_models(Path(path), Path(tempfile.mkdtemp()))
        for views in (1, 3):
            seg = BoxSegmenter(model2d=p2, model3d=p3, device="cpu", views3d=views, threshold3d=0.5)
            for crf in (False, True):
                for case in split_for(ds)["val"]:
                    image, label = ds.load(case)
                    for lab, organ in ORGANS.items():
                        m = label.astype(int) == lab
                        s = InteractiveSession(image, seg, device="cpu", config=RefineConfig(crf_on_box=crf))
                        d = dice(s.set_box(box_from_mask(m)).astype(bool), m)
                        rows.setdefault((name, views, crf), {}).setdefault(organ, []).append(d)
                print(name, views, crf, {o: round(float(np.mean(v)), 3) for o, v in rows[(name, views, crf)].items()},
                      flush=True)
    lines = ["| network | views | CRF | kidneys (4) | liver, spleen (4) |", "|---|---|---|---|---|"]
    for (name, views, crf), r in rows.items():
        kid = np.mean(r["right kidney"] + r["left kidney"])
        ls = np.mean(r["liver"] + r["spleen"])
        lines.append(f"| {name} | {views} | {'yes' if crf else 'no'} | {kid:.3f} | {ls:.3f} |")
    out.write_text("# CHAOS validation patients, 3D box step: views x CRF (views_crf.py)\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
