"""Automatic-range variants on the cached probabilities of cache.py (TRAINING patients only).

Each variant turns the 3 cached whole-volume probability stacks of a case into a query mask; Dice over the
whole volume (as `evaluate --range auto`). `gt` is the protocol's reference range (Dice over that range).
Also reported: the fraction of predicted voxels on slices without the organ ("off-organ", item 6 of issue 12).
  python benchmarks/fewshot_auto_range/analyse.py CACHE_DIR [OUT.json] [--dataset DIR]
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from chaos_dataset import add_dataset_argument, open_dataset  # this folder (the script's own)

from FewShotSegLib.engine.protocol import organ_slices, query_chunks, support_chunk_slices
from FewShotSegLib.engine.query_range import _window as window_at  # the shipped window rounding
from FewShotSegLib.engine.query_range import keep_consistent_component
from FewShotSegLib.engine.segment import extent_window, make_supports, support_extents
from FewShotSegLib.engine.slices import from_network, slice_grid
from InteractiveRefineLib.core.metrics import dice

parser = argparse.ArgumentParser(description="automatic-range variants on the cached probabilities")
parser.add_argument("cache", type=Path)
parser.add_argument("out", type=Path, nargs="?", help="write the per-case rows here (.json)")
add_dataset_argument(parser)
args = parser.parse_args()
ds = open_dataset(args)
cache = args.cache
loaded = {}


def load(cid):
    if cid not in loaded:
        loaded[cid] = ds.load(cid)
    return loaded[cid]


def best_window(score, extent):
    """Window of `extent` slices (as extent_window rounds it) maximising the summed per-slice score."""
    n = score.size
    best, arg = -1.0, 0
    for c in range(n):
        s = score[window_at(n, c, extent)].sum()
        if s > best:
            best, arg = s, c
    return window_at(n, arg, extent)


def range_of(keep):
    z = np.flatnonzero(keep)
    return (int(z[0]), int(z[-1]) + 1) if z.size else (0, 0)


def chunked(P, keep):
    """Probabilities with the protocol's chunk supports over the window `keep` (0 outside)."""
    z0, z1 = range_of(keep)
    out = np.zeros_like(P[0])
    if z1 > z0:
        ch = query_chunks(z0, z1 - 1)
        for i, z in enumerate(range(z0, z1)):
            out[z] = P[ch[i], z]
    return out


