"""Benchmark: boxes from reference labels (optionally jittered), then rounds of robot scribbles.

Round 0 is the box alone; in each of the following rounds the simulated user (robot.py) adds one
scribble in the largest error region of the driver method's result, and every method gets the same
box and the same scribbles (or, with driver None, each method its own robot).

Records go to results.jsonl, one per (case, label, dim, method, round) with keys case, label,
label_name, dim, method, round, dice, jitter, seconds (compute only) and scribbled_voxels. A 2D record
aggregates every evaluated slice of that structure: `dice` is the mean slice Dice, `seconds` the median
per-slice compute time, and the per-slice values are kept in `slice_dice` / `slice_seconds` / `slices`.
"""
from __future__ import annotations

import logging
import time
import zlib
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..core.data import DecathlonDataset, split_for
from ..core.errors import DatasetError, PromptError
from ..core.image_io import Image, validate_image
from ..core.metrics import dice
from ..core.prompts import Box, box_from_mask, jitter_box, main_object, validate_box
from ..engine.scribbles import Scribbles, rows_in
from .methods import METHODS, ROUND0_ONLY, check_methods, make_runners
from .resume import ResumableResults
from .robot import next_scribble

log = logging.getLogger(__name__)

DEFAULT_ROUNDS = 5


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


def run_rounds(image: Image, ref: np.ndarray, box: Box, runners: Dict[str, object], rounds: int,
               driver: Optional[str], rng: np.random.Generator, max_length_mm: float = 30.0) -> Dict[str, list]:
    """Round 0 (the box) and `rounds` robot scribbles for every runner; method -> [(mask, seconds, voxels)].

    driver: the method whose result the robot corrects; every method then gets the same scribbles.
    None: each method gets the robot's scribbles for its own result.
    """
    out: Dict[str, list] = {}
    for name, runner in runners.items():
        mask, sec = runner.start()
        out[name] = [(mask, sec, 0)]
    shared = Scribbles()
    own = {name: Scribbles() for name in runners}
    for _ in range(rounds):
        if driver is not None:
            shared = _robot_step(out[driver][-1][0], ref, box, image, shared, rng, max_length_mm)
        for name, runner in runners.items():
            if name in ROUND0_ONLY:
                continue
            if driver is None:
                own[name] = _robot_step(out[name][-1][0], ref, box, image, own[name], rng, max_length_mm)
            scr = shared if driver is not None else own[name]
            if scr.empty:  # nothing to correct yet (the driver is perfect inside the box)
                out[name].append(out[name][-1][:2] + (0,))
                continue
            mask, sec = runner.update(scr)
            out[name].append((mask, sec, sum(scr.count)))
    return out


def _robot_step(pred, ref, box, image, scr: Scribbles, rng, max_length_mm) -> Scribbles:
    s = next_scribble(pred, ref, box, image.spacing_kji, rng, max_length_mm=max_length_mm)
    if s is None:
        return scr
    keep = ~rows_in(s.voxels, scr.bg if s.label == "fg" else scr.fg)  # a clamped voxel cannot be wrong
    return scr.added(s.voxels[keep], s.label, box, image.shape) if keep.any() else scr


def benchmark_slices(drawn: np.ndarray, min_area: int = 20, slice_step: int = 1) -> List[int]:
    """The slices (axis 0) a 2D benchmark boxes: every `slice_step`-th with at least `min_area` voxels of `drawn`."""
    return [int(k) for k in np.nonzero(drawn.sum(axis=(1, 2)) >= min_area)[0]][::max(1, slice_step)]


