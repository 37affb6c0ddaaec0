"""The 2D box step (round 0) on the validation structures read as the benchmarks read the data (every slice; every
4th of a hippocampus, every 12th of a fetal tissue), for several network cuts x CRF weights (lam_2d; 0: the
thresholded network, no CRF). Validation data only. Usage (repository root):
python benchmarks/box_networks/s18_box2d/box2d_sweep.py OUT.md"""
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # select_refinement.py's boxes
from select_refinement import benchmark_boxes2d  # noqa: E402

from InteractiveRefineLib.core.metrics import dice  # noqa: E402
from InteractiveRefineLib.engine.finetune import RefineConfig  # noqa: E402
from InteractiveRefineLib.engine.inference import BoxSegmenter  # noqa: E402
from InteractiveRefineLib.engine.session import InteractiveSession  # noqa: E402
from InteractiveRefineLib.training.box_sources import load_sources  # noqa: E402
from InteractiveRefineLib.training.train_box import validation_cases  # noqa: E402

CUTS = (0.3, 0.4, 0.5)
LAMS = (0.0, 1.0, 3.0, 5.0)
SHIPPED = (0.3, 3.0)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    cases = validation_cases(load_sources("val", limit=6))
    segs = {cut: BoxSegmenter(device="cpu", threshold2d=cut) for cut in CUTS}
    per = defaultdict(lambda: defaultdict(list))  # (cut, lam) -> group -> structure means
    for group, v, label, m, _, _ in cases:
        boxes = benchmark_boxes2d(group, m)
        for cut in CUTS:
            for lam in LAMS:
                cfg = RefineConfig(lam_2d=lam) if lam else RefineConfig(crf_on_box=False)
                d = [dice(InteractiveSession(v.image, segs[cut], device="cpu", config=cfg).set_box(b)[b.lo[0]],
                          m[b.lo[0]]) for b in boxes]
                per[(cut, lam)][group].append(float(np.mean(d)))
        print(v.name, label, flush=True)
    groups = sorted(per[SHIPPED])
    means = {k: {g: np.mean(r[g]) for g in groups} for k, r in per.items()}
    lines = ["| cut | lam_2d | " + " | ".join(groups) + " | mean of groups | vs shipped |",
             "|---|---|" + "---|" * (len(groups) + 2)]
    base = np.mean(list(means[SHIPPED].values()))
    for (cut, lam), g in sorted(means.items()):
        mean = np.mean(list(g.values()))
        lines.append(f"| {cut} | {lam:g}{' (no CRF)' if not lam else ''} | " + " | ".join(f"{g[x]:.3f}" for x in groups)
                     + f" | {mean:.4f} | {mean - base:+.4f} |")
    out.write_text("# 2D box step on the validation structures, benchmark slices (box2d_sweep.py); shipped: cut "
                   f"{SHIPPED[0]}, lam {SHIPPED[1]:g}\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
