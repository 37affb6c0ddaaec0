"""Command-line options of the protocol, adaptation, resumable training and pretraining (torch-free).

cli.py builds the parser and calls these; keeping them here keeps the options and what reads them together.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data"
CHECKPOINT_ROOT = Path(__file__).resolve().parents[2] / "checkpoints" / "fewshot"
PRETRAINED = CHECKPOINT_ROOT / "pretrained_external.json"
BOX_PRECISIONS = ("auto", "fp32")  # InteractiveRefineLib.core.device.PRECISIONS (that module imports torch)


def add_start_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--start", default="prototype", choices=["prototype", "affine"],
                   help="initial query mask: the prototype step (default, chosen on training patients) or "
                        "RP-Net's affine-registered support mask")


def add_adapt_steps(p: argparse.ArgumentParser) -> None:
    """Step counts define the adaptation (reproducible); --adapt-seconds (in cli.py) is only a cap."""
    from InteractiveRefineLib.core.argtypes import non_negative_int
    p.add_argument("--adapt-steps", type=non_negative_int, default=None,
                   help="stage-1 adaptation steps (default: AdaptConfig)")
    p.add_argument("--adapt-pseudo-steps", type=non_negative_int, default=None,
                   help="stage-2 (pseudo-label) adaptation steps (default: AdaptConfig)")


def check_adapt_options(a) -> None:
    """Refuse the adaptation's step counts and time cap without --adapt, where nothing would read them."""
    from InteractiveRefineLib.core.errors import PromptError
    given = [flag for flag, value in (("--adapt-steps", a.adapt_steps), ("--adapt-pseudo-steps", a.adapt_pseudo_steps),
                                      ("--adapt-seconds", a.adapt_seconds)) if value is not None]
    if given and not a.adapt:
        raise PromptError(f"{', '.join(given)}: settings of the exemplar adaptation, which runs only with --adapt")


def adapt_config(a):
    """AdaptConfig from the parsed options: step counts, and the time cap only when --adapt-seconds is given."""
    from .engine.adapt import AdaptConfig
    kw = {"time_budget": getattr(a, "adapt_seconds", None)}
    if getattr(a, "adapt_steps", None) is not None:
        kw["steps"] = int(a.adapt_steps)
    if getattr(a, "adapt_pseudo_steps", None) is not None:
        kw["pseudo_steps"] = int(a.adapt_pseudo_steps)
    return AdaptConfig(**kw)


def add_train_resume(t: argparse.ArgumentParser) -> None:
    from InteractiveRefineLib.core.argtypes import non_negative_int, positive_float
    t.add_argument("--init", default="", help="start from this model's weights (e.g. the pretrained encoder "
                                               f"{PRETRAINED.relative_to(PRETRAINED.parents[2])})")
    t.add_argument("--resume", default="", help="continue from this checkpoint (.json), or from a folder of "
                                                 "checkpoints NAME.json (models without one start afresh)")
    t.add_argument("--checkpoint-dir", default="",
                   help="where checkpoints are written (one per model, NAME.json + NAME.safetensors); default "
                        "OUT/checkpoints with --out, else checkpoints/fewshot/train (outside the shipped models)")
    t.add_argument("--checkpoint-minutes", type=positive_float, default=5.0)
    t.add_argument("--stop-after", type=non_negative_int, default=None,
                   help="stop after this many steps (checkpoint kept; 0: only the starting checkpoint)")


def checkpoint_dir(a, kind: str) -> Path:
    """--checkpoint-dir, or OUT/checkpoints when an output was given, or checkpoints/fewshot/KIND."""
    if a.checkpoint_dir:
        return Path(a.checkpoint_dir)
    out = Path(a.out) if a.out else None
    if out is not None and out != PRETRAINED:
        return (out.parent if out.suffix == ".json" else out) / "checkpoints"
    return CHECKPOINT_ROOT / kind


def checkpoint_for(a, name: str):
    """(checkpoint path, resume path or None) of model `name` under the train options."""
    ck = checkpoint_dir(a, "train") / f"{name}.json"
    resume = None
    if a.resume:
        r = Path(a.resume)
        if r.is_dir() or r.suffix != ".json":  # a folder: resume the models whose checkpoint is there
            resume = r / f"{name}.json" if (r / f"{name}.json").is_file() else None
        else:
            resume = r
    return ck, resume


def train_kwargs(a, name: str) -> dict:
    ck, resume = checkpoint_for(a, name)
    return {"checkpoint": ck, "resume": resume, "init": a.init or None,
            "checkpoint_seconds": 60.0 * a.checkpoint_minutes, "stop_after": a.stop_after}


def add_validate(e: argparse.ArgumentParser) -> None:
    from InteractiveRefineLib.core.argtypes import non_negative_int
    e.add_argument("--validate", type=non_negative_int, default=0, metavar="N",
                   help="CHAOS: measure on N seeded pairs of each fold's TRAINING patients (design choices; "
                        "never the fold's query or support patients)")


