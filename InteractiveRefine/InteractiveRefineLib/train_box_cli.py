"""`train-box`: the resumable multi-dataset training of the class-agnostic box network (train_box.py)."""
from __future__ import annotations

import argparse
import shlex
from typing import Dict, List


def group_weights(text: str) -> Dict[str, float]:
    """argparse type of --group-weights: GROUP=W pairs, each group one of GROUP_WEIGHTS, W a number >= 0."""
    from .core.argtypes import non_negative_float
    from .training.train_box import GROUP_WEIGHTS
    out = {}
    for pair in text.split(","):
        name, sep, value = pair.partition("=")
        if not sep or name.strip() not in GROUP_WEIGHTS:
            raise argparse.ArgumentTypeError(f"expected GROUP=W pairs with GROUP one of {', '.join(GROUP_WEIGHTS)}; "
                                             f"got {pair!r}")
        out[name.strip()] = non_negative_float(value.strip())
    weights = dict(GROUP_WEIGHTS, **out)
    if not sum(weights.values()) > 0:
        raise argparse.ArgumentTypeError(f"every group weight is 0 in {text!r}")
    return weights


def add_train_box(sub) -> None:
    from .core.argtypes import (
        fraction,
        non_negative_float,
        non_negative_int,
        open_fraction,
        positive_float,
        positive_int,
    )
    from .core.threads import threads_arg
    from .training.train_box import GROUP_WEIGHTS, TRAIN_PRECISIONS
    p = sub.add_parser("train-box", help="train the class-agnostic box network (2D, also run slice by slice in "
                                         "3D boxes) on every dataset of ../shared/data; resumable")
    p.add_argument("--out", default="runs/box2d/pnet2d.json", help="best validation model (NAME.json)")
    p.add_argument("--run-dir", default="checkpoints/box2d_scratch",
                   help="checkpoint folder (last.json/.safetensors); a run from scratch refuses one that holds a "
                        "checkpoint (the committed runs are in checkpoints/box2d*/)")
    p.add_argument("--resume", action="store_true", help="continue exactly from RUN_DIR/last.json")
    p.add_argument("--init-from", metavar="MODEL.json",
                   help="start a new run from this box model's weights (new optimiser and schedule); it is "
                        "validated first and saved as the best so far, so a new best must beat its score (with "
                        "--resume: ignored, the checkpoint's run goes on)")
    p.add_argument("--data-root", help="the shared data folder (default ../shared/data)")
    p.add_argument("--max-iters", type=positive_int, default=12000, help="length of the cosine schedule")
    p.add_argument("--stop-after-minutes", type=non_negative_float, default=0.0,
                   help="checkpoint and end this run after so many minutes (resume later); 0 = run to the end")
    p.add_argument("--ckpt-minutes", type=positive_float, default=5.0)
    p.add_argument("--val-every", type=positive_int, default=250)
    p.add_argument("--batch", type=positive_int, default=16)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--warmup", type=non_negative_int, default=200, help="iterations of linear learning-rate warm-up")
    p.add_argument("--pseudo-sampling", choices=("group", "volume"), default="group",
                   help="the image of a pseudo-object: a random dataset group, then one of its volumes (default), "
                        "or any volume (sessions 8-10: most pseudo-objects then came from hippocampus crops)")
    p.add_argument("--union-fraction", type=fraction, default=0.3,
                   help="share of labelled samples drawn as a union: a structure and up to 3 more, each touching one "
                        "already taken (a structure that touches none stays alone); 0: single structures only, "
                        "as in sessions 8-10")
    p.add_argument("--ring-share", type=fraction, default=0.2,
                   help="share of pseudo-objects that are rings: a region around a hole (default 0.2)")
    p.add_argument("--group-weights", type=group_weights, default=dict(GROUP_WEIGHTS), metavar="GROUP=W,...",
                   help="relative sampling weights of some groups, the others keep theirs (default: "
                        + ", ".join(f"{g}={w}" for g, w in GROUP_WEIGHTS.items()) + ")")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    p.add_argument("--threads", type=threads_arg, default=1,
                   help="torch CPU threads (default 1, unlike the other commands: a long training run shares the "
                        "machine with other work; 0: the idle cores)")
    p.add_argument("--sample-workers", type=non_negative_int, default=0,
                   help="processes that draw training samples ahead (for a GPU, which otherwise waits for the CPU); "
                        "above 0 each sample is drawn from its own seed, so the samples are the same for any count, "
                        "but not the same as with 0 (default: one stream in this process, the recipe of sessions 1-15)")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default="fp32",
                   help="bf16: the forward pass in bfloat16 autocast, about twice as fast on a CPU with native "
                        "bfloat16 (weights and optimiser stay float32); may change on --resume (default fp32, the "
                        "recipe of sessions 1-16)")
    p.add_argument("--install", action="store_true",
                   help="after training, write the best model into the shipped Resources/Models "
                        "(pnet2d.json for 2D boxes, box3d.json for 3D boxes)")
    p.add_argument("--install-cut2d", type=open_fraction, metavar="P",
                   help="with --install: the probability where the 2D boxes' foreground starts (the shipped 0.3 was "
                        "chosen on the validation structures after training; default the network's own 0.5)")
    p.add_argument("--install-cut3d", type=open_fraction, metavar="P",
                   help="with --install: the same for 3D boxes (default 0.5)")


def run_train_box(args, argv: List[str]) -> int:
    from .core.errors import ModelError
    from .training.train_box import BoxTrainConfig, train_box
    if not args.install and (args.install_cut2d is not None or args.install_cut3d is not None):
        raise ModelError("--install-cut2d / --install-cut3d set the installed models' cuts: they need --install")
    cfg = BoxTrainConfig(out=args.out, run_dir=args.run_dir, data_root=args.data_root, batch=args.batch,
                         lr=args.lr, warmup=args.warmup, max_iters=args.max_iters,
                         pseudo_by_group=args.pseudo_sampling == "group", init_from=args.init_from,
                         union_fraction=args.union_fraction, ring_share=args.ring_share,
                         stop_after_minutes=args.stop_after_minutes,
                         ckpt_minutes=args.ckpt_minutes, val_every=args.val_every, seed=args.seed,
                         device=args.device, threads=args.threads, sample_workers=args.sample_workers,
                         precision=args.precision,
                         group_weights=args.group_weights,
                         command="python -m InteractiveRefineLib " + " ".join(shlex.quote(a) for a in argv))
    out = train_box(cfg, resume=args.resume)
    if out is None:
        print(f"no validation yet (every --val-every {args.val_every} iterations): resume with --resume")
    else:
        print(f"best model: {out}")
    if args.install:
        from .training.train_box import install_models
        if out is None:
            raise ModelError(f"--install: no model to install yet: the run stopped before its first validation "
                             f"(every --val-every {args.val_every} iterations); resume it with --resume")
        for p in install_models(out, foreground_threshold=args.install_cut2d,
                                foreground_threshold_3d=args.install_cut3d):
            print(f"installed {p}")
    return 0
