"""Cache a one-slice support's predictions for the single-slice automatic range (TRAINING patients only).

For each fold 0-4, seeded pairs of the fold's training patients without the 8 test patients of the
InteractiveRefine split (evaluate.sample_pairs with seed = fold), each group's test organs present in both:
the support is ONE slice, the one the FewShotSeg panel proposes (the organ's largest cross-section,
default_support_slice). Saved per case: the query's foreground probability on every slice (network grid,
float16) with the fold's shipped setting-2 model, component step not applied, and the reverse check per slice
(cycle Dice: the query slice with its kept mask as the support, segmenting the support slice, Dice with the
support mask; NaN where the kept mask is empty). Query/support patients of the fold are never read. Usage:
  nice -n 10 python benchmarks/fewshot_auto_range/single_slice_cache.py N_PAIRS CACHE_DIR [--dataset DIR]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from chaos_dataset import ROOT, add_dataset_argument, open_dataset  # this folder (the script's own)

from FewShotSegLib.engine.models import fold_model_name, models_dir
from FewShotSegLib.engine.protocol import CHAOS_GROUPS, fold_cases
from FewShotSegLib.engine.query_range import keep_consistent_component
from FewShotSegLib.engine.segment import FewShotSegmenter, Support, auto_range_info, make_supports
from FewShotSegLib.engine.slices import from_network, image_slices, to_network
from FewShotSegLib.evaluation.evaluate import sample_pairs
from FewShotSegLib.panel.support_slice import default_support_slice

IR_TEST = set(json.loads((ROOT / "InteractiveRefine/Resources/Splits/chaos_t2spir.json").read_text())["test"])


def cycle_dice(seg, sup, qimgs, kept_net):
    """Per query slice: its kept mask as the support, the support slice segmented back, Dice with the support."""
    out = np.full(qimgs.shape[0], np.nan)
    zs = [z for z in range(qimgs.shape[0]) if kept_net[z].any()]
    if not zs:
        return out
    sups = [Support(qimgs[z:z + 1], kept_net[z][None, None].float(), 1, z) for z in zs]
    back = seg.predict(sups, sup.image.expand(len(zs), -1, -1, -1), np.arange(len(zs))) > 0.5
    ref = sup.mask[0, 0] > 0.5
    inter = (back & ref).sum((1, 2)).float()
    out[zs] = (2 * inter / (back.sum((1, 2)) + ref.sum()).clamp(min=1)).numpy()
    return out


def cases(ds, n_pairs):
    """(fold, group model name, support id, query id, organ) of every case, in order."""
    for fold in range(5):
        fc = fold_cases(ds.case_ids, fold)
        train = [c for c in fc["train"] if c not in IR_TEST]
        pairs = sample_pairs(train, n_pairs, fold)
        assert not {c for p in pairs for c in p} & (set(fc["query"] + [fc["support"]]) | IR_TEST)
        for group, organs in CHAOS_GROUPS.items():
            for sid, qid in pairs:
                for organ in organs:
                    yield fold, fold_model_name(2, fold, group), sid, qid, organ


def loaded_cases(ds, n_pairs, skip=lambda name: False):
    """`cases` read: (name, fold, support id, query id, organ, support (image, label), query (image, label),
    the fold's segmenter) of each case whose organ shows in both volumes, each model loaded once; a case whose
    name `skip` accepts is left out before it is read."""
    models = {}
    for fold, model, sid, qid, organ in cases(ds, n_pairs):
        name = f"f{fold}_{sid}_{qid}_{organ}"
        if skip(name):
            continue
        support, query = ds.load(sid), ds.load(qid)
        if not (support[1] == organ).any() or not (query[1] == organ).any():
            continue
        if model not in models:
            models[model] = FewShotSegmenter(models_dir() / f"{model}.json", device="cpu")
        yield name, fold, sid, qid, organ, support, query, models[model]


def one_slice_study(description: str, threads: int = 1):
    """The set-up the one-slice studies share (command line `N_PAIRS OUT.jsonl [--dataset DIR]`): returns OUT
    and an iterator of (case name, fold, organ, support image, one-slice support label, its slice, query image,
    query label, the fold's segmenter) over the `loaded_cases` cases not yet recorded in OUT. The support is ONE
    slice, the one the FewShotSeg panel proposes (the organ's largest cross-section)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("n_pairs", type=int)
    parser.add_argument("out", type=Path)
    add_dataset_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(threads)
    ds = open_dataset(args)
    done = {row["case"] for row in read_rows(args.out)}

    def cases():
        for name, fold, _, _, organ, (s_img, s_lab), (q_img, q_lab), seg in loaded_cases(
                ds, args.n_pairs, skip=done.__contains__):
            k = default_support_slice(s_lab == organ)
            one = np.zeros_like(s_lab)
            one[k] = s_lab[k]
            yield name, fold, organ, s_img, one, k, q_img, q_lab, seg
    return args.out, cases()


ORGANS = {1: "liver", 2: "R kidney", 3: "L kidney", 4: "spleen"}


def window(seg, supports, s_img, one, organ, q_img):
    """The shipped one-slice automatic window (the panel's Auto) of `supports` (make_supports of `one`)."""
    return seg.segment(supports, q_img, auto_range=True, auto=auto_range_info(s_img, one, [organ], q_img))


def organ_means(rows, value, label: str, width: int, sep: str = " ", mean: str = "  mean ") -> str:
    """One table line: `label`, then each organ's mean of `value(row)` in %, then their mean."""
    per = [100 * np.mean([value(r) for r in rows if r["organ"] == o]) for o in ORGANS]
    return f"{label:{width}s} " + sep.join(f"{ORGANS[o]} {x:.2f}" for o, x in zip(ORGANS, per)) \
        + f"{mean}{np.mean(per):.2f}"


def variant_dice(row, key: str) -> float:
    """A row's Dice: the window's (`key` "window"), or a variant's {"dice": ...}, the window's where it did not
    run (an empty window)."""
    return row[key] if key == "window" else row[key]["dice"] if key in row else row["window"]


def read_rows(out: Path) -> list:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def append_row(out: Path, row: dict) -> None:
    with open(out, "a") as f:
        f.write(json.dumps(row) + "\n")


def main():
    parser = argparse.ArgumentParser(description="cache one-slice-support predictions (training patients)")
    parser.add_argument("n_pairs", type=int)
    parser.add_argument("cache", type=Path)
    add_dataset_argument(parser)
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.cache.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(args)
    for name, fold, sid, qid, organ, (s_img, s_lab), (q_img, _), seg in loaded_cases(
            ds, args.n_pairs, skip=lambda name: (args.cache / f"{name}.npz").exists()):
        out = args.cache / f"{name}.npz"
        k = default_support_slice(s_lab == organ)
        sup = make_supports(s_img, s_lab, k, [organ])[0]
        qimgs, grid = image_slices(q_img)
        p = seg.predict([sup], qimgs, np.zeros(qimgs.shape[0], int))
        fp = from_network(sup.mask[:, 0], grid)[0] > 0.5
        kept = keep_consistent_component(from_network(p, grid) > 0.5, fp)
        kept_net = to_network(kept.astype(np.float32), grid, mode="area")[:, 0] > 0.5
        cyc = cycle_dice(seg, sup, qimgs, kept_net)
        np.savez_compressed(out, probs=p.numpy().astype(np.float16), cycle=cyc, support_slice=k,
                            fold=fold, support=sid, query=qid, organ=organ)
        print(out.name, flush=True)


if __name__ == "__main__":
    main()