def benchmark_case(image: Image, label: np.ndarray, case_id: str, label_ids: Sequence[int],
                   label_names: Dict[int, str], methods: Sequence[str], segmenter, dims: Sequence[str],
                   jitter: int = 0, slice_step: int = 1, min_area: int = 20, seed: int = 0,
                   rounds: int = DEFAULT_ROUNDS, driver: Optional[str] = "auto", config=None) -> List[dict]:
    """All records of one case: per label, dim, method and round (driver: see _resolve_driver)."""
    driver = _resolve_driver(driver, methods)
    records = []
    for lab in label_ids:
        mask = label == lab
        if not mask.any():
            continue
        drawn = main_object(mask)  # boxes around the organ; Dice against the full reference label
        base = {"case": case_id, "label": int(lab), "label_name": label_names.get(lab, str(lab)),
                "jitter": int(jitter)}
        if "2d" in dims:
            slices = benchmark_slices(drawn, min_area, slice_step)
            rng = _rng(seed, case_id, lab, "2d")
            boxes = [validate_box(jitter_box(box_from_mask(drawn, 0, k), jitter, image.shape, rng), image.shape)
                     for k in slices]
            per: Dict[tuple, list] = {}
            for k, box in zip(slices, boxes):
                runners = make_runners(methods, image, box, segmenter, config)
                res = run_rounds(image, mask, box, runners, rounds, driver, _rng(seed, case_id, lab, "2d", k))
                for name, steps in res.items():
                    for r, (m, sec, nvox) in enumerate(steps):
                        if r and name in ROUND0_ONLY:
                            continue
                        per.setdefault((name, r), []).append((dice(m[k], mask[k]), sec, nvox))
            for (name, r), vals in per.items():
                d, s, v = zip(*vals)
                records.append(dict(base, dim="2d", method=name, round=r, dice=float(np.mean(d)),
                                    seconds=float(np.median(s)), slices=slices, scribbled_voxels=list(v),
                                    slice_dice=[round(x, 5) for x in d], slice_seconds=[round(x, 5) for x in s]))
        if "3d" in dims:
            rng = _rng(seed, case_id, lab, "3d")
            try:
                box = validate_box(jitter_box(box_from_mask(drawn), jitter, image.shape, rng), image.shape)
            except PromptError as exc:  # e.g. a structure on a single slice has no 3D extent
                log.warning("%s, label %s: skipped in 3D: %s", case_id, lab, exc)
                continue
            runners = make_runners(methods, image, box, segmenter, config)
            res = run_rounds(image, mask, box, runners, rounds, driver, rng)
            for name, steps in res.items():
                for r, (m, sec, nvox) in enumerate(steps):
                    if r and name in ROUND0_ONLY:
                        continue
                    records.append(dict(base, dim="3d", method=name, round=r, dice=float(dice(m, mask)),
                                        seconds=float(sec), scribbled_voxels=int(nvox),
                                        box_lo=list(box.lo), box_hi=list(box.hi)))
    return records


