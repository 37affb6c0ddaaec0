"""Evaluation: the CHAOS cross-validation protocol (protocol.py) and seeded case pairs on any Decathlon folder.

One record per (fold, setting, support case, query case, label): keys fold, setting, support_case,
query_case, label, dice, support_copy, adapted, adaptation, start, range, seconds (+ model, label_name,
slices). `support_copy` is the trivial baseline: each chunk's support mask copied onto its query slices
(same network grid, the reference slice range, the same chunks). `adaptation` records the step counts that
ran (None when not adapted). Records are appended to results.jsonl as they come (fsynced), so an
interrupted run keeps what it measured.

Pair evaluation refuses a model whose manifest says it trained on a case of the evaluated dataset
(`check_unseen`). `evaluate_training_pairs` is the one deliberate exception: it measures design choices on
the training patients of a fold (with that fold's model, whose training never supervised the test organs
and, in setting 2, never saw a slice showing them), so choices are never made on query patients.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from InteractiveRefineLib.core.errors import DatasetError
from InteractiveRefineLib.core.metrics import dice

from ..engine.protocol import CHAOS_GROUPS, fold_cases, organ_slices, query_chunks, support_chunk_slices
from ..engine.segment import DEFAULT_START, FewShotSegmenter, Support, auto_range_info, make_supports
from ..engine.slices import from_network, slice_grid

RANGES = ("gt", "auto")


def support_copy(supports: Sequence[Support], query_image, z0: int, z1: int, chunks: np.ndarray,
                 axis: int = 0) -> np.ndarray:
    """Baseline prediction on query slices z0..z1-1: each slice gets its chunk's support mask, on the same
    network grid (support and query fields of view matched as the network sees them), put back on the query
    grid. Returns a (z1 - z0, rows, cols) bool array."""
    grid = slice_grid(query_image, axis)
    masks = [from_network(s.mask[:, 0], grid)[0] > 0.5 for s in supports]
    return np.stack([masks[int(c)] for c in chunks])


def protocol_case(segmenter: FewShotSegmenter, support, query, organ: int, range_mode: str = "gt",
                  adapter: Optional[Callable] = None, component: bool = True, extent: bool = True,
                  follow: Optional[Callable] = None) -> Dict[str, object]:
    """Segment `organ` of `query` (image, label) from `support` (image, label); return dice and seconds.

    gt: the query organ's slice range in 3 chunks, each using its support chunk's middle slice; Dice over
    that range. auto: the middle support slice segments every query slice; Dice over the whole volume.
    component: keep only the 3D component consistent with the support position (query_range.py), in both
    modes (chosen on training patients: +0.03 to +0.06 Dice on kidneys, which otherwise pick up the other
    kidney). extent (auto only): only a window of the support organ's length (segment.auto_range_info) is
    labelled; query_range.place_window places it (network area, image and position cues), and its slices are
    segmented again with the three chunk supports (the support slices at 1/6, 1/2, 5/6 of the organ), then
    the component step again (training patients of all folds, setting 2: window on the largest cross-section
    48.4 -> placed window 57.3; benchmarks/fewshot_auto_range).
    `adapter(segmenter, supports, query_image)` returns an adapted segmenter.
    `follow(segmenter, query_image, mask, slices)`: the prediction redone by same-scan propagation through the
    query from its middle slice (engine/follow.py; gt: through the reference range, auto: automatic range),
    with the base network also after adaptation, as `segment --follow --adapt` and the panel do (chosen on
    training patients: ../../benchmarks/fewshot_auto_range/follow_adapted.md).
    """
    if range_mode not in RANGES:
        raise DatasetError(f"range must be one of {RANGES}; got {range_mode!r}")
    s_img, s_lab = support
    q_img, q_lab = query
    t0 = time.monotonic()
    ks = support_chunk_slices(s_lab, organ)
    if range_mode == "gt":
        supports = [make_supports(s_img, s_lab, k, [organ])[0] for k in ks]
    else:
        supports = make_supports(s_img, s_lab, ks[len(ks) // 2], [organ])
    zq = organ_slices(q_lab, organ)
    if zq.size == 0:
        raise DatasetError(f"label {organ} is absent from the query volume")
    z0, z1 = int(zq[0]), int(zq[-1]) + 1
    chunks = query_chunks(z0, z1 - 1)
    chunk_supports = supports if range_mode == "gt" else [make_supports(s_img, s_lab, k, [organ])[0] for k in ks]
    copy_dice = dice(support_copy(chunk_supports, q_img, z0, z1, chunks), q_lab[z0:z1] == organ)
    seg = adapter(segmenter, supports, q_img) if adapter is not None else segmenter
    if range_mode == "gt":
        result = seg.segment(supports, q_img, slices=(z0, z1), chunk_of_slice=chunks, auto_range=component)
        full = result.labels == organ
        full = follow(segmenter, q_img, full, (z0, z1)) if follow is not None else full
        pred, ref = full[z0:z1], q_lab[z0:z1] == organ
    else:
        auto = auto_range_info(s_img, s_lab, [organ], q_img) if extent else None
        result = seg.segment(supports, q_img, auto_range=component, auto=auto)
        pred, ref = result.labels == organ, q_lab == organ
        pred = follow(segmenter, q_img, pred, None) if follow is not None else pred
    return {"dice": dice(pred, ref), "support_copy": copy_dice, "seconds": round(time.monotonic() - t0, 3),
            "slices": [int(result.slices[0]), int(result.slices[1])], "component": component,
            "start": getattr(seg, "start", DEFAULT_START),
            "adaptation": seg.manifest.get("adapted") if adapter is not None else None, "follow": follow is not None}


def append_record(path: Path, record: Dict[str, object]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def evaluate_chaos(dataset, setting: int, folds: Iterable[int], out_dir: Path, model_for: Callable,
                   range_mode: str = "gt", adapter: Optional[Callable] = None, device: str = "auto",
                   groups: Dict[str, tuple] = CHAOS_GROUPS, progress: Optional[Callable[[str], None]] = None,
                   start: str = DEFAULT_START, follow: Optional[Callable] = None) -> List[Dict[str, object]]:
    """The 5-fold protocol; model_for(setting, fold, group) names the model of each fold and group."""
    records = []
    cache: Dict[str, tuple] = {}

    def load(cid):
        if cid not in cache:
            cache[cid] = dataset.load(cid)
        return cache[cid]
    for fold in folds:
        fc = fold_cases(dataset.case_ids, fold)
        for group, organs in groups.items():
            model = model_for(setting, fold, group)
            segmenter = FewShotSegmenter(model, device=device, start=start)
            check_unseen(segmenter.manifest, dataset, fc["query"] + [fc["support"]])
            for organ in organs:
                for qid in fc["query"]:
                    r = protocol_case(segmenter, load(fc["support"]), load(qid), organ, range_mode, adapter,
                                      follow=follow)
                    rec = {"fold": fold, "setting": setting, "support_case": fc["support"], "query_case": qid,
                           "label": organ, "label_name": dataset.labels.get(organ, str(organ)),
                           "adapted": adapter is not None, "range": range_mode, "model": Path(str(model)).stem, **r}
                    append_record(out_dir / "results.jsonl", rec)
                    records.append(rec)
                    if progress:
                        progress(f"fold {fold} {rec['label_name']} {qid}: dice {r['dice']:.3f}")
    return records


def sample_pairs(case_ids: Sequence[str], n_pairs: int, seed: int = 0) -> List[tuple]:
    """n_pairs distinct (support, query) ordered pairs of different cases, seeded."""
    ids = sorted(case_ids)
    if len(ids) < 2:
        raise DatasetError("pair evaluation needs at least 2 cases")
    all_pairs = [(a, b) for a in ids for b in ids if a != b]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(all_pairs), size=min(n_pairs, len(all_pairs)), replace=False)
    return [all_pairs[i] for i in sorted(pick)]


def check_unseen(manifest: Dict[str, object], dataset, cases: Iterable[str]) -> None:
    """Refuse to evaluate a model on cases its manifest says it trained on (same dataset name or same ids)."""
    training = manifest.get("training") or {}
    trained = set(training.get("cases") or [])
    names = str(training.get("dataset", "")), str(getattr(dataset, "name", ""))
    # the CHAOS sample and the full CHAOS folder hold the same patients under the same ids
    same_dataset = names[0] in ("", names[1]) or all(n.upper().startswith("CHAOS") for n in names)
    seen = sorted(trained & set(cases)) if same_dataset else []
    if seen:
        raise DatasetError(f"model {manifest.get('name', '?')} trained on {', '.join(seen)}, which this evaluation "
                           "would use as support or query; evaluate it on patients it never saw (the CHAOS "
                           "5-fold protocol without --pairs uses each fold's own models)")


def evaluate_pairs(dataset, pairs: Sequence[tuple], labels: Sequence[int], out_dir: Path, model="default",
                   range_mode: str = "gt", adapter: Optional[Callable] = None, device: str = "auto",
                   progress: Optional[Callable[[str], None]] = None, start: str = DEFAULT_START
                   ) -> List[Dict[str, object]]:
    """Seeded support/query pairs of any Decathlon dataset with one model (labels missing in a pair are skipped).

    The model must not have trained on any case of the pairs (check_unseen)."""
    segmenter = FewShotSegmenter(model, device=device, start=start)
    check_unseen(segmenter.manifest, dataset, [c for pair in pairs for c in pair])
    records = []
    for sid, qid in pairs:
        sup, qry = dataset.load(sid), dataset.load(qid)
        for organ in labels:
            if not (sup[1] == organ).any() or not (qry[1] == organ).any():
                continue
            r = protocol_case(segmenter, sup, qry, organ, range_mode, adapter)
            rec = {"fold": None, "setting": None, "support_case": sid, "query_case": qid, "label": organ,
                   "label_name": dataset.labels.get(organ, str(organ)), "adapted": adapter is not None,
                   "range": range_mode, "model": Path(str(model)).stem, **r}
            append_record(out_dir / "results.jsonl", rec)
            records.append(rec)
            if progress:
                progress(f"{rec['label_name']} {sid}->{qid}: dice {r['dice']:.3f}")
    return records


def evaluate_training_pairs(dataset, setting: int, folds: Iterable[int], out_dir: Path, model_for: Callable,
                            n_pairs: int = 3, seed: int = 0, adapter: Optional[Callable] = None,
                            device: str = "auto", groups: Dict[str, tuple] = CHAOS_GROUPS,
                            start: str = DEFAULT_START, progress: Optional[Callable[[str], None]] = None,
                            component: bool = True, range_mode: str = "gt", extent: bool = True
                            ) -> List[Dict[str, object]]:
    """Design choices measured on TRAINING patients only: per fold and group, n_pairs seeded support/query
    pairs drawn from the fold's training patients, segmented by that fold's model for the group's (test)
    organs with the protocol's chunks and reference range. Never touches a fold's query or support patient."""
    records = []
    for fold in folds:
        fc = fold_cases(dataset.case_ids, fold)
        pairs = sample_pairs(fc["train"], n_pairs, seed + fold)
        assert not {c for p in pairs for c in p} & set(fc["query"] + [fc["support"]])
        for group, organs in groups.items():
            segmenter = FewShotSegmenter(model_for(setting, fold, group), device=device, start=start)
            for sid, qid in pairs:
                sup, qry = dataset.load(sid), dataset.load(qid)
                for organ in organs:
                    if not (sup[1] == organ).any() or not (qry[1] == organ).any():
                        continue
                    r = protocol_case(segmenter, sup, qry, organ, range_mode, adapter, component, extent)
                    rec = {"fold": fold, "setting": setting, "split": "training-patients", "support_case": sid,
                           "query_case": qid, "label": organ, "label_name": dataset.labels.get(organ, str(organ)),
                           "adapted": adapter is not None, "range": range_mode,
                           "model": Path(str(model_for(setting, fold, group))).stem, **r}
                    append_record(out_dir / "results.jsonl", rec)
                    records.append(rec)
                    if progress:
                        progress(f"fold {fold} {rec['label_name']} {sid}->{qid}: dice {r['dice']:.3f} "
                                 f"(copy {r['support_copy']:.3f})")
    return records
