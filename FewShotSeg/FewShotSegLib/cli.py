"""python -m FewShotSegLib {segment, train, pretrain, evaluate, time, demo}: the FewShotSeg panel, headless."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from InteractiveRefineLib.core.argtypes import non_negative_int, positive_float, positive_int
from InteractiveRefineLib.core.errors import AdaptiveSegError, DatasetError, PromptError
from InteractiveRefineLib.core.outputs import check_output_file, check_output_folder
from InteractiveRefineLib.core.threads import THREADS_HELP, set_threads, threads_arg

log = logging.getLogger("FewShotSegLib")


def parse_range(text: str, n_max: int = 1000) -> List[int]:
    """'0-4' -> [0..4]; '1,3' -> [1, 3]."""
    out: List[int] = []
    try:
        for part in text.split(","):
            if "-" in part:
                a, b = part.split("-")
                out += list(range(int(a), int(b) + 1))
            elif part.strip():
                out.append(int(part))
    except ValueError:
        raise DatasetError(f"cannot read the list {text!r}; use e.g. 0-4 or 0,2,3") from None
    return out


def parse_slices(text: str) -> Optional[Tuple[int, int]]:
    """'auto' / 'all' -> None (every slice); 'FIRST:LAST' (inclusive) -> (FIRST, LAST + 1)."""
    if text in ("auto", "all"):
        return None
    try:
        first, last = (int(v) for v in text.split(":"))
    except ValueError:
        raise PromptError(f"--range must be auto, all or FIRST:LAST (inclusive slice indices); got {text!r}") from None
    if first > last or first < 0:
        raise PromptError(f"--range {text}: FIRST:LAST must satisfy 0 <= FIRST <= LAST (inclusive slice indices)")
    return first, last + 1


def positive_seconds(text: str) -> float:
    """argparse type of a time budget: a finite number of seconds > 0."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (v > 0 and v != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a time budget in seconds > 0, got {text!r}")
    return v


def keep_previous(*paths: Path) -> None:
    """Move an earlier run's files aside together (results.<n>.jsonl, summary.<n>.md, one n) instead of
    overwriting them, so that no summary stands beside another run's results."""
    present = [p for p in paths if p.exists()]
    if present:
        n = 1
        while any(p.with_name(f"{p.stem}.{n}{p.suffix}").exists() for p in paths):
            n += 1
        for p in present:
            p.rename(p.with_name(f"{p.stem}.{n}{p.suffix}"))


# evaluate's options that only one of its branches reads, with their defaults (None: not given); --follow and
# --follow-box have their own refusal (cmd_evaluate)
PROTOCOL_ONLY = {"--train": False, "--models": "", "--validate": 0, "--setting": None, "--folds": None}
PAIRS_ONLY = {"--labels": "", "--model": "default"}


def check_evaluate_options(a, protocol: bool) -> None:
    """Refuse an option the chosen branch would silently ignore (before any file is moved or read)."""
    unread = PAIRS_ONLY if protocol else PROTOCOL_ONLY
    given = [flag for flag, default in unread.items() if getattr(a, flag[2:].replace("-", "_")) != default]
    if given and protocol:
        raise PromptError(f"{', '.join(given)}: read by pair evaluation (--pairs N) only; the CHAOS protocol uses "
                          "the per-fold models (--models FOLDER)")
    if given:
        raise PromptError(f"{', '.join(given)}: read by the CHAOS protocol only; this is pair evaluation "
                          "(--pairs, or a folder other than CHAOS)")
    if a.steps is not None and not a.train:
        raise PromptError("--steps: the training steps of --train; without --train nothing is trained")


def _progress_printer(prefix: str):
    def show(msg):
        print(f"[{prefix}] {msg}", file=sys.stderr, flush=True)
    return show


