"""Exemplar-adaptation settings chosen on TRAINING patients only (issue 12, honest protocol).

For each variant, `evaluate_training_pairs` (seeded pairs of each fold's training patients, never a fold's
query or support patient; the shipped setting-2 per-fold models; SSL-ALPNet chunks; reference range) with
the adaptation of that variant. A variant is "plain" (no adaptation) or
"s<stage-1 steps>_p<stage-2 steps>[_c<stage-2 confidence>][_w<contrastive weight>]", e.g. s30_p15_c0.8.

    python benchmarks/fewshot_choices/adapt_settings.py OUT_DIR --variants plain,s8_p4,s30_p15 [--pairs 1]

Writes OUT_DIR/<variant>/results.jsonl and prints, per variant, the mean Dice (%) per organ and of the
organs, the support-copy mean on the same cases and the median seconds per case (adaptation included).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "InteractiveRefine"), str(ROOT / "FewShotSeg")]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from FewShotSegLib.engine.adapt import AdaptConfig, adapt_segmenter  # noqa: E402
from FewShotSegLib.engine.models import fold_model_name, models_dir  # noqa: E402
from FewShotSegLib.evaluation.evaluate import evaluate_training_pairs  # noqa: E402
from InteractiveRefineLib.core.data import DecathlonDataset  # noqa: E402

KEYS = {"s": "steps", "p": "pseudo_steps", "c": "confidence", "w": "contrastive_weight"}


def parse_variant(name: str):
    """None for "plain", else the AdaptConfig the name spells."""
    if name == "plain":
        return None
    kw = {}
    for part in name.split("_"):
        key, value = KEYS[part[0]], part[1:]
        kw[key] = int(value) if key.endswith("steps") else float(value)
    return AdaptConfig(**kw)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--variants", default="plain,s8_p4,s15_p8,s30_p15")
    p.add_argument("--pairs", type=int, default=1, help="seeded pairs of training patients per fold")
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--dataset", default=str(ROOT.parent / "shared" / "data" / "chaos-t2spir"))
    a = p.parse_args()
    torch.set_num_threads(1)
    ds = DecathlonDataset(a.dataset)
    folds = [int(f) for f in a.folds.split(",")]
    for name in a.variants.split(","):
        cfg = parse_variant(name)
        adapter = None if cfg is None else (lambda seg, sup, q, cfg=cfg: adapt_segmenter(seg, sup, q, 0, cfg))
        out = Path(a.out) / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.jsonl").unlink(missing_ok=True)
        def model_for(setting, fold, group):
            return models_dir() / f"{fold_model_name(setting, fold, group)}.json"
        recs = evaluate_training_pairs(ds, 2, folds, out, model_for, a.pairs, 0, adapter, "cpu")
        per = {}
        for r in recs:
            per.setdefault(r["label_name"], []).append((r["dice"], r["support_copy"], r["seconds"]))
        organs = {k: 100 * float(np.mean([d for d, _, _ in v])) for k, v in per.items()}
        copy = 100 * float(np.mean([np.mean([c for _, c, _ in v]) for v in per.values()]))
        secs = float(np.median([s for v in per.values() for _, _, s in v]))
        print(json.dumps({"variant": name, "cases": len(recs), "organs": {k: round(v, 2) for k, v in organs.items()},
                          "mean": round(float(np.mean(list(organs.values()))), 2), "support_copy": round(copy, 2),
                          "median_case_s": round(secs, 1)}), flush=True)


if __name__ == "__main__":
    main()
