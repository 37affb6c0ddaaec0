import sys, json
sys.path[:0]=['InteractiveRefine','FewShotSeg']
import numpy as np, torch; torch.set_num_threads(1)
from FewShotSegLib.engine.propagate import propagate
from FewShotSegLib.engine.segment import FewShotSegmenter, make_supports
from FewShotSegLib.engine.models import fold_model_name, models_dir
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, fold_cases, organ_slices
from FewShotSegLib.evaluation.evaluate import support_copy
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.metrics import dice
ds = DecathlonDataset('/work/shared/data/chaos-t2spir')
from InteractiveRefineLib.engine.inference import BoxSegmenter
BOX = BoxSegmenter(device="cpu") if "--no-box" not in sys.argv else None
test = json.load(open('InteractiveRefine/Resources/Splits/chaos_t2spir.json'))['test']
fold_of = {q: f for f in range(5) for q in fold_cases(ds.case_ids, f)["query"]}
out = open(sys.argv[1], "w")
res = {}
KEYS = ("support_copy", "propagate_gt", "propagate_auto", "propagate_gt_middle", "propagate_gt_p25")
for pid in test:
    img, lab = ds.load(pid)
    for group, organs in CHAOS_GROUPS.items():
        seg = FewShotSegmenter(models_dir()/f"{fold_model_name(2, fold_of[pid], group)}.json", device="cpu")
        for organ in organs:
            z = organ_slices(lab, organ); k = int(z[np.argmax([(lab[i] == organ).sum() for i in z])])
            z0, z1 = int(z[0]), int(z[-1]) + 1; ref = lab == organ
            sup = make_supports(img, lab, k, [organ])
            cp = np.zeros_like(ref); cp[z0:z1] = support_copy(sup, img, z0, z1, np.zeros(z1 - z0, int))
            r = propagate(seg, img, lab, k, organ, slices=(z0, z1), box_segmenter=BOX)
            rec = {"case": pid, "fold": fold_of[pid], "model": fold_model_name(2, fold_of[pid], group), "label": organ,
                   "support_slice": k, "range": [z0, z1 - 1], "support_copy": dice(cp, ref), "propagate_gt": dice(r.labels == organ, ref)}
            rec["propagate_auto"] = dice(propagate(seg, img, lab, k, organ, box_segmenter=BOX).labels == organ, ref)
            for name, kk in (("middle", int(z[len(z) // 2])), ("p25", int(z[int(0.25 * len(z))]))):
                rec[f"{name}_slice"] = kk
                rec[f"propagate_gt_{name}"] = dice(propagate(seg, img, lab, kk, organ, slices=(z0, z1), box_segmenter=BOX).labels == organ, ref)
            out.write(json.dumps(rec) + "\n"); out.flush()
            for a in KEYS: res.setdefault((a, organ), []).append(rec[a])
for a in KEYS:
    per = [float(np.mean(res[(a, o)])) for o in (1, 2, 3, 4)]
    print(a, [round(p, 3) for p in per], "mean", round(float(np.mean(per)), 4))