def cmd_segment(a) -> int:
    from .options import check_adapt_options
    check_adapt_options(a)
    if a.propagate and a.follow:
        raise PromptError("--follow follows a few-shot prediction; --propagate already segments the support scan")
    if a.propagate:
        from .options import cmd_propagate
        return cmd_propagate(a)
    if a.query is None:
        raise PromptError("--query is required (it may be left out only with --propagate)")
    from .options import adapt_config, check_propagation_flags, propagation_setup
    check_propagation_flags(a)
    from InteractiveRefineLib.core.image_io import read_image, read_label, write_image
    from InteractiveRefineLib.engine.memory import check_memory, fewshot_bytes

    from .engine.adapt import adapt_segmenter
    from .engine.intensity_check import check_not_constant, modality_warning
    from .engine.segment import (
        MIN_WINDOW_SLICES,
        FewShotSegmenter,
        Segmentation,
        auto_range_info,
        combine_labels,
        make_supports,
    )
    check_output_file(a.out, inputs=(a.support_image, a.support_label, a.query))
    s_img = read_image(a.support_image, "support image")
    s_lab = read_label(a.support_label, s_img, "support label")
    q_img = read_image(a.query, "query image")
    check_not_constant(q_img, "query image")
    slices = parse_slices(a.range)
    n = q_img.shape[a.axis] if a.axis in (0, 1, 2) else 0
    if slices is not None and slices[1] > n:  # before the model is loaded
        raise PromptError(f"query slice range {slices[0]}..{slices[1] - 1} is outside the query volume (0..{n - 1})")
    warnings = [w for w in [modality_warning(s_img, q_img)] if w]
    for warning in warnings:  # before the support is checked: the warning also explains a failure
        print(f"warning: {warning}", file=sys.stderr)
    supports = make_supports(s_img, s_lab, a.slice, a.label, a.axis)
    check_memory(fewshot_bytes(q_img.shape, len(supports)), f"segmenting the query {q_img.shape}")
    seg = FewShotSegmenter(a.model, device=a.device, start=a.start)
    # the component consistent with the support is kept in a given range too, as the panel and the evaluation
    # do (docs/fewshot.md, query range (a)); `all` is the network's raw answer on every slice
    kw = dict(axis=a.axis, slices=slices, auto_range=a.range != "all")
    if a.range == "auto":  # the organ's window: its support length, placed by query_range.place_window
        kw["auto"] = auto_range_info(s_img, s_lab, [s.label for s in supports], q_img, a.axis)
        short = [s.label for s in supports if kw["auto"][s.label].estimated]
        if short:
            warnings.append(f"label(s) {short} are drawn on fewer than {MIN_WINDOW_SLICES} support slices: their "
                            "length is unknown, so --range auto estimates it from the drawn cross-section; give "
                            "--range FIRST:LAST if the organ is cut")
            print(f"warning: {warnings[-1]}", file=sys.stderr)
    if a.adapt:  # one adapted network per label (each label is its own 1-way episode)
        cfg = adapt_config(a)
        results = [adapt_segmenter(seg, [s], q_img, a.axis, cfg).segment([s], q_img, **kw) for s in supports]
        probs = {k: v for r in results for k, v in r.probabilities.items()}
        result = Segmentation(combine_labels(probs), probs, results[-1].slices)
    else:
        result = seg.segment(supports, q_img, **kw)
    box = None
    if a.follow:  # each label followed through the query by same-scan propagation (engine/follow.py)
        from .engine.follow import follow
        box, options = propagation_setup(a)  # the base network follows, also after --adapt (engine/follow.py)
        probs = {k: follow(seg, q_img, result.labels == k, a.axis, slices, box_segmenter=box, **options)
                 .astype("float32") for k in result.probabilities}
        result = Segmentation(combine_labels(probs), probs, result.slices)
    write_image(q_img, a.out, result.labels)
    first, stop = result.slices  # reported inclusive, as --range takes them
    print(json.dumps({"out": str(a.out), "labels": sorted(result.probabilities), "slices": [first, stop - 1],
                      "voxels": {int(k): int((result.labels == k).sum()) for k in result.probabilities},
                      "adapted": bool(a.adapt), "followed": bool(a.follow), "box_network": box is not None,
                      "box_precision": box.precision if box is not None else None,
                      "warnings": warnings}))
    return 0


