"""Cache the network's whole-volume probabilities for the automatic-range study (TRAINING patients only).

For each fold 0-4, the seeded training-patient pairs of `evaluate --validate N` (evaluate.sample_pairs with
seed + fold), each group's test organs: the query's foreground probability on EVERY slice (network grid,
float16) from each of the 3 protocol support slices, with the fold's shipped setting-2 model, component step
not applied. Query/support patients of the fold are never read. Usage:
  nice -n 10 python benchmarks/fewshot_auto_range/cache.py N_PAIRS CACHE_DIR [--dataset DIR]
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from chaos_dataset import add_dataset_argument, open_dataset  # this folder (the script's own)

from FewShotSegLib.engine.models import fold_model_name, models_dir
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, fold_cases, support_chunk_slices
from FewShotSegLib.engine.segment import FewShotSegmenter, make_supports
from FewShotSegLib.engine.slices import image_slices
from FewShotSegLib.evaluation.evaluate import sample_pairs

parser = argparse.ArgumentParser(description="cache the network's whole-volume probabilities (training patients)")
parser.add_argument("n_pairs", type=int)
parser.add_argument("cache", type=Path)
add_dataset_argument(parser)
args = parser.parse_args()
torch.set_num_threads(1)
n_pairs, cache = args.n_pairs, args.cache
cache.mkdir(parents=True, exist_ok=True)
ds = open_dataset(args)
for fold in range(5):
    fc = fold_cases(ds.case_ids, fold)
    pairs = sample_pairs(fc["train"], n_pairs, 0 + fold)
    assert not {c for p in pairs for c in p} & set(fc["query"] + [fc["support"]])
    for group, organs in CHAOS_GROUPS.items():
        seg = FewShotSegmenter(models_dir() / f"{fold_model_name(2, fold, group)}.json", device="cpu")
        for sid, qid in pairs:
            (s_img, s_lab), (q_img, q_lab) = ds.load(sid), ds.load(qid)
            for organ in organs:
                out = cache / f"f{fold}_{sid}_{qid}_{organ}.npz"
                if out.exists() or not (s_lab == organ).any() or not (q_lab == organ).any():
                    continue
                ks = support_chunk_slices(s_lab, organ)
                sups = [make_supports(s_img, s_lab, k, [organ])[0] for k in ks]
                qimgs, grid = image_slices(q_img)
                probs = [seg.predict(sups, qimgs, np.full(qimgs.shape[0], j)).numpy().astype(np.float16)
                         for j in range(3)]
                np.savez_compressed(out, probs=np.stack(probs), fold=fold, support=sid, query=qid, organ=organ)
                print(out.name, flush=True)
