"""Benchmark: boxes from reference labels (optionally jittered) -> each method -> Dice and compute time.

Records go to results.jsonl, one per (case, label, dim, method, round) with keys case, label,
label_name, dim, method, round, dice, jitter, seconds. A 2D record aggregates every evaluated slice of
that structure: `dice` is the mean slice Dice, `seconds` the median per-slice compute time, and the
per-slice values are kept in `slice_dice` / `slice_seconds` / `slices`.
"""
from __future__ import annotations

import json
import logging
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from .atomic import atomic_path
from .data import DecathlonDataset, split_for
from .errors import DatasetError, PromptError
from .image_io import Image, validate_image
from .metrics import dice
from .prompts import Box, box_from_mask, jitter_box, main_object, validate_box

log = logging.getLogger(__name__)

METHODS = ("cnn", "graphcut", "random_walker")


def make_methods(names: Sequence[str], device: str = "auto") -> Dict[str, Callable[[Image, Box], object]]:
    """Method name -> callable(image, box) returning a Prediction; all get the same box."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise DatasetError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
    methods: Dict[str, Callable] = {}
    for name in names:
        if name == "cnn":
            from .inference import BoxSegmenter
            seg = BoxSegmenter(device=device)
            methods[name] = lambda image, box, seg=seg: seg.predict(image, box, validate=False)
        elif name == "graphcut":
            from .baselines import graphcut_segment
            methods[name] = graphcut_segment
        else:
            from .baselines import random_walker_segment
            methods[name] = random_walker_segment
    return methods


def resolve_cases(ds: DecathlonDataset, cases: Optional[str]) -> List[str]:
    """'all', 'test' (the recorded split's test patients), a comma list, or None (test if a split exists)."""
    if cases in (None, "", "test"):
        split = split_for(ds)
        if split is None:
            if cases == "test":
                raise DatasetError(f"no recorded split for dataset {ds.name}: use --cases all or a list")
            return ds.case_ids
        return list(split["test"])
    if cases == "all":
        return ds.case_ids
    ids = [c.strip() for c in cases.split(",") if c.strip()]
    ds.select(ids)  # raises DatasetError for unknown ids
    return ids


def _rng(seed: int, *keys) -> np.random.Generator:
    """A generator per (case, label, dim): the same jitter whatever else is benchmarked (crc32, not
    hash(): str hashes change between processes)."""
    return np.random.default_rng([seed] + [zlib.crc32(str(k).encode()) for k in keys])


def benchmark_case(image: Image, label: np.ndarray, case_id: str, label_ids: Sequence[int],
                   label_names: Dict[int, str], methods: Dict[str, Callable], dims: Sequence[str],
                   jitter: int = 0, slice_step: int = 1, min_area: int = 20, seed: int = 0) -> List[dict]:
    """All records of one case."""
    records = []
    for lab in label_ids:
        mask = label == lab
        if not mask.any():
            continue
        drawn = main_object(mask)  # boxes around the organ; Dice against the full reference label
        base = {"case": case_id, "label": int(lab), "label_name": label_names.get(lab, str(lab)),
                "round": 0, "jitter": int(jitter)}
        if "2d" in dims:
            slices = [int(k) for k in np.nonzero(drawn.sum(axis=(1, 2)) >= min_area)[0]][::max(1, slice_step)]
            rng = _rng(seed, case_id, lab, "2d")
            boxes = [validate_box(jitter_box(box_from_mask(drawn, 0, k), jitter, image.shape, rng), image.shape)
                     for k in slices]
            for name, fn in methods.items():
                d, s = [], []
                for k, box in zip(slices, boxes):
                    pred = fn(image, box)
                    d.append(dice(pred.mask[k], mask[k]))
                    s.append(pred.seconds)
                if d:
                    records.append(dict(base, dim="2d", method=name, dice=float(np.mean(d)),
                                        seconds=float(np.median(s)), slices=slices,
                                        slice_dice=[round(v, 5) for v in d], slice_seconds=[round(v, 5) for v in s]))
        if "3d" in dims:
            rng = _rng(seed, case_id, lab, "3d")
            try:
                box = validate_box(jitter_box(box_from_mask(drawn), jitter, image.shape, rng), image.shape)
            except PromptError as exc:  # e.g. a structure on a single slice has no 3D extent
                log.warning("%s, label %s: skipped in 3D: %s", case_id, lab, exc)
                continue
            for name, fn in methods.items():
                pred = fn(image, box)
                records.append(dict(base, dim="3d", method=name, dice=float(dice(pred.mask, mask)),
                                    seconds=float(pred.seconds), box_lo=list(box.lo), box_hi=list(box.hi)))
    return records


def run_benchmark(dataset, out, labels: Optional[Sequence[int]] = None, cases: Optional[str] = None,
                  jitter: int = 0, dims: Sequence[str] = ("2d", "3d"), methods: Sequence[str] = METHODS,
                  slice_step: int = 1, min_area: int = 20, seed: int = 0, device: str = "auto",
                  show_progress: bool = True) -> Path:
    """Run the benchmark and write results.jsonl, summary.md and dice.png into `out`."""
    ds = DecathlonDataset(dataset)
    label_ids = ds.check_labels(labels)
    case_ids = resolve_cases(ds, cases)
    dims = [d.strip().lower() for d in dims]
    if not dims or any(d not in ("2d", "3d") for d in dims):
        raise DatasetError(f"--dims must be 2d, 3d or 2d,3d; got {','.join(dims)}")
    if jitter < 0:
        raise DatasetError(f"--jitter must be >= 0 voxels; got {jitter}")
    fns = make_methods(methods, device)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    t0 = time.monotonic()
    records: List[dict] = []
    with atomic_path(results, suffix=".jsonl") as tmp, open(tmp, "w") as f:
        for case_id in tqdm(case_ids, desc="benchmark", unit="case", disable=not show_progress):
            image, label = ds.load(case_id)
            validate_image(image, case_id)
            for rec in benchmark_case(image, label, case_id, label_ids, ds.labels, fns, dims, jitter,
                                      slice_step, min_area, seed):
                f.write(json.dumps(rec) + "\n")
                records.append(rec)
    from .report import write_summary
    write_summary(records, out, title=f"{ds.name}: {len(case_ids)} cases, jitter {jitter} voxels",
                  seen_labels=_seen_labels(ds), elapsed=time.monotonic() - t0)
    return results


def _seen_labels(ds: DecathlonDataset) -> Optional[List[int]]:
    """Labels of this dataset whose name is a class the shipped 2D model was trained on."""
    from .errors import ModelError
    from .models import default_model_path, read_manifest
    try:
        trained = read_manifest(default_model_path(2)).get("training", {}).get("labels", {})
    except ModelError:
        return None
    names = {str(n).lower() for n in trained.values()}
    return [l for l, n in ds.labels.items() if l != 0 and n.lower() in names]


def run_benchmark_cli(args) -> int:
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    results = run_benchmark(args.dataset, args.out, labels=args.labels, cases=args.cases, jitter=args.jitter,
                            dims=args.dims.split(","), methods=[m.strip() for m in args.methods.split(",")],
                            slice_step=args.slice_step, min_area=args.min_area, seed=args.seed, device=args.device)
    print((Path(args.out) / "summary.md").read_text())
    print(f"records: {results}")
    return 0
