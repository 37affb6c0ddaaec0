"""The benchmark's interactive methods, behind one interface: start from a box, then take scribbles.

Each runner's `start()` returns the round-0 result and `update(scribbles)` the result with all
scribbles so far, both as (full-grid bool mask, compute seconds). Every method sees the same box and
the same scribbles.
    bifseg         supervised image-specific fine-tuning + CRF (BIFSeg)
    bifseg_unsup   round 0 only: unsupervised fine-tuning + CRF
    cnn+crf        the box network's output + CRF with the scribbles (no fine-tuning)
    cnn            the box network's output thresholded, scribbled voxels set to their label
    graphcut       GrabCut-style graph cut, scribbles as hard seeds
    random_walker  random walker, scribbles as seeds
"""
from __future__ import annotations

import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from ..core.errors import DatasetError
from ..core.image_io import Image
from ..core.prompts import Box
from ..engine.finetune import RefineConfig
from ..engine.inference import BoxSegmenter, predict_box
from ..engine.scribbles import Scribbles, rows_in
from ..engine.session import InteractiveSession, box_model

METHODS = ("bifseg", "bifseg_unsup", "cnn+crf", "cnn", "graphcut", "random_walker", "filled_box")
ROUND0_ONLY = ("bifseg_unsup",)
Result = Tuple[np.ndarray, float]


class _SessionRunner:
    def __init__(self, image: Image, box: Box, segmenter: BoxSegmenter, config: Optional[RefineConfig], mode: str,
                 unsup_first: bool = False):
        self.session = InteractiveSession(image, segmenter, config=config, validate=False)  # checked per case
        self.box, self.mode, self.unsup_first = box, mode, unsup_first

    def start(self) -> Result:
        t0 = time.perf_counter()
        mask = self.session.set_box(self.box)
        if self.unsup_first:
            mask = self.session.refine("unsupervised")
        return mask, time.perf_counter() - t0

    def update(self, scribbles: Scribbles) -> Result:
        t0 = time.perf_counter()
        _add_new(self.session, scribbles)
        mask = self.session.refine(self.mode)
        return mask, time.perf_counter() - t0


def _add_new(session: InteractiveSession, scribbles: Scribbles) -> None:
    """Give the session the scribble voxels it does not have yet."""
    have = session.state().scribbles
    for label, new, old in (("fg", scribbles.fg, have.fg), ("bg", scribbles.bg, have.bg)):
        fresh = new[~rows_in(new, old)]
        if len(fresh):
            session.add_scribble(fresh, label)


class _CnnRunner:
    """The network alone, read as the sessions of the other methods read it (the config's views, thin-box and
    depth rules, margin)."""

    def __init__(self, image: Image, box: Box, segmenter: BoxSegmenter, config: Optional[RefineConfig] = None):
        self.image, self.box, self.segmenter = image, box, segmenter
        self.config = config or RefineConfig()

    def start(self) -> Result:
        net, manifest = box_model(self.segmenter, self.config, self.box, self.image)
        self.pred = predict_box(net, manifest.get("input", {}), self.image, self.box, self.segmenter.device,
                                self.config.margin_mm)
        return self.pred.mask, self.pred.seconds

    def update(self, scribbles: Scribbles) -> Result:
        t0 = time.perf_counter()
        fg, bg = scribbles.masks(self.image.shape)
        return (self.pred.mask | fg) & ~bg, time.perf_counter() - t0


class _ClassicalRunner:
    def __init__(self, image: Image, box: Box, fn: Callable):
        self.image, self.box, self.fn = image, box, fn

    def start(self) -> Result:
        pred = self.fn(self.image, self.box)
        return pred.mask, pred.seconds

    def update(self, scribbles: Scribbles) -> Result:
        pred = self.fn(self.image, self.box, scribbles=scribbles)
        return pred.mask, pred.seconds


class _FilledBoxRunner:
    """The trivial baseline: the box itself; with scribbles, the box with scribbled voxels set."""

    def __init__(self, image: Image, box: Box):
        self.shape, self.box = image.shape, box

    def start(self) -> Result:
        return self.box.mask(self.shape), 0.0

    def update(self, scribbles: Scribbles) -> Result:
        fg, bg = scribbles.masks(self.shape)
        return (self.box.mask(self.shape) | fg) & ~bg, 0.0


def check_methods(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise DatasetError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")


def make_runners(names: Sequence[str], image: Image, box: Box, segmenter: BoxSegmenter,
                 config: Optional[RefineConfig] = None) -> Dict[str, object]:
    """Method name -> a fresh runner for this image and box (adaptation never carries across boxes)."""
    check_methods(names)
    from .baselines import graphcut_segment, random_walker_segment
    out: Dict[str, object] = {}
    for name in names:
        if name == "bifseg":
            out[name] = _SessionRunner(image, box, segmenter, config, "supervised")
        elif name == "bifseg_unsup":
            out[name] = _SessionRunner(image, box, segmenter, config, "supervised", unsup_first=True)
        elif name == "cnn+crf":
            out[name] = _SessionRunner(image, box, segmenter, config, "crf")
        elif name == "cnn":
            out[name] = _CnnRunner(image, box, segmenter, config)
        elif name == "graphcut":
            out[name] = _ClassicalRunner(image, box, graphcut_segment)
        elif name == "filled_box":
            out[name] = _FilledBoxRunner(image, box)
        elif name == "random_walker":
            out[name] = _ClassicalRunner(image, box, random_walker_segment)
    return out
