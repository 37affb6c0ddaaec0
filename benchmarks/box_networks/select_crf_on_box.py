"""Box-only result with and without the round-0 CRF (RefineConfig.crf_on_box, lam), on the validation
structures of box_sources.py only (never test or evaluation data). Tight boxes; 2D: three slices per
structure, 3D: the whole structure. Usage: python select_crf_on_box.py > select_crf_on_box.md"""
from collections import defaultdict

import torch
from tables import group_means_table  # this folder (the script's own)

from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.training.box_sources import load_sources
from InteractiveRefineLib.training.train_box import validation_cases

torch.set_num_threads(1)
seg = BoxSegmenter(device="cpu")
configs = {"no CRF": RefineConfig(crf_on_box=False), "CRF lam 1": RefineConfig(lam=1.0),
           "CRF lam 3 (default)": RefineConfig()}
res = {d: defaultdict(lambda: defaultdict(list)) for d in ("2d", "3d")}
for group, v, l, m, boxes2d, box3d in validation_cases(load_sources("val", limit=10)):
    for name, cfg in configs.items():
        s = InteractiveSession(v.image, seg, config=cfg, validate=False)
        for b in boxes2d:
            k = b.lo[0]
            res["2d"][group][name].append(dice(s.set_box(b)[k], m[k]))
        res["3d"][group][name].append(dice(s.set_box(box3d), m))
for dim in ("2d", "3d"):
    print(f"\n### {dim.upper()}, validation structures (10 hippocampus subjects), mean Dice\n")
    print(group_means_table(res[dim], list(configs)))
