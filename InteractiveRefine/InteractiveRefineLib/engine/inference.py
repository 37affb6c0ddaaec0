"""Box -> CNN segmentation: crop + margin, resample to the network grid, predict, paste back."""
from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from ..core.device import bf16_applies, choose_device, use_bf16_cpu
from ..core.errors import ModelError
from ..core.geometry import CropSpec, extract, normalize, paste, plan_crop, region_box_mask, to_grid
from ..core.image_io import Image, validate_image
from ..core.prompts import Box, validate_box
from .models import default_model_path, load_model, read_manifest
from .networks import THREE_VIEWS_MAX_DEPTH, THREE_VIEWS_MIN_SIDE, SliceWise, Symmetric, check_symmetries, check_views

# Crop settings used when a manifest does not say otherwise (train writes them into the manifest).
DEFAULT_INPUT = {"margin_mm": 10.0, "size2d": [96, 96], "size3d": 48, "depth_range": [8, 48],
                 "normalization": "percentile_0.5_99.5_zscore_per_crop"}


@dataclass
class Prediction:
    """Foreground probability on the full image grid (0 outside the box), its mask, and timing."""

    probability: np.ndarray
    spec: CropSpec
    seconds: float
    threshold: float = 0.5

    @functools.cached_property
    def mask(self) -> np.ndarray:
        """Thresholded probability (computed once: it is a full-volume array)."""
        return self.probability >= self.threshold


def plan_for(box: Box, image: Image, input_cfg: Dict[str, Any], margin_mm: Optional[float] = None) -> CropSpec:
    """The crop of `box` with the input settings of a model manifest.

    A "slicewise" 3D model (a 2D network run per slice, see networks.SliceWise) gets the 2D grid in
    plane and the native slices through-plane (at most `depth_range[1]`, never interpolated up).
    """
    cfg = dict(DEFAULT_INPUT, **(input_cfg or {}))
    slicewise = box.axis is None and cfg.get("slicewise", False)
    size2d = tuple(cfg["size2d"])
    return plan_crop(box, image.shape, image.spacing_kji,
                     margin_mm=cfg["margin_mm"] if margin_mm is None else margin_mm,
                     size2d=size2d, size3d=int(size2d[0]) if slicewise else int(cfg["size3d"]),
                     depth_range=(1, int(cfg["depth_range"][1])) if slicewise else tuple(cfg["depth_range"]),
                     slicewise=slicewise, through_margin=slicewise and int(cfg.get("slicewise_views", 1)) > 1)


def box_channel(spec: CropSpec) -> np.ndarray:
    """1 on the user box, 0 on the margin, on the network grid: tells the network where the box is."""
    return (to_grid(region_box_mask(spec).astype(np.float32), spec, order=0) > 0.5).astype(np.float32)


def stack_input(intensity: np.ndarray, spec: CropSpec, input_cfg: Optional[Dict[str, Any]]) -> np.ndarray:
    """Network input channels (C, *grid): the normalised crop, plus the box mask for box-channel models."""
    channels = [intensity.astype(np.float32, copy=False)]
    if (input_cfg or {}).get("box_channel", False):
        channels.append(box_channel(spec))
    return np.ascontiguousarray(np.stack(channels))


def network_input(array: np.ndarray, spec: CropSpec, input_cfg: Optional[Dict[str, Any]] = None) -> np.ndarray:
    """Network input (C, *grid), float32: the normalised crop `spec` of `array` (+ box channel)."""
    return stack_input(normalize(extract(array, spec, order=1)), spec, input_cfg)


