"""FewShotSeg result -> "Refine this segment" (InteractiveSession.adopt) -> robot scribbles, on the embedded
held-out patient: python benchmarks/fewshot_then_refine/run.py (from the repository root; writes results.md
next to this file). Compared with starting from a tight 3D box around the reference (the CNN's own start)."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "InteractiveRefine"), str(ROOT / "FewShotSeg")]

import numpy as np  # noqa: E402

from FewShotSegLib.panel.controller import FewShotController, FewShotRequest, default_support_slice  # noqa: E402
from InteractiveRefineLib.core.data import DecathlonDataset  # noqa: E402
from InteractiveRefineLib.core.prompts import box_from_mask, main_object  # noqa: E402
from InteractiveRefineLib.core.sample import sample_dataset  # noqa: E402
from InteractiveRefineLib.engine.session import InteractiveSession  # noqa: E402
from InteractiveRefineLib.evaluation.robot import robot_rounds  # noqa: E402

ROUNDS = 3


def main():
    ds = DecathlonDataset(sample_dataset("chaos"))
    s_img, s_lab = ds.load("chaos_36")
    q_img, q_lab = ds.load("chaos_8")
    controller = FewShotController()
    lines = ["# FewShotSeg -> Refine this segment (chaos_36 support -> chaos_8 query, CPU)", "",
             "Dice after the start and after each robot scribble + refinement (3D).", "",
             "| organ | start | " + " | ".join(f"round {r}" for r in range(ROUNDS + 1)) + " |",
             "|---|---|" + "---|" * (ROUNDS + 1)]
    for organ in (2, 3):
        support, ref = s_lab == organ, q_lab == organ
        z = np.flatnonzero(ref.any(axis=(1, 2)))
        controller.start(FewShotRequest(s_img, {"s": support}, default_support_slice(support), q_img,
                                        query_range=("slices", int(z[0]), int(z[-1])), device="cpu"))
        fewshot = controller.wait(300).result.masks["s"]
        for start in ("FewShotSeg result, adopted", "tight 3D box, CNN"):
            session = InteractiveSession(q_img, device="cpu")
            if start.startswith("FewShotSeg"):
                session.adopt(fewshot, reference=ref)
            else:
                session.set_box(box_from_mask(main_object(ref)), reference=ref)
            dices = robot_rounds(session, ref, ROUNDS, np.random.default_rng(0))
            lines.append(f"| {ds.labels[organ]} | {start} | " + " | ".join(f"{d:.3f}" for d in dices) + " |")
            print(lines[-1], flush=True)
    controller.shutdown()
    (Path(__file__).parent / "results.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