def run_benchmark(dataset, out, labels: Optional[Sequence[int]] = None, cases: Optional[str] = None,
                  jitter: int = 0, dims: Sequence[str] = ("2d", "3d"), methods: Sequence[str] = METHODS,
                  slice_step: int = 1, min_area: int = 20, seed: int = 0, device: str = "auto",
                  show_progress: bool = True, rounds: int = DEFAULT_ROUNDS, driver: Optional[str] = "auto",
                  config=None, views3d: Optional[int] = None, precision: Optional[str] = None) -> Path:
    """Run the benchmark and write results.jsonl, summary.md and dice.png into `out`.
    `views3d`: the 3D network's views (None: the model's own setting; see BoxSegmenter); `precision`: the
    networks' CPU inference (None: BoxSegmenter's default, "auto")."""
    ds = DecathlonDataset(dataset)
    label_ids = ds.check_labels(labels)
    case_ids = resolve_cases(ds, cases)
    dims = [d.strip().lower() for d in dims]
    if not dims or any(d not in ("2d", "3d") for d in dims):
        raise DatasetError(f"--dims must be 2d, 3d or 2d,3d; got {','.join(dims)}")
    if jitter < 0:
        raise DatasetError(f"--jitter must be >= 0 voxels; got {jitter}")
    methods = list(methods)
    check_methods(methods)
    if rounds < 0:
        raise DatasetError(f"--rounds must be >= 0; got {rounds}")
    driver = _resolve_driver(driver, methods)
    out = Path(out)
    settings = dict(
        dataset=str(Path(dataset).resolve()), labels=label_ids, cases=case_ids, jitter=jitter, dims=dims,
        methods=methods, slice_step=slice_step, min_area=min_area, seed=seed, rounds=rounds, driver=driver,
        config=vars(config) if config is not None else None)
    from ..core.device import bf16_applies, choose_device, use_bf16_cpu
    from ..engine.inference import BoxSegmenter, default_views3d
    # the views asked of 3D boxes (before the thin-box and depth rules) and the precision the networks run in,
    # so a folder of other views or precision (an earlier default, another CPU) is refused, not resumed with a mix
    dev = choose_device(device)  # once: a missing CUDA is reported once
    low = bf16_applies(use_bf16_cpu(precision or "auto"), dev)
    settings.update(views3d=default_views3d((config.views3d if config is not None else None) or views3d),
                    precision="bfloat16" if low else "float32")
    store = ResumableResults(out, settings)
    done = store.check()  # before any computing: another run's folder is refused
    if done:
        log.warning("resuming %s: %d of %d case(s) already done", out, len(done), len(case_ids))
    segmenter = BoxSegmenter(device=str(dev), views3d=views3d, precision=precision or "auto")
    store.start()
    t0 = time.monotonic()
    for case_id in tqdm([c for c in case_ids if c not in done], desc="benchmark", unit="case",
                        disable=not show_progress):
        image, label = ds.load(case_id)
        validate_image(image, case_id)
        store.add_case(case_id, benchmark_case(image, label, case_id, label_ids, ds.labels, methods, segmenter,
                                               dims, jitter, slice_step, min_area, seed, rounds, driver, config))
    records = store.records
    from .report import write_summary
    write_summary(records, out, title=f"{ds.name}: {len(case_ids)} cases, jitter {jitter} voxels, {rounds} "
                                      f"rounds, robot driven by {driver or 'each method'}",
                  seen_labels=_seen_labels(ds), elapsed=time.monotonic() - t0)
    return store.results


def _resolve_driver(driver: Optional[str], methods: Sequence[str]) -> Optional[str]:
    """'auto' -> bifseg when benchmarked, else the first method that takes scribbles; 'own'/None -> None."""
    takers = [m for m in methods if m not in ROUND0_ONLY]
    if driver == "auto":
        return "bifseg" if "bifseg" in takers else (takers[0] if takers else None)
    if driver in (None, "own"):
        return None
    if driver not in takers:
        raise DatasetError(f"the robot's driver {driver!r} must be a benchmarked method that takes scribbles "
                           f"({', '.join(takers) or 'none given'}), 'auto' or 'own'")
    return driver


def _seen_labels(ds: DecathlonDataset) -> Optional[List[int]]:
    """Labels of this dataset whose name is a class the shipped 2D model was trained on."""
    from ..core.errors import ModelError
    from ..engine.models import default_model_path, read_manifest
    try:
        trained = read_manifest(default_model_path(2)).get("training", {}).get("labels", {})
    except ModelError:
        return None
    names = {str(n).lower() for n in trained.values()}
    return [l for l, n in ds.labels.items() if l != 0 and n.lower() in names]


def run_benchmark_cli(args) -> int:
    results = run_benchmark(args.dataset, args.out, labels=args.labels, cases=args.cases, jitter=args.jitter,
                            dims=args.dims.split(","), methods=[m.strip() for m in args.methods.split(",")],
                            slice_step=args.slice_step, min_area=args.min_area, seed=args.seed, device=args.device,
                            rounds=args.rounds, driver=args.driver, views3d=args.views3d,
                            precision=args.precision)
    print((Path(args.out) / "summary.md").read_text())
    print(f"records: {results}")
    return 0
