"""Command line: python -m InteractiveRefineLib {demo,segment,benchmark,train,train-box,analyze-logs,panel-timing,
large-volume} ..."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import List, Optional

from .core.argtypes import non_negative_int, positive_float, positive_int
from .core.device import PRECISIONS
from .core.errors import AdaptiveSegError, OutputError
from .core.outputs import check_output_file, check_output_folder
from .core.threads import THREADS_HELP, set_threads, threads_arg
from .evaluation.benchmark import DEFAULT_ROUNDS
from .evaluation.methods import METHODS
from .train_box_cli import add_train_box, run_train_box


def _int_list(text: str) -> List[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _shape(text: str) -> List[int]:
    """argparse type of a volume shape K,J,I."""
    values = _int_list(text)
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected K,J,I: three whole numbers >= 1, got {text!r}")
    return values


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train the 2D or 3D box -> object network")
    p.add_argument("--dataset", required=True, help="Decathlon-layout folder (dataset.json)")
    p.add_argument("--dim", type=int, choices=(2, 3), default=2)
    p.add_argument("--out", required=True, help="manifest path to write (NAME.json; weights NAME.safetensors)")
    p.add_argument("--split", help="split name or JSON path (default: the recorded split of the dataset)")
    p.add_argument("--labels", type=_int_list, default=[1, 4],
                   help="training label ids (default 1,4: CHAOS liver+spleen, kidneys unseen)")
    p.add_argument("--batch", type=positive_int, help="samples per step (default 8 in 2D, 4 in 3D)")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--max-iters", type=positive_int, default=20000)
    p.add_argument("--max-minutes", type=positive_float, default=55.0, help="time budget (the best model is kept)")
    p.add_argument("--val-every", type=positive_int, help="iterations between validations (default 100 2D, 25 3D)")
    p.add_argument("--patience", type=positive_int, default=8, help="validations without improvement before stopping")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="box -> segmentation on the embedded sample (NIfTI, PNG, metrics.json)")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


def _add_benchmark(sub) -> None:
    p = sub.add_parser("benchmark", help="box + simulated scribbles: BIFSeg vs CNN and classical baselines")
    p.add_argument("--dataset", required=True, help="Decathlon-layout folder (dataset.json)")
    p.add_argument("--out", required=True, help="output folder (results.jsonl, summary.md, PNG)")
    p.add_argument("--labels", type=_int_list, help="label ids (default: all foreground labels)")
    p.add_argument("--cases", default=None,
                   help="'all', 'test' or comma-separated case ids (default: the recorded split's test "
                        "patients when the dataset has one, else all)")
    p.add_argument("--jitter", type=non_negative_int, default=0, help="box jitter in voxels (default 0)")
    p.add_argument("--dims", default="2d,3d", help="2d, 3d or 2d,3d")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated (default: all of {','.join(METHODS)})")
    p.add_argument("--rounds", type=non_negative_int, default=DEFAULT_ROUNDS,
                   help=f"scribble rounds after the box (default {DEFAULT_ROUNDS}; 0: box only)")
    p.add_argument("--driver", default="auto",
                   help="method whose result the robot corrects; all methods get its scribbles (default auto: "
                        "bifseg when benchmarked); 'own': every method gets scribbles for its own errors")
    p.add_argument("--slice-step", type=positive_int, default=1, help="2D: every n-th labelled slice (default 1: all)")
    p.add_argument("--min-area", type=non_negative_int, default=20,
                   help="2D: skip slices where the structure has fewer voxels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--views3d", type=int, choices=(1, 3), default=None,
                   help="3D boxes: the network's views, 3 (multi-view fusion, the shipped default; boxes under 10 "
                        "voxels thin or with a network grid deeper than 40 slices keep one) or 1 (about 3x faster)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="box networks' CPU inference: auto (bfloat16 where the CPU has it natively, the default "
                        "everywhere) or fp32 (float32, no bfloat16 rounding)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


def _add_analyze_logs(sub) -> None:
    p = sub.add_parser("analyze-logs", help="per-case interaction counts, user vs compute time and time to a "
                                            "Dice from a folder of session logs (table, CSV and plot)")
    p.add_argument("folder", help="folder of *.jsonl session logs (searched recursively)")
    p.add_argument("--out", help="output folder (default: the log folder)")
    p.add_argument("--dice", type=float, default=0.9,
                   help="target Dice for 'time to reach' (default 0.9; needs a reference in the session)")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


def _add_panel_timing(sub) -> None:
    p = sub.add_parser("panel-timing", help="the Slicer panel's background steps on the embedded sample: compute "
                                            "time and the longest GUI freeze while they run")
    p.add_argument("--out", default="panel_timing", help="output folder (results.jsonl, summary.md)")
    p.add_argument("--rounds", type=non_negative_int, default=3, help="scribble rounds after the box (default 3)")
    p.add_argument("--tick", type=positive_float, default=0.1,
                   help="GUI poll interval in seconds (default 0.1, the panel's)")
    p.add_argument("--gui", choices=("both", "gil", "sleep"), default="both",
                   help="emulated main loop between polls: 'gil' holds the GIL (as Slicer's does), 'sleep' releases "
                        "it; 'both' (default) runs each and compares the compute speed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


def check_outputs(args) -> None:
    """Every output path is checked before any computing (OutputError naming the problem)."""
    cmd = args.command
    if cmd in ("demo", "panel-timing", "large-volume"):
        check_output_folder(args.out)
    elif cmd == "benchmark":
        check_output_folder(args.out, files=("results.jsonl", "summary.md", "dice.png"), inputs=(args.dataset,))
    elif cmd == "analyze-logs":
        check_output_folder(args.out or args.folder, files=("sessions.csv", "cases.md", "timing.png"))
        if args.dice is not None and not 0 < args.dice <= 1:
            raise OutputError(f"--dice {args.dice}: a target Dice lies in (0, 1]")
    elif cmd == "train":
        check_output_file(args.out, suffixes=(".json",), inputs=(args.dataset,))
    elif cmd == "train-box":  # before the first iteration, not at the first validation
        check_output_file(args.out, suffixes=(".json",))
        check_output_folder(args.run_dir, "--run-dir", files=("last.json", "last.safetensors"))
        if args.init_from and not args.resume:  # a resumed run's start is its checkpoint's
            from .engine.models import read_manifest
            read_manifest(args.init_from)


def _add_large_volume(sub) -> None:
    p = sub.add_parser("large-volume", help="time and peak memory of box steps and FewShotSeg on a synthetic "
                                            "CT-sized volume (each case in a fresh process)")
    p.add_argument("--out", default="large_volume", help="output folder (results.jsonl, summary.md)")
    p.add_argument("--shape", type=_shape, default=[300, 512, 512], help="K,J,I voxels (default 300,512,512)")
    p.add_argument("--cases", default="", help="comma-separated subset of the cases (default: all)")
    p.add_argument("--threads", type=threads_arg, default=0, help=THREADS_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m InteractiveRefineLib",
                                     description="AdaptiveSeg InteractiveRefine core (headless)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo(sub)
    _add_train(sub)
    _add_benchmark(sub)
    _add_analyze_logs(sub)
    _add_panel_timing(sub)
    _add_large_volume(sub)
    add_train_box(sub)
    from .segment_command import add_segment
    add_segment(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        set_threads(getattr(args, "threads", 0))
        check_outputs(args)
        if args.command == "train":
            return _train(args, argv)
        if args.command == "train-box":
            return run_train_box(args, argv)
        if args.command == "segment":
            from .segment_command import run_segment
            return run_segment(args)
        if args.command == "demo":
            from .evaluation.demo import run_demo
            run_demo(Path(args.out), device=args.device)
            return 0
        if args.command == "panel-timing":
            from .evaluation.panel_timing import run_panel_timing
            run_panel_timing(args.out, args.rounds, args.tick, args.device,
                             loops=("sleep", "gil") if args.gui == "both" else (args.gui,), threads=args.threads)
            print((Path(args.out) / "summary.md").read_text(), end="")
            return 0
        if args.command == "large-volume":
            from .evaluation.large_volume import CASES, run_large_volume
            cases = [c for c in args.cases.split(",") if c] or list(CASES)
            unknown = sorted(set(cases) - set(CASES))
            if unknown:
                raise OutputError(f"--cases from {', '.join(CASES)}; got {unknown}")
            print(run_large_volume(args.out, args.shape, cases, args.threads).read_text(), end="")
            return 0
        if args.command == "analyze-logs":
            from .evaluation.analyze_logs import analyze_logs
            rows, table = analyze_logs(args.folder, args.out, args.dice)
            print(table, end="")
            print(f"{len(rows)} row(s): one per session and object; wrote sessions.csv, cases.md and timing.png to "
                  f"{args.out or args.folder}")
            return 0
        from .evaluation.benchmark import run_benchmark_cli
        return run_benchmark_cli(args)
    except AdaptiveSegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _train(args, argv) -> int:
    from .training.train import TrainConfig, train
    cfg = TrainConfig(dataset=args.dataset, out=args.out, dim=args.dim, split=args.split, labels=args.labels,
                      batch=args.batch or (8 if args.dim == 2 else 4), lr=args.lr, max_iters=args.max_iters,
                      max_minutes=args.max_minutes, val_every=args.val_every or (100 if args.dim == 2 else 25),
                      patience=args.patience, seed=args.seed, device=args.device, threads=args.threads,
                      command="python -m InteractiveRefineLib " + " ".join(shlex.quote(a) for a in argv))
    out = train(cfg)
    print(f"saved {out}")
    return 0
