"""Where to put the automatic range's window: three cues scored per candidate centre, combined, evaluated
(cached probabilities of cache.py; TRAINING patients of each fold only).

For a window of the support organ's length (support_extents) centred on query slice c:
- net(c): the predicted area (middle support, kept 3D component) summed over the window, / its maximum;
- img(c): the three protocol support slices (at 1/6, 1/2, 5/6 of the support organ) compared with the query
  slices at the same fractions of the window (normalised cross-correlation of the whole network-grid slices,
  intensities z-scored per volume), mean of the three;
- pos(c): the support organ's relative position in its scan (centre / number of slices), carried to the
  query: -((c - c_pos) / sigma)^2 / 2, sigma = the window's length / 4.
score = net + w_img * img + w_pos * pos. The weights are chosen on four folds and measured on the fifth
(leave-one-fold-out, all folds' training patients), and on all five together for the shipped setting.
  python benchmarks/fewshot_auto_range/placement.py CACHE_DIR OUT_DIR [--dataset DIR]
"""
import argparse
import itertools
import json
import os
from pathlib import Path

import numpy as np
import torch
from chaos_dataset import add_dataset_argument, open_dataset  # this folder (the script's own)
from scipy import ndimage

from FewShotSegLib.engine.protocol import organ_slices, query_chunks, support_chunk_slices
from FewShotSegLib.engine.query_range import _window as window  # the shipped window rounding
from FewShotSegLib.engine.query_range import keep_consistent_component
from FewShotSegLib.engine.segment import make_supports, support_extents
from FewShotSegLib.engine.slices import from_network, image_slices, slice_grid
from InteractiveRefineLib.core.metrics import dice

ds = None  # the dataset (--dataset), set by main()
W_IMG = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 1000.0)
W_POS = (0.0, 0.1, 0.25, 0.5, 1.0)


def chunked_mask(P, keep, fp):
    z = np.flatnonzero(keep)
    out = np.zeros(P.shape[1:], bool)
    if z.size:
        ch = query_chunks(int(z[0]), int(z[-1]))
        for i, zz in enumerate(range(int(z[0]), int(z[-1]) + 1)):
            out[zz] = P[ch[i], zz] > 0.5
    return keep_consistent_component(out, fp) if out.any() else out


BLUR = float(os.environ.get("PLACEMENT_BLUR", "0"))  # Gaussian sigma (network-grid pixels) before comparing


def blur(stack):
    return ndimage.gaussian_filter(stack, (0, BLUR, BLUR)) if BLUR > 0 else stack


def case_curves(f):
    d = np.load(f)
    fold, sid, qid, organ = int(d["fold"]), str(d["support"]), str(d["query"]), int(d["organ"])
    (s_img, s_lab), (q_img, q_lab) = ds.load(sid), ds.load(qid)
    grid = slice_grid(q_img)
    P = np.stack([from_network(torch.from_numpy(p.astype(np.float32)), grid) for p in d["probs"]])
    n = P.shape[1]
    ks = support_chunk_slices(s_lab, organ)
    sups = [make_supports(s_img, s_lab, k, [organ])[0] for k in ks]
    fp = from_network(sups[1].mask[:, 0], grid)[0] > 0.5
    ext = support_extents(s_img, s_lab, [organ], q_img)[organ]
    comp = keep_consistent_component(P[1] > 0.5, fp)
    area = comp.sum((1, 2)).astype(float)
    q = blur(image_slices(q_img)[0][:, 0].numpy()).reshape(n, -1)
    q = q - q.mean(1, keepdims=True)
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-6
    sims = []
    for s in sups:
        a = blur(s.image[0, 0].numpy()[None]).ravel()
        a = a - a.mean()
        sims.append(q @ (a / (np.linalg.norm(a) + 1e-6)))
    sz = organ_slices(s_lab, organ)
    c_pos = (sz[0] + sz[-1]) / 2 / s_lab.shape[0] * n
    cs = np.arange(0, n, 0.5)
    if os.environ.get("PLACEMENT_NET") == "chunks":  # each window slice's area from its own chunk's support
        areas = [keep_consistent_component(P[j] > 0.5, fp).sum((1, 2)).astype(float) for j in range(3)]
        net = []
        for c in cs:
            z = np.flatnonzero(window(n, c, ext))
            ch = query_chunks(int(z[0]), int(z[-1])) if z.size else []
            net.append(sum(areas[j][zz] for j, zz in zip(ch, z)))
        net = np.array(net)
    else:
        net = np.array([area[window(n, c, ext)].sum() for c in cs])
    net /= max(net.max(), 1.0)
    img = []
    for c in cs:
        zs = [int(round(c - ext / 2 + fr * ext)) for fr in (1 / 6, 1 / 2, 5 / 6)]
        img.append(np.mean([sims[j][min(max(z, 0), n - 1)] for j, z in enumerate(zs)]))
    pos = -0.5 * ((cs - c_pos) / max(ext / 4, 1.0)) ** 2
    return dict(fold=fold, organ=organ, P=P, fp=fp, ext=ext, cs=cs, net=net, img=np.array(img), pos=pos,
                ref=q_lab == organ, n=n)


def evaluate(cases, w_img, w_pos):
    out = []
    for c in cases:
        score = c["net"] + w_img * c["img"] + w_pos * c["pos"]
        centre = c["cs"][int(np.argmax(score))]
        out.append(dice(chunked_mask(c["P"], window(c["n"], centre, c["ext"]), c["fp"]), c["ref"]))
    return np.array(out)


def organ_mean(cases, d):
    return float(np.mean([np.mean([x for c, x in zip(cases, d) if c["organ"] == o]) for o in (1, 2, 3, 4)]) * 100)


def main():
    global ds
    parser = argparse.ArgumentParser(description="three-cue window placement, weights on a grid, leave-one-fold-out")
    parser.add_argument("cache", type=Path)
    parser.add_argument("out_dir", type=Path)
    add_dataset_argument(parser)
    args = parser.parse_args()
    ds = open_dataset(args)
    cache, out_dir = args.cache, args.out_dir
    cases = [case_curves(f) for f in sorted(cache.glob("*.npz"))]
    grid = {}
    for w_img, w_pos in itertools.product(W_IMG, W_POS):
        grid[(w_img, w_pos)] = evaluate(cases, w_img, w_pos)
        print(f"w_img {w_img} w_pos {w_pos}: {organ_mean(cases, grid[(w_img, w_pos)]):.2f}", flush=True)
    # leave-one-fold-out: weights chosen on 4 folds' training patients, Dice on the 5th fold's
    lofo = np.zeros(len(cases))
    chosen = {}
    for fold in range(5):
        tr = [i for i, c in enumerate(cases) if c["fold"] != fold]
        te = [i for i, c in enumerate(cases) if c["fold"] == fold]
        best = max(grid, key=lambda k: organ_mean([cases[i] for i in tr], grid[k][tr]))
        chosen[fold] = best
        lofo[te] = grid[best][te]
    best = max(grid, key=lambda k: organ_mean(cases, grid[k]))
    summary = {"cases": len(cases), "grid": {f"{k[0]},{k[1]}": organ_mean(cases, v) for k, v in grid.items()},
               "leave_one_fold_out": organ_mean(cases, lofo),
               "chosen_per_fold": {f: list(k) for f, k in chosen.items()},
               "best_all_folds": list(best), "best_all_folds_mean": organ_mean(cases, grid[best])}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "placement.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "grid"}, indent=1))


main()
