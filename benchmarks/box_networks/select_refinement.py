"""Chooses the refinement safeguards (RefineConfig) on the validation structures of box_sources.py only
(never test or evaluation data): tight boxes, round 0 (box) then 3 robot scribble rounds driven by each
configuration's own bifseg result; 2D: three slices per structure (--benchmark-slices: every slice, as the
benchmarks read the evaluation data), 3D: the whole structure; the filled box
(with the same scribbles pasted) beside it, and graph cut / random walker for the last configuration.
A group's mean Dice must not drop from one round to the next ("refinement never hurts").

Usage (repository root, ~1 h on one shared CPU thread): python benchmarks/box_networks/select_refinement.py
    [--hip 10] [--configs a,b] [--groups g1,g2] [--records FILE] [--baselines NAME]
    > benchmarks/box_networks/select_refinement.md
Records per structure go to --records (JSON lines, default runs/select_refinement.jsonl); a re-run with the
same file only computes what is missing. Records are not keyed by the network: after the shipped weights
change, start a new records file (the committed records used the 1300-iteration network).
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from InteractiveRefineLib.core.data import load_split
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask, main_object, validate_box
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.inference import BoxSegmenter
from InteractiveRefineLib.evaluation.benchmark import _rng, benchmark_slices, run_rounds
from InteractiveRefineLib.evaluation.methods import make_runners
from InteractiveRefineLib.training.box_sources import _decathlon, data_root, load_sources
from InteractiveRefineLib.training.train_box import validation_cases

ROUNDS = 3
# steps_2d None: 2D boxes take `steps` (10 unless set), as before RefineConfig.steps_2d (twelfth session)
# whole_box_3d, connected_edit and balance False, fallback_margin None: as before the thirteenth session's guards
# and the fourteenth session's fallback
OFF = dict(lr=1e-3, lam=3.0, lam_2d=None, crf_min_keep=None, distance_fraction=None, local_edit=None, steps_2d=None,
           whole_box_3d=False, connected_edit=False, balance=False, fallback_margin=None)
SAFE = dict(OFF, crf_min_keep=0.5, distance_fraction=0.1, local_edit=0.25, lr=3e-4)
S12 = dict(SAFE, lr=1e-4, steps_2d=30)  # the refinement shipped in the twelfth session
# Records only (select_refinement_s13.jsonl): the geodesic neighbourhood of a scribble uncertain, a step
# costing 1 + edge x the intensity gradient, radius a share of the box's largest extent (0.5, or 1: _f1), with
# RefineConfig fields geodesic_edge / geodesic_fraction / geodesic_2d of commit 889f9ed (removed since: with the
# whole box as the radius it reached the whole box, and edge 0 scored as edge 2; whole_box_3d is that rule).
GEODESIC_S13 = {
    **{f"geo{e:g}_s13": dict(S12, geodesic_edge=e, geodesic_fraction=0.5, geodesic_2d=True) for e in (2.0, 5.0, 20.0)},
    "balance_geo5_s13": dict(S12, balance=True, geodesic_edge=5.0, geodesic_fraction=0.5, geodesic_2d=True),
    "geo5_connected_s13": dict(S12, geodesic_edge=5.0, geodesic_fraction=0.5, geodesic_2d=True, connected_edit=True),
    **{f"geo{e:g}_f1_s13": dict(S12, geodesic_edge=e, geodesic_fraction=1.0, geodesic_2d=True)
       for e in (0.0, 1.0, 2.0, 5.0, 10.0)},
    "geo5_f1_edit0.5_s13": dict(S12, geodesic_edge=5.0, geodesic_fraction=1.0, geodesic_2d=True, local_edit=0.5),
    "geo5_f1_steps20_s13": dict(S12, geodesic_edge=5.0, geodesic_fraction=1.0, geodesic_2d=True, steps=20),
    "geo2_f1_edit0.35_s13": dict(S12, geodesic_edge=2.0, geodesic_fraction=1.0, local_edit=0.35),
}
# Records only (select_refinement_s14.jsonl): every label update and the result lean on the shipped network's
# probability by a weight, RefineConfig.anchor of commit 4e5f125 (removed since: level in 2D, lower in 3D)
ANCHOR_S14 = {f"anchor{a:g}_s14": dict(S12, whole_box_3d=True, anchor=a) for a in (0.3, 0.5)}
# records-only configuration -> the commit whose RefineConfig has its fields
RECORDS_ONLY = {**{name: "889f9ed" for name in GEODESIC_S13}, **{name: "4e5f125" for name in ANCHOR_S14}}
CUTS_3D_S17 = (0.55, 0.6, 0.7)  # the 3D boxes' cuts tried in the seventeenth session (THRESHOLD_3D)
CONFIGS = {  # name -> RefineConfig keyword arguments (all the fields compared, so a later default change
    # does not change what a name means); the last one also runs the baselines
    "before": OFF,                              # the defaults before this selection
    "safe_2dlam1": dict(SAFE, lam_2d=1.0),      # safeguards, CRF lam 1 in 2D, 3 in 3D
    "safe_lr1e-4": dict(SAFE, lr=1e-4),         # safeguards, gentler fine-tuning: the chosen default
    "safe_lr1e-4_2dlam1": dict(SAFE, lr=1e-4, lam_2d=1.0),
    "safe_lam3": SAFE,                          # safeguards with lr 3e-4 (tried first), with the baselines
    "views3": dict(SAFE, lr=1e-4),              # the default refinement on the 3-view 3D network (VIEWS)
    "safe_lr1e-3": dict(SAFE, lr=1e-3),         # safeguards, the original lr (a 3D-only lr, sixth session)
    # twelfth session, 3D only (the rounds there add +0.025, in 2D +0.09): a wider local edit, more steps
    "edit0.5": dict(SAFE, lr=1e-4, local_edit=0.5),
    "edit0.5_lr3e-4": dict(SAFE, local_edit=0.5),
    "steps30": dict(SAFE, lr=1e-4, steps=30),
    "steps20": dict(SAFE, lr=1e-4, steps=20),
    # the 2D network cut at a lower probability (THRESHOLD_2D; it under-segments the validation kidneys), each
    # with the refinement shipped since the twelfth session (30 head steps in 2D); shipped_s12 = thr0.3, run
    # with the other methods beside it
    **{name: S12 for name in ("thr0.2", "thr0.3", "thr0.4", "shipped_s12")},
    # thirteenth session, each with the refinement shipped since the twelfth: a round keeping only changes
    # connected to a new scribble of their sign (RefineConfig.connected_edit); both labels weighing the same in
    # the loss (balance); then the interaction uncertainty of a scribble over the whole 3D box (whole_box_3d,
    # shipped), found as a geodesic neighbourhood (GEODESIC_S13 above)
    "connected_s13": dict(S12, connected_edit=True),
    "balance_s13": dict(S12, balance=True),
    "shipped_s13": dict(S12, whole_box_3d=True),
    "whole_box_edit0.35_s13": dict(S12, whole_box_3d=True, local_edit=0.35),  # measured last: CHAOS drops
    # more 3D steps or a higher lr on the cleaner signal: the training kidneys, CHAOS and hippocampus drop
    "whole_box_steps20_s13": dict(S12, whole_box_3d=True, steps=20),
    "whole_box_lr2e-4_s13": dict(S12, whole_box_3d=True, lr=2e-4),
    **GEODESIC_S13,
    **ANCHOR_S14,
    # the loss's constants, not re-chosen since the guards came in: scribble weight, confidence threshold,
    # CRF / fine-tuning alternations per round
    **{f"omega{o:g}_s14": dict(S12, whole_box_3d=True, omega=o) for o in (10.0, 40.0)},
    **{f"conf{t:g}_s14": dict(S12, whole_box_3d=True, threshold=t) for t in (0.7, 0.9)},
    **{f"iter{i}_s14": dict(S12, whole_box_3d=True, iterations=i) for i in (2, 4)},
    # the shipped network + CRF from the round where the network gives a correction's label a higher mean
    # probability than the tuned head, by more than a margin (RefineConfig.fallback_margin; 0 shipped)
    **{f"fallback{m:g}_s14": dict(S12, whole_box_3d=True, fallback_margin=m) for m in (0.0, 0.1, 0.3)},
    # seventeenth session: the shipped refinement with the 3D boxes' network cut at another probability
    # (THRESHOLD_3D; session 16's network alone preferred 0.6 to 0.5 on the validation structures)
    **{f"cut3d{t:g}_s17": dict(S12, whole_box_3d=True, fallback_margin=0.0) for t in CUTS_3D_S17},
}
VIEWS = {"views3": 3}  # configurations that run the 3D network with other views than its manifest's
# configurations whose 2D network cuts its foreground at another probability than 0.5 (BoxSegmenter's
# threshold2d; every other configuration, as every record before the twelfth session, cuts at the network's 0.5)
THRESHOLD_2D = {"thr0.2": 0.2, "thr0.3": 0.3, "thr0.4": 0.4, "shipped_s12": 0.3,
                **{name: 0.3 for name in CONFIGS if name.endswith(("_s13", "_s14", "_s17"))}}
# configurations whose 3D boxes' network cuts at another probability (BoxSegmenter's threshold3d; every other
# configuration, as every record before the seventeenth session, cuts 3D boxes at the network's 0.5)
THRESHOLD_3D = {f"cut3d{t:g}_s17": t for t in CUTS_3D_S17}
BASELINES = ("graphcut", "random_walker")
# --benchmark-slices (eighteenth session): 2D boxes on every slice as benchmark.py reads the evaluation data
# (main object, >= 20 pixels), at the step run_external.sh gives each kind of structure (1 elsewhere)
BENCH_STEP_2D = {"hippocampus": 4, "fetal": 12}


def benchmark_boxes2d(group, m):
    """Tight 2D boxes on the slices benchmark.py reads (>= 20 pixels of the main object), every BENCH_STEP_2D-th."""
    drawn = main_object(m)
    return [validate_box(box_from_mask(drawn, 0, k), m.shape)
            for k in benchmark_slices(drawn, slice_step=BENCH_STEP_2D.get(group, 1))]


def run_case(name, kwargs, v, label, m, boxes2d, box3d, seg, baselines, dims=("2d", "3d")):
    """{dim: {method: [dice per round]}} for one structure (2D: mean over its slices); `baselines`: the
    other methods to run with the same scribbles (or a false value: none)."""
    cfg = RefineConfig(**kwargs)
    methods = ["bifseg", "filled_box"] + (list(baselines) if baselines else [])
    out = {}
    for dim, boxes in (("2d", boxes2d), ("3d", [box3d])):
        if dim not in dims:
            continue
        per = defaultdict(list)
        for b in boxes:
            runners = make_runners(methods, v.image, b, seg, cfg)
            res = run_rounds(v.image, m, b, runners, ROUNDS, "bifseg", _rng(0, v.name, label, dim, b.lo))
            for meth, steps in res.items():
                if dim == "2d":
                    k = b.lo[0]
                    per[meth].append([dice(s[0][k], m[k]) for s in steps])
                else:
                    per[meth].append([dice(s[0], m) for s in steps])
        out[dim] = {meth: np.mean(d, axis=0).round(4).tolist() for meth, d in per.items()}
    return out


def table(rows, dim):
    """rows: {(config, method): {group: [[dice per round], ...]}} -> markdown, one line per round."""
    groups = sorted({g for r in rows.values() for g in r})
    lines = [f"\n### {dim.upper()}: mean Dice per round (groups: {', '.join(groups)})\n",
             "| configuration | method | round | " + " | ".join(groups) + " | mean of groups | never lower? |",
             "|---|---|---|" + "---|" * (len(groups) + 2)]
    for (cfg, meth), r in rows.items():
        means = {g: np.mean(r[g], axis=0) for g in groups}
        for k in range(ROUNDS + 1):
            drops = [g for g in groups if k and means[g][k] < means[g][k - 1] - 1e-9]
            ok = "" if k == 0 else ("yes" if not drops else "no: " + ", ".join(drops))
            lines.append(f"| {cfg} | {meth} | {k} | " + " | ".join(f"{means[g][k]:.3f}" for g in groups)
                         + f" | {np.mean([means[g][k] for g in groups]):.3f} | {ok} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hip", type=int, default=10, help="validation hippocampus subjects")
    ap.add_argument("--configs", default=None, help="comma list of CONFIGS names (default all)")
    ap.add_argument("--groups", default=None, help="comma list of validation groups (default all)")
    ap.add_argument("--records", default="runs/select_refinement.jsonl")
    ap.add_argument("--dims", default="2d,3d", help="2d, 3d or both (a 2D-only choice such as lam_2d)")
    ap.add_argument("--train-kidneys", type=int, default=0,
                    help="also the kidneys of the first N CHAOS training patients (group chaos_kidneys_train: the "
                         "networks trained on their liver and spleen only, never on a kidney)")
    ap.add_argument("--baselines", default=None, help="configuration that also runs graph cut and random walker "
                    "with its scribbles (default: the last one)")
    ap.add_argument("--baseline-methods", default=",".join(BASELINES),
                    help="the methods --baselines runs (e.g. graphcut,random_walker,cnn+crf)")
    ap.add_argument("--benchmark-slices", action="store_true",
                    help="2D: every slice as the benchmarks read the evaluation data (BENCH_STEP_2D), not three")
    a = ap.parse_args()
    torch.set_num_threads(1)
    slices2d = "benchmark" if a.benchmark_slices else "quartiles"
    names = list(CONFIGS) if a.configs is None else a.configs.split(",")
    dims = tuple(a.dims.split(","))
    rec_path = Path(a.records)
    rec_path.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if rec_path.exists():
        for line in rec_path.read_text().splitlines():
            r = json.loads(line)  # a structure's 2D and 3D records may be separate lines (runs per dimension)
            if r.get("slices2d", "quartiles") != slices2d and "2d" in r:
                continue
            done.setdefault((r["config"], r["case"], r["label"]), {}).update(r)
    segs = {}
    volumes = load_sources("val", limit=a.hip)
    if a.train_kidneys:
        volumes += _decathlon(data_root(), "chaos-t2spir", "chaos_kidneys_train",
                              load_split("chaos_t2spir")["train"][: a.train_kidneys], [2, 3])
    cases = validation_cases(volumes)
    if a.benchmark_slices:
        cases = [(g, v, l, m, benchmark_boxes2d(g, m), b3) for g, v, l, m, _, b3 in cases]
    if a.groups:
        cases = [c for c in cases if c[0] in a.groups.split(",")]
    with rec_path.open("a") as f:
        for name in names:
            for group, v, label, m, boxes2d, box3d in cases:
                key = (name, v.name, int(label))
                if key in done and all(d in done[key] for d in dims):
                    continue
                if name in RECORDS_ONLY:
                    raise SystemExit(f"{name}: records only (RefineConfig fields of commit {RECORDS_ONLY[name]}); "
                                     f"no record for {v.name} label {label} in {rec_path}")
                with_baselines = a.baseline_methods.split(",") if name == (a.baselines or names[-1]) else None
                key_seg = (VIEWS.get(name), THRESHOLD_2D.get(name, 0.5), THRESHOLD_3D.get(name, 0.5))
                if key_seg not in segs:  # one segmenter (and its loaded models) per views / threshold setting
                    segs[key_seg] = BoxSegmenter(device="cpu", views3d=key_seg[0], threshold2d=key_seg[1],
                                                 threshold3d=key_seg[2])
                seg = segs[key_seg]
                r = dict(config=name, case=v.name, label=int(label), group=group, kwargs=CONFIGS[name],
                         threshold2d=key_seg[1], threshold3d=key_seg[2],  # since the seventeenth session
                         slices2d=slices2d,  # since the eighteenth
                         **run_case(name, CONFIGS[name], v, label, m, boxes2d, box3d, seg, with_baselines, dims))
                f.write(json.dumps(r) + "\n")
                f.flush()
                done.setdefault(key, {}).update(r)
                print(f"{name} {v.name} {label}: " + " ".join(f"{d} {r[d]['bifseg']}" for d in dims), file=sys.stderr)
    wanted = {(v.name, int(l)) for _, v, l, *_ in cases}
    print(__doc__.split("\n\n")[0].replace("\n", " "))
    print(f"\nCommand: `python {' '.join(sys.argv)}`. {a.hip} validation hippocampus subjects; 2D slices: "
          + ("every slice as the benchmarks (steps " + str(BENCH_STEP_2D) + ", else 1)" if a.benchmark_slices
             else "three per structure") + "; configurations (RefineConfig fields):\n")
    for name in names:
        print(f"- {name}: {CONFIGS[name]}; box network cut 2D {THRESHOLD_2D.get(name, 0.5)}, "
              f"3D {THRESHOLD_3D.get(name, 0.5)}")
    for dim in dims:
        rows = defaultdict(lambda: defaultdict(list))
        for name in names:
            for (c, case, label), r in done.items():
                if c != name or (case, label) not in wanted or dim not in r:
                    continue
                for meth, d in r[dim].items():
                    if meth in ("bifseg", "filled_box") or name == (a.baselines or names[-1]):
                        rows[(name, meth)][r["group"]].append(d)
        print(table(rows, dim))


if __name__ == "__main__":
    main()
