"""Selection of RefineConfig.prior_weight on CHAOS training patients (never the test patients): adopted
starts (the reference eroded by 3 voxels in-plane, or shifted by 6 voxels), 3 robot rounds, kidneys, 3D.
Run from the repository root with ../shared/data present; its output is select_prior_weight.log."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "InteractiveRefine")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from InteractiveRefineLib.core.data import DecathlonDataset  # noqa: E402
from InteractiveRefineLib.core.prompts import main_object  # noqa: E402
from InteractiveRefineLib.engine.finetune import RefineConfig  # noqa: E402
from InteractiveRefineLib.engine.session import InteractiveSession  # noqa: E402
from InteractiveRefineLib.evaluation.robot import robot_rounds  # noqa: E402

CASES, WEIGHTS = ("chaos_1", "chaos_2", "chaos_3", "chaos_19"), (0.3, 0.5, 0.7)


def main():
    torch.set_num_threads(2)
    ds = DecathlonDataset(str(ROOT.parent / "shared" / "data" / "chaos-t2spir"))
    results = {}
    for case in CASES:
        image, label = ds.load(case)
        for organ in (2, 3):
            ref = main_object(label == organ)
            starts = {"eroded": ndimage.binary_erosion(ref, structure=np.ones((1, 3, 3)), iterations=3),
                      "shifted": np.roll(ref, 6, axis=2)}
            for kind, start in starts.items():
                for weight in WEIGHTS:
                    session = InteractiveSession(image, device="cpu", config=RefineConfig(prior_weight=weight))
                    session.adopt(start, reference=ref)
                    dices = robot_rounds(session, ref, 3, np.random.default_rng(0))
                    results.setdefault((kind, weight), []).append(dices)
                    print(case, organ, kind, weight, [round(d, 3) for d in dices], flush=True)
    for key, runs in sorted(results.items()):
        n = min(len(r) for r in runs)
        print(key, np.round(np.mean([r[:n] for r in runs], axis=0), 3))


if __name__ == "__main__":
    main()
