"""The organs of fold-0 training patients with each organ's largest slice, as the propagation studies of this
folder read them: (patient, image, label map, the fold-0 setting-2 model of the organ's group, organ,
largest slice, the organ's slices, reference mask)."""
import numpy as np

from FewShotSegLib.engine.models import fold_model_name, models_dir
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, organ_slices
from FewShotSegLib.engine.segment import FewShotSegmenter


def fold0_organs(ds, cases):
    for pid in cases:
        img, lab = ds.load(pid)
        for group, organs in CHAOS_GROUPS.items():
            seg = FewShotSegmenter(models_dir() / f"{fold_model_name(2, 0, group)}.json", device="cpu")
            for organ in organs:
                z = organ_slices(lab, organ)
                k = int(z[np.argmax([(lab[i] == organ).sum() for i in z])])
                yield pid, img, lab, seg, organ, k, z, lab == organ
