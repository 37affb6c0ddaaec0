"""The organs of fold-0 training patients with each organ's largest slice, as the propagation studies of this
folder (and ../fewshot_propagation_test8/auto_dark.py, with each test patient's own fold) read them: (patient,
image, label map, the setting-2 model of the organ's group, organ, largest slice, the organ's slices,
reference mask)."""
import json

import numpy as np

from FewShotSegLib.engine.models import fold_model_name, models_dir
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, organ_slices
from FewShotSegLib.engine.segment import FewShotSegmenter


def fold0_organs(ds, cases, fold_of=None):
    """`fold_of` (patient -> fold) picks another fold's models per patient (default: fold 0 for all)."""
    for pid in cases:
        img, lab = ds.load(pid)
        fold = 0 if fold_of is None else fold_of[pid]
        for group, organs in CHAOS_GROUPS.items():
            seg = FewShotSegmenter(models_dir() / f"{fold_model_name(2, fold, group)}.json", device="cpu")
            for organ in organs:
                z = organ_slices(lab, organ)
                k = int(z[np.argmax([(lab[i] == organ).sum() for i in z])])
                yield pid, img, lab, seg, organ, k, z, lab == organ


def test8_organs(ds):
    """fold0_organs over the 8 test patients of the InteractiveRefine split, each with the models of the fold
    where it is a query patient (../fewshot_propagation_test8)."""
    from pathlib import Path

    from FewShotSegLib.engine.protocol import fold_cases
    split = Path(__file__).resolve().parents[2] / "InteractiveRefine/Resources/Splits/chaos_t2spir.json"
    test = json.loads(split.read_text())["test"]
    fold_of = {q: f for f in range(5) for q in fold_cases(ds.case_ids, f)["query"]}
    return fold0_organs(ds, test, fold_of)


def support_slice(largest: int, z, which: str) -> int:
    """The annotated slice of the studies: the organ's largest, middle, or the one at 25% of its slices `z`."""
    return {"largest": largest, "middle": int(z[len(z) // 2]), "p25": int(z[int(0.25 * len(z))])}[which]