def add_pretrain_parser(sub) -> argparse.ArgumentParser:
    from InteractiveRefineLib.core.argtypes import non_negative_int, positive_float, positive_int
    p = sub.add_parser("pretrain", help="pretrain the network on external data only (superpixel + supervised "
                                        "episodes; never CHAOS, never the tumour set)")
    p.add_argument("--data", default=str(DEFAULT_DATA_ROOT), help="folder holding the external datasets")
    p.add_argument("--sources", default="", help="comma-separated dataset folders (default: all six)")
    p.add_argument("--max-cases", type=non_negative_int, default=0,
                   help="at most this many cases per dataset (0: defaults)")
    p.add_argument("--slice-step", type=non_negative_int, default=0, help="every n-th slice (0: per-dataset defaults)")
    p.add_argument("--steps", type=positive_int, default=20000)
    p.add_argument("--batch", type=positive_int, default=8)
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(PRETRAINED), help="model manifest to write (.json)")
    p.add_argument("--resume", default="", help="checkpoint to continue from")
    p.add_argument("--init", default="", help="start from this model's weights with a new schedule (a further "
                                               "pretraining stage, e.g. from the committed pretrained encoder)")
    p.add_argument("--checkpoint-dir", default="", help="default: next to --out (checkpoints/fewshot/pretrain for "
                                                         "the default --out)")
    p.add_argument("--checkpoint-minutes", type=positive_float, default=5.0)
    p.add_argument("--stop-after", type=non_negative_int, default=None)
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "cpu"])
    p.set_defaults(func=cmd_pretrain)
    return p


def cmd_pretrain(a) -> int:
    from InteractiveRefineLib.core.device import choose_device
    from InteractiveRefineLib.core.errors import DatasetError

    from .training.pretrain import SOURCES, pretrain
    from .training.train import TrainConfig
    sources = SOURCES
    if a.sources:
        names = [s.strip() for s in a.sources.split(",") if s.strip()]
        known = {s.folder: s for s in SOURCES}
        unknown = [n for n in names if n not in known]
        if unknown:
            from .training.pretrain import check_allowed
            for n in unknown:
                check_allowed(n)
            raise DatasetError(f"unknown pretraining source(s) {unknown}; known: {sorted(known)}")
        sources = tuple(known[n] for n in names)
    out = Path(a.out)
    ck = checkpoint_dir(a, "pretrain") / f"{out.stem}.json"
    cfg = TrainConfig(steps=a.steps, batch=a.batch, lr=a.lr, seed=a.seed)
    path = pretrain(a.data, out, cfg, choose_device(a.device), sources, a.max_cases, a.slice_step, checkpoint=ck,
                    resume=a.resume or None, checkpoint_seconds=60.0 * a.checkpoint_minutes,
                    stop_after=a.stop_after, command=a.command_line, init=a.init or None)
    print(json.dumps({"model": str(path) if path else None, "checkpoint": str(ck)}))
    return 0


def add_propagate(s: argparse.ArgumentParser) -> None:
    s.add_argument("--propagate", action="store_true",
                   help="same-scan propagation: segment the organ of --slice through the support image itself "
                        "(--query may be left out; --range auto stops where the organ ends, FIRST:LAST is exact)")
    s.add_argument("--propagate-mode", default=None, choices=["roi", "anchor", "chain", "mixed"],
                   help="how the mask is carried from slice to slice (default: roi, chosen on training patients)")
    s.add_argument("--no-box-network", action="store_true",
                   help="with --propagate or --follow: skip the InteractiveRefine box network (its 2D pass over "
                        "each slice and its final 3D pass)")
    s.add_argument("--no-box3d", action="store_true",
                   help="with --propagate (any --range) or --follow with a given --range: skip the final pass of the "
                        "box network's 3D box step (three views) over the propagated organ's bounding box (chosen on "
                        "training patients, docs/fewshot.md; --follow's automatic range has none)")
    s.add_argument("--no-dark-stop", action="store_true",
                   help="with --propagate or --follow and an automatic range: do not end the range where the mask "
                        "turns darker than the annotated organ (1.5 SD; chosen on training patients, docs/fewshot.md)")
    s.add_argument("--no-regrow-stop", action="store_true",
                   help="with --propagate or --follow and an automatic range: do not end the range where the carried "
                        "mask widens again after shrinking (propagate.RegrowthStop; chosen on training patients, "
                        "docs/fewshot.md)")
    s.add_argument("--box-precision", choices=BOX_PRECISIONS, default=None,
                   help="with --propagate or --follow: the box network's CPU inference, auto (bfloat16 where the CPU "
                        "has it natively, the default) or fp32 (float32, as the propagation results in docs/fewshot.md "
                        "were measured); the few-shot network always computes in float32")
    s.add_argument("--no-exemplar-tuning", action="store_true",
                   help="with --propagate or --follow: use the box network as shipped (by default its head is first "
                        "tuned for 30 steps on the annotated slice; chosen on validation patients, docs/fewshot.md)")


