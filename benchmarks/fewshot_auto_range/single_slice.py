"""Windows for the automatic range with a ONE-slice support, on single_slice_cache.py's cases (TRAINING
patients only, without the InteractiveRefine test patients).

Without a window (what `--range auto` and the panel's Auto did), the kept 3D component of a one-slice support
reaches onto slices without the organ. Variants (Dice over the whole volume, as `evaluate --range auto`; and
the share / number of labelled voxels on slices without the organ):
- none: the component step only;
- oracle_ref: the reference slice range (upper bound of any window);
- true_len: a window of the support organ's real length (unknown to a one-slice support) placed by
  query_range.place_window with the one support slice (diagnosis: what placement alone can reach);
- est_len: the same with the length estimated from the support cross-section, L = c * sqrt(area)^beta (mm),
  c, beta fitted on the training patients' organs; scale s on a grid;
- collapse: from the slice with the largest kept cross-section outwards, stop where the cross-section drops
  below r of its neighbour or below f of the support's (grid);
- cycle: from the same start outwards while the reverse check (query slice as support, the support slice
  segmented back) keeps Dice >= t (grid);
- one: est_len's scale with place_window's image and position weights on a joint grid (the weights were
  chosen for three support slices; one support image may need others).
Parameters: the best on all folds, and leave-one-fold-out (chosen on 4 folds, measured on the 5th).
  python benchmarks/fewshot_auto_range/single_slice.py CACHE_DIR [OUT.json] [--dataset DIR]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from chaos_dataset import ROOT, add_dataset_argument, open_dataset  # this folder (the script's own)

from FewShotSegLib.engine.query_range import keep_consistent_component, place_window
from FewShotSegLib.engine.segment import make_supports
from FewShotSegLib.engine.slices import from_network, image_slices, slice_grid
from InteractiveRefineLib.core.metrics import dice

IR_TEST = set(json.loads((ROOT / "InteractiveRefine/Resources/Splits/chaos_t2spir.json").read_text())["test"])
ORGANS = (1, 2, 3, 4)
NAMES = {1: "liver", 2: "R kidney", 3: "L kidney", 4: "spleen"}


def length_model(ds):
    """log L = log c + beta log sqrt(A): organ length (mm) from its largest cross-section (mm^2), all 4 organs
    of the training patients (the InteractiveRefine test patients left out)."""
    xs, ys = [], []
    for cid in ds.case_ids:
        if cid in IR_TEST:
            continue
        img, lab = ds.load(cid)
        sp = img.spacing_kji
        for o in ORGANS:
            a = (lab == o).sum((1, 2))
            z = np.flatnonzero(a)
            if z.size:
                xs.append(np.log(np.sqrt(a.max() * sp[1] * sp[2])))
                ys.append(np.log((z[-1] - z[0] + 1) * sp[0]))
    beta, logc = np.polyfit(xs, ys, 1)
    return float(np.exp(logc)), float(beta)


def walk(ok, start):
    """Bool per slice: the run of `ok` slices around `start` (start always kept)."""
    keep = np.zeros(ok.size, bool)
    keep[start] = True
    for d in (1, -1):
        z = start + d
        while 0 <= z < ok.size and ok[z]:
            keep[z] = True
            z += d
    return keep


def collapse_ok(area, start, ratio, frac, a_support):
    ok = np.zeros(area.size, bool)
    for d in (1, -1):
        z, prev = start + d, area[start]
        while 0 <= z < area.size:
            if area[z] < ratio * prev or area[z] < frac * a_support:
                break
            ok[z], prev = True, area[z]
            z += d
    return ok


def load_case(f, ds, cache):
    d = np.load(f)
    fold, sid, qid, organ, k = int(d["fold"]), str(d["support"]), str(d["query"]), int(d["organ"]), \
        int(d["support_slice"])
    for c in (sid, qid):
        if c not in cache:
            cache[c] = ds.load(c)
    (s_img, s_lab), (q_img, q_lab) = cache[sid], cache[qid]
    grid = slice_grid(q_img)
    P = from_network(torch.from_numpy(d["probs"].astype(np.float32)), grid)
    sup = make_supports(s_img, s_lab, k, [organ])[0]
    fp = from_network(sup.mask[:, 0], grid)[0] > 0.5
    kept = keep_consistent_component(P > 0.5, fp)
    area_mm2 = float((s_lab[k] == organ).sum() * s_img.spacing_kji[1] * s_img.spacing_kji[2])
    qimgs = image_slices(q_img)[0][:, 0].numpy()
    return dict(fold=fold, organ=organ, kept=kept, fp=fp, ref=q_lab == organ, area=kept.sum((1, 2)).astype(float),
                cycle=np.nan_to_num(d["cycle"], nan=0.0), qimgs=qimgs, simg=sup.image[:, 0].numpy(),
                area_mm2=area_mm2, a_support=area_mm2 / float(q_img.spacing_kji[1] * q_img.spacing_kji[2]),
                true_len=float((np.flatnonzero((s_lab == organ).any((1, 2)))[[0, -1]] @ [-1, 1] + 1)
                               * s_img.spacing_kji[0] / q_img.spacing_kji[0]),
                q_dz=float(q_img.spacing_kji[0]), centre_fraction=k / s_lab.shape[0], n=q_lab.shape[0])


def masked(c, keep):
    m = c["kept"] & keep[:, None, None]
    return keep_consistent_component(m, c["fp"]) if m.any() else m


def score(c, m):
    off = ~c["ref"].any((1, 2))
    return dice(m, c["ref"]), int(m[off].sum()), float(m[off].sum() / max(m.sum(), 1))


def windows(c, lm):
    """{variant name: bool per slice} for one case."""
    n, area = c["n"], c["area"]
    out = {"none": np.ones(n, bool)}
    zr = np.flatnonzero(c["ref"].any((1, 2)))
    out["oracle_ref"] = np.zeros(n, bool)
    out["oracle_ref"][zr[0]:zr[-1] + 1] = True
    place = lambda ext: place_window(area, c["qimgs"], c["simg"], ext, c["centre_fraction"])  # noqa: E731
    out["true_len"] = place(c["true_len"])
    est = lm[0] * np.sqrt(c["area_mm2"]) ** lm[1] / c["q_dz"]
    for s in (0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.4):
        out[f"est_len_x{s}"] = place(s * est)
    for s in (0.6, 0.8, 1.0):  # length scale and placement weights chosen again for one support image
        for w_img in (0.0, 2.0, 4.0, 8.0):
            for w_pos in (0.1, 0.25, 0.5, 1.0, 2.0):
                out[f"one_x{s}_img{w_img}_pos{w_pos}"] = place_window(area, c["qimgs"], c["simg"], s * est,
                                                                      c["centre_fraction"], w_img, w_pos)
    start = int(np.argmax(area)) if area.any() else 0
    for r in (0.0, 0.5, 0.7, 0.8, 0.9):
        for f in (0.0, 0.1, 0.2, 0.3, 0.5):
            out[f"collapse_r{r}_f{f}"] = walk(collapse_ok(area, start, r, f, c["a_support"]), start)
    for t in (0.3, 0.4, 0.5, 0.6, 0.7):
        out[f"cycle_t{t}"] = walk(c["cycle"] >= t, start)
    return out


def organ_mean(rows, key, idx=0):
    return float(np.mean([np.mean([r[key][idx] for r in rows if r["organ"] == o]) for o in ORGANS
                          if any(r["organ"] == o for r in rows)]))


def main():
    parser = argparse.ArgumentParser(description="one-slice-support windows on the cached cases")
    parser.add_argument("cache", type=Path)
    parser.add_argument("out", type=Path, nargs="?", help="write the summary here (.json)")
    add_dataset_argument(parser)
    args = parser.parse_args()
    ds = open_dataset(args)
    lm = length_model(ds)
    print(f"length model: L = {lm[0]:.2f} * sqrt(A)^{lm[1]:.3f} mm", flush=True)
    rows, loaded = [], {}
    for f in sorted(args.cache.glob("*.npz")):
        c = load_case(f, ds, loaded)
        row = {"case": f.stem, "fold": c["fold"], "organ": c["organ"]}
        scored = {}  # many variants give the same window: score each window once
        for name, keep in windows(c, lm).items():
            if keep.tobytes() not in scored:
                scored[keep.tobytes()] = score(c, masked(c, keep))
            row[name] = scored[keep.tobytes()]
        rows.append(row)
        print(f.stem, {k: round(row[k][0], 3) for k in ("none", "oracle_ref", "true_len", "est_len_x1.0")},
              flush=True)
    names = [k for k in rows[0] if k not in ("case", "fold", "organ")]
    tunable = [k for k in names if k not in ("none", "oracle_ref", "true_len")]
    families = sorted({k.split("_")[0] for k in tunable})
    summary = {"cases": len(rows), "length_model": lm, "variants": {}}
    print(f"{len(rows)} cases; Dice % per organ, mean of organs, off-organ voxels (share, mean count)")
    for k in names:
        per = [np.mean([r[k][0] for r in rows if r["organ"] == o]) * 100 for o in ORGANS]
        off_share = np.mean([r[k][2] for r in rows]) * 100
        off_vox = np.mean([r[k][1] for r in rows])
        summary["variants"][k] = {"per_organ": per, "mean": float(np.mean(per)), "off_share": off_share,
                                  "off_voxels": off_vox}
        print(f"{k:22s} " + " ".join(f"{v:6.2f}" for v in per) + f"  {np.mean(per):6.2f}  {off_share:5.1f}%"
              f" {off_vox:8.0f}")
    for fam in families:  # leave-one-fold-out within each family of windows
        keys = [k for k in tunable if k.startswith(fam)]
        lofo, chosen = [], {}
        for fold in sorted({r["fold"] for r in rows}):
            tr = [r for r in rows if r["fold"] != fold]
            best = max(keys, key=lambda k: organ_mean(tr, k))
            chosen[fold] = best
            lofo += [dict(r, lofo=r[best]) for r in rows if r["fold"] == fold]
        best_all = max(keys, key=lambda k: organ_mean(rows, k))
        summary[fam] = {"best_all_folds": best_all, "best_mean": organ_mean(rows, best_all) * 100,
                        "leave_one_fold_out": organ_mean(lofo, "lofo") * 100, "chosen_per_fold": chosen,
                        "lofo_off_voxels": float(np.mean([r["lofo"][1] for r in lofo]))}
        print(fam, json.dumps(summary[fam]))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1))


main()