def main():
    rows = []
    for f in sorted(cache.glob("*.npz")):
        d = np.load(f)
        fold, sid, qid, organ = int(d["fold"]), str(d["support"]), str(d["query"]), int(d["organ"])
        (s_img, s_lab), (q_img, q_lab) = load(sid), load(qid)
        grid = slice_grid(q_img)
        P = np.stack([from_network(torch.from_numpy(p.astype(np.float32)), grid) for p in d["probs"]])
        ref = q_lab == organ
        n = ref.shape[0]
        ks = support_chunk_slices(s_lab, organ)
        fp = from_network(make_supports(s_img, s_lab, ks[1], [organ])[0].mask[:, 0], grid)[0] > 0.5
        ext = support_extents(s_img, s_lab, [organ], q_img)[organ]
        zq = organ_slices(q_lab, organ)
        z0, z1 = int(zq[0]), int(zq[-1]) + 1
        res = {"fold": fold, "support": sid, "query": qid, "organ": organ}
        # reference range (the protocol): chunks over [z0, z1), component, Dice over the range
        gtk = np.zeros(n, bool)
        gtk[z0:z1] = True
        g = chunked(P, gtk)
        gm = keep_consistent_component(g > 0.5, fp)
        res["gt"] = dice(gm[z0:z1], ref[z0:z1])
        mid = P[1] > 0.5
        comp = keep_consistent_component(mid, fp)
        area = comp.sum((1, 2)).astype(float)
        variants = {}
        variants["nowindow"] = comp
        w_arg = extent_window(comp, ext)
        variants["current"] = comp & w_arg[:, None, None]
        w_sum = best_window(area, ext)
        variants["sumwin"] = comp & w_sum[:, None, None]
        # chunked supports over the estimated window, component again
        for name, w in (("arg", w_arg), ("sum", w_sum)):
            c = chunked(P, w) > 0.5
            variants[f"chunk_{name}"] = keep_consistent_component(c, fp) & w[:, None, None] if c.any() else c
            # chunked, with the union of the window and the slices where the middle-support component is
            for frac in (0.1, 0.2, 0.3):
                trim = w & (area >= frac * area.max())
                c2 = chunked(P, trim) > 0.5
                variants[f"chunk_{name}_trim{frac}"] = keep_consistent_component(c2, fp) if c2.any() else c2
        # window scaled
        for s in (0.8, 0.9, 1.1):
            w = best_window(area, ext * s)
            c = chunked(P, w) > 0.5
            variants[f"chunk_sum_x{s}"] = keep_consistent_component(c, fp) if c.any() else c
        # oracles (diagnosis only): the reference range with the middle support; a window of the support's
        # length centred on the reference range's centre
        variants["oracle_range_mid"] = keep_consistent_component(mid & gtk[:, None, None], fp)
        w_or = window_at(n, (z0 + z1 - 1) / 2, ext)
        c = chunked(P, w_or) > 0.5
        variants["oracle_centre_chunk"] = keep_consistent_component(c, fp) if c.any() else c
        # template: the support's per-slice cross-section (resampled to query slices) matched to the predicted
        # area profile of the kept component
        sz = organ_slices(s_lab, organ)
        s_area = (s_lab == organ).sum((1, 2))[sz[0]:sz[-1] + 1].astype(float)
        s_area *= float(np.prod(s_img.spacing_kji[1:]) / np.prod(q_img.spacing_kji[1:]))
        t = np.interp(np.linspace(0, len(s_area) - 1, max(int(round(ext)), 1)), np.arange(len(s_area)), s_area)
        best, arg = -np.inf, 0
        for st in range(-len(t) + 1, n):
            idx = np.arange(st, st + len(t))
            ok = (idx >= 0) & (idx < n)
            sc = -np.abs(area[idx[ok]] - t[ok]).sum() - t[~ok].sum()
            if sc > best:
                best, arg = sc, st
        w_t = np.zeros(n, bool)
        w_t[max(arg, 0):min(arg + len(t), n)] = True
        c = chunked(P, w_t) > 0.5
        variants["template_l1"] = keep_consistent_component(c, fp) if c.any() else c
        variants["template_l1_mid"] = comp & w_t[:, None, None]
        # per-slice agreement with the support's footprint: the organ sits where the support's organ sits in-plane;
        # look-alike tissue above/below it (heart, bowel) mostly lies elsewhere in the slice
        fps = [from_network(make_supports(s_img, s_lab, kk, [organ])[0].mask[:, 0], grid)[0] > 0.5 for kk in ks]
        inter = (comp & fp[None]).sum((1, 2)).astype(float)
        dfp = 2 * inter / np.maximum(area + fp.sum(), 1)
        for name, score in (("fp_area", inter), ("fp_dice", dfp),
                            ("fp_prob", (P[1] * fp[None]).sum((1, 2)))):
            w = best_window(score, ext)
            c = chunked(P, w) > 0.5
            variants[f"win_{name}"] = keep_consistent_component(c, fp) if c.any() else c
            res[f"centre_err_{name}"] = float(np.flatnonzero(w).mean() - (z0 + z1 - 1) / 2)
        # chunk-aware: each placement's chunks compared with their own support's footprint
        best, arg = -1.0, 0
        for cc in range(n):
            w = window_at(n, cc, ext)
            a0, a1 = range_of(w)
            ch = query_chunks(a0, a1 - 1)
            sc = 0.0
            for i, z in enumerate(range(a0, a1)):
                m = P[ch[i], z] > 0.5
                sc += 2 * (m & fps[ch[i]]).sum() / max(m.sum() + fps[ch[i]].sum(), 1)
            if sc > best:
                best, arg = sc, cc
        w = window_at(n, arg, ext)
        c = chunked(P, w) > 0.5
        variants["win_chunk_dice"] = keep_consistent_component(c, fp) if c.any() else c
        res["centre_err_chunk_dice"] = float(np.flatnonzero(w).mean() - (z0 + z1 - 1) / 2)
        res["centre_err_current"] = float(np.flatnonzero(w_arg).mean() - (z0 + z1 - 1) / 2)
        res["centre_err_sum"] = float(np.flatnonzero(w_sum).mean() - (z0 + z1 - 1) / 2)
        res["centre_err_template"] = float(np.flatnonzero(w_t).mean() - (z0 + z1 - 1) / 2) if w_t.any() else 99.0
        res["len_err"] = float(ext - (z1 - z0))
        for k, m in variants.items():
            res[k] = dice(m, ref)
            off = ~ref.any((1, 2))
            res[k + "_off"] = float(m[off].sum() / max(m.sum(), 1))
            r = range_of(m.any((1, 2)))
            res[k + "_range"] = r
        res["ref_range"] = (z0, z1)
        rows.append(res)
        print(f, round(res["gt"], 3), round(res["current"], 3), round(res["chunk_sum"], 3), flush=True)
    for k in [k for k in rows[0] if k.startswith("centre_err") or k == "len_err"]:
        v = np.array([r[k] for r in rows])
        print(f"{k}: mean abs {np.abs(v).mean():.2f} slices, median {np.median(v):.2f}, max abs {np.abs(v).max():.1f}")
    keys = [k for k in rows[0] if isinstance(rows[0][k], float) and not k.endswith("_off") and "err" not in k]
    names = {1: "liver", 2: "R kidney", 3: "L kidney", 4: "spleen"}
    print(f"{len(rows)} cases, folds {sorted({r['fold'] for r in rows})}")
    print(f"{'variant':24s} " + " ".join(f"{names[o]:>9s}" for o in (1, 2, 3, 4)) + "      mean   off-organ")
    for k in keys:
        per = [np.mean([r[k] for r in rows if r["organ"] == o]) * 100 for o in (1, 2, 3, 4)]
        off = np.mean([r.get(k + "_off", 0.0) for r in rows]) * 100
        print(f"{k:24s} " + " ".join(f"{v:9.2f}" for v in per) + f"  {np.mean(per):8.2f}  {off:6.1f}%")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1, default=str))


main()