def check_propagation_flags(a) -> None:
    """Refuse the propagation flags where nothing propagates, or where they contradict each other (before any
    file is read). `segment --follow` propagates too (through --range FIRST:LAST, else automatically)."""
    from InteractiveRefineLib.core.errors import PromptError

    from .cli import parse_slices
    given = [flag for flag, on in (("--no-box-network", a.no_box_network), ("--no-box3d", a.no_box3d),
                                   ("--no-dark-stop", a.no_dark_stop), ("--no-regrow-stop", a.no_regrow_stop),
                                   ("--no-exemplar-tuning", a.no_exemplar_tuning),
                                   ("--propagate-mode", a.propagate_mode is not None),
                                   ("--box-precision", a.box_precision is not None)) if on]
    if given and not (a.propagate or getattr(a, "follow", False)):
        raise PromptError(f"{', '.join(given)}: only same-scan propagation reads this; give --propagate or --follow")
    if a.no_exemplar_tuning and a.no_box_network:
        raise PromptError("--no-exemplar-tuning concerns the box network, which --no-box-network turns off")
    if a.box_precision is not None and a.no_box_network:
        raise PromptError("--box-precision concerns the box network, which --no-box-network turns off")
    if a.no_box3d and a.no_box_network:
        raise PromptError("--no-box3d concerns the box network, which --no-box-network turns off")
    if a.no_box3d and not a.propagate and parse_slices(a.range) is None:
        raise PromptError("--no-box3d with --follow concerns a given --range FIRST:LAST; --follow's automatic range "
                          "has no 3D pass")
    if a.no_regrow_stop and a.no_box_network:
        raise PromptError("--no-regrow-stop concerns the box network's carried masks, which --no-box-network turns "
                          "off")
    for flag, off in (("--no-dark-stop", a.no_dark_stop), ("--no-regrow-stop", a.no_regrow_stop)):
        if off and parse_slices(a.range) is not None:
            raise PromptError(f"{flag} concerns the automatic range; a given --range is never cut")


def propagation_setup(a):
    """(box network or None, keyword arguments of engine.propagate) from the propagation flags."""
    box = None
    if not a.no_box_network:
        from .engine.propagate import box_network
        box = box_network(a.device, a.box_precision or "auto")
    kw = {"box_exemplar": None} if a.no_exemplar_tuning else {}
    if a.propagate_mode:
        kw["mode"] = a.propagate_mode
    if a.no_box3d:
        kw["box3d_views"] = None
    if a.no_dark_stop:
        kw["dark_stop"] = None
    if a.no_regrow_stop:
        kw["carried_regrow"] = None
    return box, kw


def cmd_propagate(a) -> int:
    from InteractiveRefineLib.core.errors import PromptError
    from InteractiveRefineLib.core.image_io import read_image, read_label, write_image
    from InteractiveRefineLib.core.outputs import check_output_file

    from .cli import parse_slices
    from .engine.propagate import propagate, propagation_range
    from .engine.segment import FewShotSegmenter
    if a.query is not None and Path(a.query).resolve() != Path(a.support_image).resolve():
        raise PromptError("--propagate segments the support image itself; leave --query out (or give the same file)")
    if a.adapt:
        raise PromptError("--propagate does not combine with --adapt")
    if a.range == "all":  # plain segment's raw answer on every slice; propagation follows the organ
        raise PromptError("--propagate takes --range auto (it stops where the organ ends) or FIRST:LAST, not all")
    check_propagation_flags(a)
    check_output_file(a.out, inputs=(a.support_image, a.support_label))
    img = read_image(a.support_image, "image")
    lab = read_label(a.support_label, img, "label")
    labels = a.label or [None]
    if len(labels) > 1:
        raise PromptError("--propagate follows one organ: give one --label")
    rng = parse_slices(a.range)
    n = img.shape[a.axis] if a.axis in (0, 1, 2) else 0
    if n and not 0 <= a.slice < n:
        raise PromptError(f"support slice {a.slice} is outside the support volume (0..{n - 1} along axis {a.axis})")
    if n:
        propagation_range(a.slice, rng, n)  # before the networks are loaded
    seg = FewShotSegmenter(a.model, device=a.device)
    box, kw = propagation_setup(a)
    result = propagate(seg, img, lab, a.slice, labels[0], a.axis, rng, box_segmenter=box, **kw)
    write_image(img, a.out, result.labels)
    first, stop = result.slices
    print(json.dumps({"out": str(a.out), "labels": sorted(result.probabilities), "slices": [first, stop - 1],
                      "voxels": {int(k): int((result.labels == k).sum()) for k in result.probabilities},
                      "propagated": True, "mode": result.info["mode"], "box_network": box is not None,
                      "box_precision": box.precision if box is not None else None,
                      "box_exemplar": result.info["box_exemplar"], "box3d_views": result.info["box3d_views"],
                      "dark_stop": result.info["dark_stop"], "carried_regrow": result.info["carried_regrow"]}))
    return 0