@torch.no_grad()
def foreground_probability(net: torch.nn.Module, x: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax foreground probability on the network grid for one input (C, *grid)."""
    t = torch.from_numpy(np.ascontiguousarray(x))[None].to(device)
    return torch.softmax(net(t), dim=1)[0, 1].float().cpu().numpy()


def shift_foreground(net: torch.nn.Module, threshold: float) -> torch.nn.Module:
    """Move `net`'s foreground cut from probability 0.5 to `threshold` (in place; returns it): -logit(threshold)
    is added to the bias of the foreground output of the head's last 1x1 convolution, so the softmax gives
    sigmoid(logit p - logit threshold) for every voxel, and the CRF, the fine-tuning (which starts from these
    weights) and the 0.5 cut all see the shifted network."""
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"foreground threshold must be in (0, 1); got {threshold}")
    last = net.head[-1]
    with torch.no_grad():
        last.bias[1] -= float(np.log(threshold / (1.0 - threshold)))
    return net


def foreground_threshold(manifest: Dict[str, Any], path: Path, given: Optional[float] = None) -> float:
    """A box network's foreground cut: `given`, else the manifest's `input.foreground_threshold` (0.5 when
    absent); ModelError for a manifest value outside (0, 1)."""
    if given is not None:
        return float(given)
    cut = manifest.get("input", {}).get("foreground_threshold", 0.5)
    if isinstance(cut, bool) or not isinstance(cut, (int, float)) or not 0.0 < float(cut) < 1.0:
        raise ModelError(f"model manifest {Path(path).name}: input.foreground_threshold must be a number in "
                         f"(0, 1); got {cut!r}")
    return float(cut)


def wrap_for(net: torch.nn.Module, manifest: Dict[str, Any], dim: int) -> torch.nn.Module:
    """The network as used for `dim`-D boxes: a 2D network with a slicewise manifest serves 3D boxes."""
    cfg = manifest.get("input", {})
    if dim == 3 and cfg.get("slicewise", False) and getattr(net, "dim", 3) == 2:
        return SliceWise(net, cfg.get("slicewise_max_slices"), cfg.get("slicewise_views", 1)).eval()
    return net


def three_view_depth(box: Box, image: Image, input_cfg: Dict[str, Any], margin_mm: Optional[float] = None) -> int:
    """Slices of the network grid a slice-wise model reads `box` on with three views (their crop has a
    through-plane margin): what the depth limit (networks.THREE_VIEWS_MAX_DEPTH) is judged on."""
    return plan_for(box, image, dict(input_cfg, slicewise_views=3), margin_mm).out_shape[0]


def views_for(views: int, box: Optional[Box], image: Optional[Image], input_cfg: Dict[str, Any],
              margin_mm: Optional[float] = None, min_side: int = THREE_VIEWS_MIN_SIDE,
              max_depth: Optional[int] = THREE_VIEWS_MAX_DEPTH) -> int:
    """The views a slice-wise model reads `box` with when `views` are asked: one instead of three for a box
    thinner than `min_side` voxels along an axis, or (with `image`) whose three-view grid would be deeper than
    `max_depth` slices (None: no limit). BoxSegmenter's rule, also the training's validation's (train_box)."""
    if views == 3 and box is not None and min(box.size) < min_side:
        return 1
    if views == 3 and box is not None and image is not None and max_depth is not None:
        return 1 if three_view_depth(box, image, input_cfg, margin_mm) > max_depth else 3
    return views


def default_views3d(views3d: Optional[int] = None, model3d: Union[str, Path, None] = None) -> int:
    """The views a BoxSegmenter(model3d=..., views3d=...) reads a 3D box with before the thin-box and depth
    rules: `views3d`, else the 3D model's own (1 for a network that is not slice-wise). Reads the manifest
    only (no weights), so commands can record it before any computing."""
    cfg = read_manifest(Path(model3d) if model3d else default_model_path(3)).get("input", {})
    return int(views3d or cfg.get("slicewise_views", 1)) if cfg.get("slicewise", False) else 1


class BoxSegmenter:
    """Segments the object in a box with the shipped (or given) 2D and 3D models.

    Models load lazily on first use, so constructing this is cheap. `views3d` overrides the 3D model's
    `slicewise_views` (3: multi-view fusion, about 3x the CPU time of 1; see networks.SliceWise); a box
    thinner than THREE_VIEWS_MIN_SIDE voxels along an axis, or whose three-view grid is deeper than
    THREE_VIEWS_MAX_DEPTH slices, is read with one view. `symmetries` (1, 2, 4 or
    8) reads each plane under that many in-plane flips/transpositions and averages (networks.Symmetric;
    about that many times the CPU time). `precision` "auto" computes the networks' features in bfloat16 on a
    CPU that has it natively (about half the time; validation mean of groups within 0.001, docs/box_networks.md),
    "fp32" never (float32, no bfloat16 rounding); gradients and the head's parameters stay float32 (the
    slice-wise head computes in bfloat16 on bfloat16 features at inference).
    `threshold2d` / `threshold3d`: the probability where the 2D / 3D boxes' network's foreground starts
    (shift_foreground); None: its manifest's `input.foreground_threshold` (0.5 when absent). FewShotSeg passes
    0.5 for both: its propagation choices were made with the network's own cut.
    """

    def __init__(self, model2d: Union[str, Path, None] = None, model3d: Union[str, Path, None] = None,
                 device: str = "auto", views3d: Optional[int] = None, symmetries: Optional[int] = None,
                 precision: str = "auto", threshold2d: Optional[float] = None,
                 threshold3d: Optional[float] = None):
        check_views(views3d)
        check_symmetries(symmetries)
        for name, cut in (("threshold2d", threshold2d), ("threshold3d", threshold3d)):
            if cut is not None and not 0.0 < float(cut) < 1.0:
                raise ValueError(f"{name} must be in (0, 1) or None; got {cut}")
        self.threshold2d = threshold2d
        self.threshold3d = threshold3d
        self.bf16_cpu = use_bf16_cpu(precision)
        self.views3d = views3d
        self.symmetries = symmetries
        self.device = choose_device(device)
        self._paths = {2: Path(model2d) if model2d else default_model_path(2),
                       3: Path(model3d) if model3d else default_model_path(3)}
        self._loaded: Dict[int, Any] = {}
        self._models: Dict[Any, Any] = {}
        self._fixed: Dict[int, Any] = {}

    @property
    def precision(self) -> str:
        """What the 2D network's features (also run slice by slice in 3D boxes, the shipped box3d) compute in:
        'bfloat16' (precision 'auto' on a CPU with native bfloat16) or 'float32' (precision 'fp32', a CPU without
        it, or a GPU). A 3D PC-Net always computes in float32."""
        return "bfloat16" if bf16_applies(self.bf16_cpu, self.device) else "float32"

    def override(self, dim: int, net: torch.nn.Module, manifest: Dict[str, Any]) -> "BoxSegmenter":
        """A copy that serves `net` (ready to run, e.g. exemplar-tuned or a studied variant) with `manifest`
        for every `dim`-D box, whatever the views or symmetries asked; the other models are shared."""
        out = copy.copy(self)
        out._fixed = {**self._fixed, dim: (net, manifest)}
        return out

    def to(self, device: torch.device) -> None:
        """Move every loaded network (and later loads) to `device` (the session's out-of-memory fallback)."""
        self.device = device
        for net, _ in [*self._loaded.values(), *self._models.values(), *self._fixed.values()]:
            net.to(device)

    def model(self, dim: int, views3d: Optional[int] = None, box: Optional[Box] = None,
              min_side: int = THREE_VIEWS_MIN_SIDE, symmetries: Optional[int] = None, image: Optional[Image] = None,
              margin_mm: Optional[float] = None, max_depth: Optional[int] = THREE_VIEWS_MAX_DEPTH):
        """(network, manifest) for 2D or 3D boxes, loaded once and checksum-verified. `views3d` (3D only)
        and `symmetries` override this segmenter's and the manifest's settings, except that `box`, when given
        and thinner than `min_side` voxels along an axis, gets one view, and so does a box in `image` whose
        three-view grid would be deeper than `max_depth` slices (None: no limit); each setting is wrapped once,
        same weights."""
        check_symmetries(symmetries)
        if dim in self._fixed:
            return self._fixed[dim]
        if dim not in self._loaded:
            loaded = load_model(self._paths[dim], self.device)
            # checked and shifted before it is kept: a refused cut never leaves a 0.5 network behind
            cut = foreground_threshold(loaded[1], self._paths[dim], self.threshold2d if dim == 2 else self.threshold3d)
            if cut != 0.5:
                shift_foreground(loaded[0], cut)
            self._loaded[dim] = loaded
            # bfloat16 was validated on the 2D network (also run slice by slice); a 3D PC-Net stays float32
            self._loaded[dim][0].bf16_cpu = self.bf16_cpu and getattr(self._loaded[dim][0], "dim", 3) == 2
        net, manifest = self._loaded[dim]
        cfg = manifest.get("input", {})
        planar = getattr(net, "dim", 3) == 2
        views = None
        if dim == 3 and planar and cfg.get("slicewise", False):
            views = views_for(views3d or self.views3d or int(cfg.get("slicewise_views", 1)), box, image, cfg,
                              margin_mm, min_side, max_depth)
        sym = (symmetries or self.symmetries or int(cfg.get("symmetries", 1))) if planar else 1
        key = (dim, views, sym)
        if key not in self._models:
            used = manifest if views is None else dict(manifest, input=dict(cfg, slicewise_views=views))
            self._models[key] = (wrap_for(Symmetric(net, sym).eval() if sym > 1 else net, used, dim), used)
        return self._models[key]

    def predict(self, image: Image, box: Box, margin_mm: Optional[float] = None,
                validate: bool = True) -> Prediction:
        """Segment the object in `box` (2D or 3D). Raises ImageError / PromptError on bad input."""
        if validate:
            validate_image(image)
        box = validate_box(box, image.shape)
        net, manifest = self.model(box.dim, box=box, image=image, margin_mm=margin_mm)
        return predict_box(net, manifest.get("input", {}), image, box, self.device, margin_mm)


def predict_box(net: torch.nn.Module, input_cfg: Dict[str, Any], image: Image, box: Box,
                device: torch.device, margin_mm: Optional[float] = None) -> Prediction:
    """Predict with a loaded network; `box` must already be valid for `image`. Timed end to end."""
    t0 = time.perf_counter()
    spec = plan_for(box, image, input_cfg, margin_mm)
    prob = foreground_probability(net, network_input(image.array, spec, input_cfg), device)
    full = paste(prob, spec, image.shape)
    return Prediction(full, spec, time.perf_counter() - t0)