def cmd_train(a) -> int:
    from InteractiveRefineLib.core.data import DecathlonDataset
    from InteractiveRefineLib.core.device import choose_device

    from .engine.models import fold_model_name, models_dir
    from .engine.protocol import CHAOS_GROUPS
    from .options import train_kwargs
    from .training.train import TrainConfig, fold_training_cases, train_protocol_model
    ds = DecathlonDataset(a.dataset)
    cfg = TrainConfig(steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed)
    device = choose_device(a.device)
    out_dir = check_output_folder(Path(a.out) if a.out else models_dir())
    if a.default:
        cases = [c for c in ds.case_ids if c not in set(a.exclude or [])]
        path = train_protocol_model(ds, out_dir / "default.json", 1, None, cases, cfg, device, command=a.command_line,
                                    **train_kwargs(a, "default"))
        print(f"wrote {path}" if path else "stopped early; checkpoint kept")
        return 0
    groups = a.groups.split(",") if a.groups else list(CHAOS_GROUPS)
    for fold in parse_range(a.folds):
        for group in groups:
            if group not in CHAOS_GROUPS:
                raise DatasetError(f"unknown group {group!r}; groups are {sorted(CHAOS_GROUPS)}")
            path = out_dir / f"{fold_model_name(a.setting, fold, group)}.json"
            done = train_protocol_model(ds, path, a.setting, group, fold_training_cases(ds, fold), cfg, device,
                                        fold=fold, command=a.command_line,
                                        **train_kwargs(a, fold_model_name(a.setting, fold, group)))
            print(f"wrote {path}" if done else f"{path.stem}: stopped early; checkpoint kept", flush=True)
    return 0


def is_chaos_protocol(ds) -> bool:
    return len(ds.case_ids) == 20 and all(c.startswith("chaos_") for c in ds.case_ids) and \
        set(ds.foreground_labels) == {1, 2, 3, 4}


def cmd_evaluate(a) -> int:
    from InteractiveRefineLib.core.data import DecathlonDataset

    from .engine.adapt import adapt_segmenter
    from .engine.models import fold_model_name, models_dir
    from .evaluation.evaluate import evaluate_chaos, evaluate_pairs, evaluate_training_pairs, sample_pairs
    from .evaluation.summary import write_summary
    from .options import adapt_config, check_adapt_options
    check_adapt_options(a)
    if a.box_precision is not None and not a.follow_box:
        raise PromptError("--box-precision: the box network's, which only --follow-box uses")
    if a.follow and a.follow_box:
        raise PromptError("--follow-box is --follow with the box network: give one of them")
    out = check_output_folder(a.out, files=("results.jsonl", "summary.md"), inputs=(a.dataset,))
    ds = DecathlonDataset(a.dataset)
    protocol = is_chaos_protocol(ds) and not a.pairs
    if (a.follow or a.follow_box) and not (protocol and not a.validate):
        flag = "--follow-box" if a.follow_box else "--follow"
        raise PromptError(f"{flag} is measured on the CHAOS protocol (no --pairs, no --validate)")
    check_evaluate_options(a, protocol)
    a.setting, a.folds, a.steps = a.setting or 2, a.folds or "0-4", a.steps or 1000
    labels = None
    if not protocol:
        labels = ds.check_labels(parse_range(a.labels)) if a.labels else ds.foreground_labels
    out.mkdir(parents=True, exist_ok=True)
    keep_previous(out / "results.jsonl", out / "summary.md")
    adapter = None
    if a.adapt:
        cfg = adapt_config(a)

        def adapter(seg, supports, q_img):
            return adapt_segmenter(seg, supports, q_img, 0, cfg)
    follower = None
    if a.follow or a.follow_box:
        from .engine.follow import follow
        box = None
        if a.follow_box:  # not protocol-clean: the box network saw CHAOS liver/spleen labels and these images
            from .engine.propagate import box_network
            box = box_network(a.device, a.box_precision or "auto")

        def follower(seg, q_img, mask, slices):
            return follow(seg, q_img, mask, 0, slices, box_segmenter=box)
    show = _progress_printer("evaluate")
    if protocol:
        model_dir = Path(a.models) if a.models else models_dir()
        if a.train:
            from InteractiveRefineLib.core.device import choose_device

            from .engine.protocol import CHAOS_GROUPS
            from .training.train import TrainConfig, fold_training_cases, train_protocol_model
            model_dir = out / "models"
            for fold in parse_range(a.folds):
                for group in CHAOS_GROUPS:
                    train_protocol_model(ds, model_dir / f"{fold_model_name(a.setting, fold, group)}.json",
                                         a.setting, group, fold_training_cases(ds, fold),
                                         TrainConfig(steps=a.steps), choose_device(a.device), fold=fold,
                                         command=a.command_line)

        def model_for(setting, fold, group):
            return model_dir / f"{fold_model_name(setting, fold, group)}.json"
        if a.validate:
            records = evaluate_training_pairs(ds, a.setting, parse_range(a.folds), out, model_for, a.validate,
                                             a.seed, adapter, a.device, start=a.start, progress=show,
                                             range_mode=a.range)
            title = (f"CHAOS T2-SPIR, setting {a.setting}: {a.validate} pairs of TRAINING patients per fold "
                     f"(design choices; start {a.start})")
        else:
            records = evaluate_chaos(ds, a.setting, parse_range(a.folds), out, model_for, a.range, adapter,
                                     a.device, progress=show, start=a.start, follow=follower)
            title = (f"CHAOS T2-SPIR few-shot protocol, setting {a.setting} (start {a.start}"
                     + (f"; followed through each query with the box network ({box.precision}): NOT protocol-"
                        "clean, the box network was trained on CHAOS liver/spleen labels and these patients' images)"
                        if a.follow_box
                        else "; followed through each query by same-scan propagation)" if a.follow else ")"))
    else:
        pairs = sample_pairs(ds.case_ids, a.pairs or 20, a.seed)
        records = evaluate_pairs(ds, pairs, labels, out, a.model, a.range, adapter, a.device, progress=show,
                                 start=a.start)
        title = f"{ds.name}: {len(pairs)} seeded support/query pairs (seed {a.seed}), model {a.model}"
    if not records:
        raise DatasetError("nothing was evaluated: no label is present in both support and query of any pair")
    write_summary(out, records, title, a.command_line)
    print((out / "summary.md").read_text())
    return 0


def cmd_time(a) -> int:
    from InteractiveRefineLib.core.data import DecathlonDataset

    from .engine.segment import FewShotSegmenter
    from .evaluation.timing import time_case
    ds = DecathlonDataset(a.dataset)
    seg = FewShotSegmenter(a.model, device=a.device)
    result = time_case(seg, ds.load(a.support), ds.load(a.query), a.label, a.repeats, not a.no_adapt)
    print(json.dumps(result, indent=2))
    return 0


def cmd_demo(a) -> int:
    from .evaluation.demo import run_demo
    out = check_output_folder(a.out)
    metrics = run_demo(out, device=a.device, adapt=not a.no_adapt)
    print(json.dumps(metrics, indent=2))
    print(f"wrote label maps (*.nii.gz), overlays (*.png) and metrics.json to {out.resolve()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .options import (
        BOX_PRECISIONS,
        add_adapt_steps,
        add_pretrain_parser,
        add_propagate,
        add_start_argument,
        add_train_resume,
        add_validate,
    )
    p = argparse.ArgumentParser(prog="python -m FewShotSegLib",
                                description="AdaptiveSeg FewShotSeg: segment a new organ in a whole volume from one "
                                            "annotated support slice (RP-Net), optionally adapted to the exemplar "
                                            "(ELSNet).")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment a query volume from one annotated support slice")
    s.add_argument("--support-image", required=True)
    s.add_argument("--support-label", required=True, help="label map on the support image grid")
    s.add_argument("--slice", type=int, required=True, help="support slice index along --axis")
    s.add_argument("--label", type=int, action="append", help="label id(s) to learn (default: all on the slice)")
    s.add_argument("--axis", type=int, default=0, help="array axis of the slices: 0 = K (axial for axial scans)")
    s.add_argument("--query", default=None, help="query image (with --propagate: the support image)")
    s.add_argument("--out", required=True, help="output label map (.nii.gz), query grid")
    s.add_argument("--range", default="auto",
                   help="auto (keep the component consistent with the support, and only a window of the organ's "
                        "length, placed on the query by network, image and position cues: its support length "
                        "when drawn on 3 or more support slices, else estimated from the drawn cross-section), "
                        "all (every slice, the network's raw answer), or FIRST:LAST query slices (inclusive; the "
                        "component consistent with the support kept, as the panel does)")
    s.add_argument("--adapt", action="store_true", help="exemplar adaptation first (ELSNet)")
    s.add_argument("--follow", action="store_true",
                   help="then follow each label through the query by same-scan propagation from the middle slice "
                        "of its prediction, with the box network (an option; docs/fewshot.md)")
    s.add_argument("--adapt-seconds", type=positive_seconds, default=None,
                   help="optional cap in seconds on the adaptation (default: none; the step "
                        "counts define it)")
    s.add_argument("--model", default="default", help="shipped model name or path to a manifest .json")
    s.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    add_start_argument(s)
    add_adapt_steps(s)
    add_propagate(s)
    s.set_defaults(func=cmd_segment)

    t = sub.add_parser("train", help="train per-fold CHAOS models (or --default: the shipped default model)")
    t.add_argument("--dataset", required=True)
    t.add_argument("--setting", type=int, default=2, choices=[1, 2])
    t.add_argument("--folds", default="0-4")
    t.add_argument("--groups", default="", help="upper,lower (default both)")
    t.add_argument("--default", action="store_true", help="train the default model on every label")
    t.add_argument("--exclude", nargs="*", help="cases left out of the default model's training")
    t.add_argument("--steps", type=positive_int, default=1000)
    t.add_argument("--batch", type=positive_int, default=8)
    t.add_argument("--lr", type=positive_float, default=1e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="", help="model folder (default: FewShotSeg/Resources/Models)")
    t.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    add_train_resume(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="CHAOS 5-fold protocol, or seeded pairs on any Decathlon folder")
    e.add_argument("--dataset", required=True)
    e.add_argument("--setting", type=int, default=None, choices=[1, 2], help="CHAOS protocol setting (default 2)")
    e.add_argument("--folds", default=None, help="CHAOS protocol folds (default 0-4)")
    e.add_argument("--adapt", action="store_true")
    e.add_argument("--adapt-seconds", type=positive_seconds, default=None,
                   help="optional cap in seconds on the adaptation (default: none; the step "
                        "counts define it)")
    e.add_argument("--range", default="gt", choices=["gt", "auto"])
    e.add_argument("--out", required=True)
    e.add_argument("--train", action="store_true", help="retrain the per-fold models first (into OUT/models)")
    e.add_argument("--steps", type=positive_int, default=None, help="training steps with --train (default 1000)")
    e.add_argument("--models", default="", help="folder of per-fold models (default: the shipped ones)")
    e.add_argument("--pairs", type=non_negative_int, default=0,
                   help="seeded support/query pairs (default 20 off CHAOS; on CHAOS: pair evaluation instead of "
                        "the protocol)")
    e.add_argument("--labels", default="", help="labels for pair evaluation, e.g. 1,3 (default all)")
    e.add_argument("--model", default="default", help="model for pair evaluation")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--follow", action="store_true",
                   help="redo each prediction by same-scan propagation through the query from its middle slice, "
                        "with the fold's own model only (engine/follow.py; the CHAOS protocol only)")
    e.add_argument("--follow-box", action="store_true",
                   help="--follow with InteractiveRefine's box network carried slice to slice: not protocol-clean "
                        "(that network was trained on CHAOS liver/spleen labels and these patients' images)")
    e.add_argument("--box-precision", choices=BOX_PRECISIONS, default=None,
                   help="with --follow-box: the box network's CPU inference, auto (bfloat16 where the CPU has it "
                        "natively, the default) or fp32 (float32)")
    e.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    add_start_argument(e)
    add_adapt_steps(e)
    add_validate(e)
    e.set_defaults(func=cmd_evaluate)

    m = sub.add_parser("time", help="time whole-volume segmentation and exemplar adaptation on one case pair")
    m.add_argument("--dataset", required=True)
    m.add_argument("--support", required=True, help="support case id")
    m.add_argument("--query", required=True, help="query case id")
    m.add_argument("--label", type=int, default=1)
    m.add_argument("--repeats", type=positive_int, default=3)
    m.add_argument("--no-adapt", action="store_true")
    m.add_argument("--model", default="default")
    m.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    m.set_defaults(func=cmd_time)

    d = sub.add_parser("demo", help="embedded sample: support from one patient, query another")
    d.add_argument("--out", default="fewshot_demo")
    d.add_argument("--no-adapt", action="store_true")
    d.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    d.set_defaults(func=cmd_demo)
    add_pretrain_parser(sub)
    for sp in sub.choices.values():  # also after the command; SUPPRESS keeps a value given before it
        if "--threads" not in sp._option_string_actions:
            sp.add_argument("--threads", type=threads_arg, default=argparse.SUPPRESS, help=THREADS_HELP)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.command_line = " ".join(["python -m FewShotSegLib"] + argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        set_threads(args.threads)
        return int(args.func(args) or 0)
    except AdaptiveSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

