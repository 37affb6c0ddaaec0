"""An interactive segmentation session: box -> CNN (+CRF), scribbles, refine, reset, undo/redo, a log.

Per object the session keeps the box, the scribbles, the current result and the adapted parameters,
as an immutable history of states (undo/redo move along it). A new object starts from the shipped
weights: the adaptation belongs to one image and one object. Every call either completes and becomes
a new state or leaves the session as it was (errors, cancel, out of memory).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch
from scipy import ndimage

from ..core.device import OutOfMemoryError, bf16_applies
from ..core.errors import CancelledError, ModelError, PromptError
from ..core.geometry import (
    CropSpec,
    grid_spacing,
    native_region,
    native_spacing,
    normalize,
    paste_region,
    region_box_mask,
    to_grid,
    to_region,
)
from ..core.image_io import Image, validate_image, write_image
from ..core.input_checks import check_box_image
from ..core.log import InteractionLog
from ..core.metrics import dice
from ..core.prompts import Box, box_from_mask, expand_box, validate_box
from . import finetune
from .capped_crf import capped_crf
from .crf import crf_segment
from .inference import BoxSegmenter, plan_for, stack_input
from .memory import box_step_bytes, check_memory
from .scribbles import Scribbles, network_masks, region_masks, rows_in

log = logging.getLogger(__name__)
MODES = ("supervised", "unsupervised", "crf")


@dataclass(frozen=True)
class ObjectState:
    """One point of an object's history. `mask` is on the native crop region (slice axis dropped in
    2D), False outside the box; `params` the adapted parameters (None: the shipped ones). `adopted`:
    the probability is an existing segmentation's, not the network's (the first refinement teaches it
    to the network instead of starting from the network's own prediction)."""

    action: str
    box: Box
    scribbles: Scribbles
    mask: np.ndarray
    probability: np.ndarray  # network grid
    params: Optional[Dict[str, torch.Tensor]]
    adopted: bool = False
    fallback: bool = False  # a correction favoured the shipped network over the tuned head (cfg.fallback_margin)


class _Context:
    """What is computed once per object: the crop, its network input and frozen features."""

    def __init__(self, image: Image, box: Box, net: torch.nn.Module, input_cfg: Dict[str, Any],
                 device: torch.device, head_only: bool, margin_mm: Optional[float] = None):
        self.box = box
        self.spec: CropSpec = plan_for(box, image, input_cfg, margin_mm)
        native = native_region(image.array, self.spec).astype(np.float32)
        self.x_grid = normalize(to_grid(native, self.spec))
        self.native = native
        self.native_spacing = native_spacing(self.spec, image.spacing_kji)
        self.grid_spacing = grid_spacing(self.spec, image.spacing_kji)
        self.inside_native = region_box_mask(self.spec)
        self.inside_grid = to_grid(self.inside_native.astype(np.float32), self.spec, order=0) > 0.5
        self.net = net
        self.input_cfg = input_cfg
        self.head_only = head_only
        self.prior: Optional[np.ndarray] = None  # grid probability of an adopted segmentation (session.adopt)
        self.network: Optional[np.ndarray] = None  # the shipped network's grid probability (set_box)
        self.to(device)

    def to(self, device: torch.device) -> None:
        self.device = device
        self.net.to(device)
        x = torch.from_numpy(stack_input(self.x_grid, self.spec, self.input_cfg))[None].to(device)
        if self.head_only:
            with torch.no_grad():
                self.net.eval()
                self.inputs = self.net.features(x)
        else:
            self.inputs = x

    def model(self, params: Optional[Dict[str, torch.Tensor]]) -> torch.nn.Module:
        """A private copy of the tuned part (head, or whole net), with `params` loaded."""
        m = copy.deepcopy(self.net.head if self.head_only else self.net).to(self.device)
        if params is not None:
            m.load_state_dict(params)
        return m


def box_model(segmenter, config: "finetune.RefineConfig", box: Box, image: Image):
    """(network, manifest) `segmenter` reads `box` of `image` with under `config`: its views, thin-box and
    depth rules and margin (BoxSegmenter.model)."""
    return segmenter.model(box.dim, config.views3d, box, config.three_views_min_side, image=image,
                           margin_mm=config.margin_mm, max_depth=config.three_views_max_depth)


class InteractiveSession:
    """Box, scribbles and refinement of one or more objects in one image.

    Args:
        image: the image (validated once here).
        segmenter: supplies the shipped 2D/3D models (default: a BoxSegmenter on `device`).
        config: refinement constants (finetune.RefineConfig).
        device: 'auto' (CUDA if present), 'cuda' or 'cpu'; a CUDA out-of-memory error moves the
            session to the CPU with a warning and retries.
        log: path of the JSON-lines interaction log (appended, synced per event), or an
            InteractionLog, or None.
        validate: check the image (NaN/Inf, dimensions); skip only for an image already checked.
    """

    def __init__(self, image: Image, segmenter: Optional[BoxSegmenter] = None,
                 config: Optional[finetune.RefineConfig] = None, device: str = "auto",
                 log: Union[str, Path, InteractionLog, None] = None, validate: bool = True):
        if validate:  # False where the caller has already checked this image (the benchmark, per case)
            validate_image(image)
        self.image = image
        self.segmenter = segmenter or BoxSegmenter(device=device)
        self.device = self.segmenter.device
        self.config = config or finetune.RefineConfig()
        self._ctx: Dict[str, _Context] = {}
        self._history: Dict[str, List[ObjectState]] = {}
        self._pos: Dict[str, int] = {}
        self._reference: Dict[str, np.ndarray] = {}
        self.active: Optional[str] = None
        self.log = log if isinstance(log, InteractionLog) or log is None else InteractionLog(log)
        self._event("session_start", shape=list(image.shape), spacing_kji=list(image.spacing_kji),
                    device=str(self.device), config=vars(self.config))

    # -- state ---------------------------------------------------------------------------------
    @property
    def objects(self) -> List[str]:
        return list(self._history)

    def state(self, object_id: Optional[str] = None) -> ObjectState:
        oid = self._object(object_id)
        return self._history[oid][self._pos[oid]]

    def mask(self, object_id: Optional[str] = None) -> np.ndarray:
        """The current result of an object on the full image grid (bool)."""
        oid = self._object(object_id)
        return paste_region(self.state(oid).mask, self._ctx[oid].spec, self.image.shape, dtype=bool)

    def dice(self, object_id: Optional[str] = None) -> Optional[float]:
        """Dice of the current result against the object's reference (on the box slice for a 2D box)."""
        oid = self._object(object_id)
        ref = self._reference.get(oid)
        if ref is None:
            return None
        pred, box = self.mask(oid), self.state(oid).box
        if box.axis is not None:
            return dice(np.take(pred, box.slice_index, box.axis), np.take(ref, box.slice_index, box.axis))
        return dice(pred, ref)

    def can_undo(self, object_id: Optional[str] = None) -> bool:
        oid = self._object(object_id, required=False)
        return oid is not None and self._pos[oid] > 0

    def can_redo(self, object_id: Optional[str] = None) -> bool:
        oid = self._object(object_id, required=False)
        return oid is not None and self._pos[oid] < len(self._history[oid]) - 1

    # -- interactions ----------------------------------------------------------------------------
    def set_box(self, box: Box, object_id: str = "object", reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Segment the object in `box` with the shipped weights (+ CRF); replaces an object of that id."""
        box = validate_box(box, self.image.shape)
        check_box_image(self.image, box)
        self._check_reference(reference)
        t0 = time.perf_counter()

        def run():
            ctx = self._new_context(box)
            prob = finetune.model_probability(ctx.model(None), ctx.inputs)
            ctx.network = prob
            mask = self._final(ctx, prob, Scribbles(), crf=self.config.crf_on_box)
            return ctx, prob, mask

        ctx, prob, mask = self._compute(run)
        self._start_object(object_id, ctx, ObjectState("box", box, Scribbles(), mask, prob, None), reference)
        self._event("box", object_id, box_lo=list(box.lo), box_hi=list(box.hi), axis=box.axis,
                    compute_seconds=time.perf_counter() - t0)
        return self.mask(object_id)

    def adopt(self, mask: np.ndarray, box: Optional[Box] = None, object_id: str = "object",
              reference: Optional[np.ndarray] = None) -> np.ndarray:
        """Start from an existing segmentation (another tool's, FewShotSeg's, a previous session's) instead
        of the network's prediction: scribbles then correct it. `mask` (K, J, I) on the image grid; `box`
        limits the object (default: the mask's bounding box grown by 10%; 2D if the mask lies on one
        slice). Voxels of the mask outside the box are dropped. Replaces an object of that id."""
        mask = np.asarray(mask, bool)
        if mask.shape != self.image.shape:
            raise PromptError(f"the segmentation to refine has shape {mask.shape}; the image has {self.image.shape}")
        if not mask.any():
            raise PromptError("the segmentation to refine is empty: draw a box and press Segment instead")
        if box is None:
            extent = [np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
            flat = next((a for a in range(3) if extent[a][0] == extent[a][-1] and mask.shape[a] > 1), None)
            box = box_from_mask(mask, flat, int(extent[flat][0]) if flat is not None else None)
            box = expand_box(box, self.image.shape)
        box = validate_box(box, self.image.shape)
        self._check_reference(reference)
        t0 = time.perf_counter()

        def run():
            ctx = self._new_context(box)
            native = native_region(mask, ctx.spec) & ctx.inside_native
            prob = np.clip(to_grid(native.astype(np.float32), ctx.spec), 0.02, 0.98)
            ctx.prior = prob
            return ctx, prob, native

        ctx, prob, native = self._compute(run)
        self._start_object(object_id, ctx, ObjectState("adopt", box, Scribbles(), native, prob, None, adopted=True),
                           reference)
        self._event("adopt", object_id, box_lo=list(box.lo), box_hi=list(box.hi), axis=box.axis,
                    voxels=int(native.sum()), compute_seconds=time.perf_counter() - t0)
        return self.mask(object_id)

    def add_scribble(self, voxels, label: str, object_id: Optional[str] = None) -> Scribbles:
        """Add a foreground ('fg') or background ('bg') scribble: (n, 3) voxel indices (k, j, i) inside
        the object's box. The result changes at the next refine."""
        oid = self._object(object_id)
        st = self.state(oid)
        scr = st.scribbles.added(voxels, label, st.box, self.image.shape)
        added = (scr.count[0] - st.scribbles.count[0]) + (scr.count[1] - st.scribbles.count[1])
        self._push(oid, replace(st, action=f"scribble_{label}", scribbles=scr))
        self._event("scribble", oid, label=label, voxels=int(added), total_fg=scr.count[0], total_bg=scr.count[1])
        return scr

    def set_scribbles(self, fg, bg, object_id: Optional[str] = None) -> Scribbles:
        """Replace all scribbles of the object (e.g. read back from the panel's helper segments, where the
        user may also have erased): (n, 3) voxel indices (k, j, i) inside the box, or empty. One
        interaction, logged with the voxels added and removed per label; a no-op when nothing changed."""
        oid = self._object(object_id)
        st = self.state(oid)
        scr = Scribbles()
        for voxels, label in ((fg, "fg"), (bg, "bg")):
            if np.size(voxels):
                scr = scr.added(voxels, label, st.box, self.image.shape)
        changes = {}
        for label, old, new in (("fg", st.scribbles.fg, scr.fg), ("bg", st.scribbles.bg, scr.bg)):
            changes[f"added_{label}"] = int(len(new) - (rows_in(new, old).sum() if len(old) and len(new) else 0))
            changes[f"removed_{label}"] = int(len(old) - (rows_in(old, new).sum() if len(old) and len(new) else 0))
        if not any(changes.values()):
            return st.scribbles
        label = "fg" if changes["added_fg"] + changes["removed_fg"] >= changes["added_bg"] + changes["removed_bg"] \
            else "bg"
        self._push(oid, replace(st, action=f"scribble_{label}", scribbles=scr))
        self._event("scribble", oid, label=label, voxels=changes[f"added_{label}"], total_fg=scr.count[0],
                    total_bg=scr.count[1], **changes)
        return scr

    def refine(self, mode: str = "supervised", object_id: Optional[str] = None, progress: finetune.Progress = None,
               cancel: finetune.Cancel = None, time_budget: Optional[float] = None) -> np.ndarray:
        """Adapt the network to this image and object, then CRF; returns the new full-grid mask.

        mode: 'supervised' (scribbles; BIFSeg), 'unsupervised' (no scribbles used: network uncertainty
        only), 'crf' (no fine-tuning: the CRF with the scribbles on the current network output).
        cancel: a callable polled during the call; when it returns True the call raises CancelledError
        and the session is exactly as before. time_budget (s) overrides the config's.
        """
        if mode not in MODES:
            raise PromptError(f"unknown refine mode {mode!r}; use one of {MODES}")
        if not self._history:
            raise PromptError("refine needs a prediction first: draw a box around the object")
        oid = self._object(object_id)
        st = self.state(oid)
        if mode == "supervised" and st.scribbles.empty:
            raise PromptError("supervised refinement needs at least one scribble (or use mode 'unsupervised')")
        budget = self.config.time_budget if time_budget is None else time_budget
        if budget is not None and not 0 < budget < float("inf"):
            raise PromptError(f"the time budget must be a positive number of seconds (or None); got {budget}")
        t0 = time.perf_counter()
        deadline = None if budget is None else t0 + budget
        scr = Scribbles() if mode == "unsupervised" else st.scribbles
        try:
            result = self._compute(lambda: self._refine(oid, st, scr, mode, progress, cancel, deadline))
        except CancelledError:
            self._event("cancelled", oid, mode=mode, compute_seconds=time.perf_counter() - t0)
            raise
        prob, mask, params, info = result
        fallback = st.fallback or bool(info.get("fallback"))  # kept by every later refinement of the object
        self._push(oid, replace(st, action=f"refine_{mode}", mask=mask, probability=prob, params=params,
                                adopted=st.adopted and params is None, fallback=fallback))
        self._event("refine", oid, mode=mode, compute_seconds=time.perf_counter() - t0, **info)
        return self.mask(oid)

    def reset(self, object_id: Optional[str] = None) -> np.ndarray:
        """Back to the first result (the box prediction, or the adopted segmentation) with the shipped
        weights; scribbles cleared (undoable)."""
        oid = self._object(object_id)
        first = self._history[oid][0]
        self._push(oid, replace(first, action="reset"))
        self._event("reset", oid)
        return self.mask(oid)

    def undo(self, object_id: Optional[str] = None) -> np.ndarray:
        oid = self._object(object_id, required=False)
        if oid is None or not self.can_undo(oid):
            raise PromptError("nothing to undo")
        undone = self.state(oid).action
        self._pos[oid] -= 1
        self._event("undo", oid, undone=undone)
        return self.mask(oid)

    def redo(self, object_id: Optional[str] = None) -> np.ndarray:
        oid = self._object(object_id, required=False)
        if oid is None or not self.can_redo(oid):
            raise PromptError("nothing to redo")
        self._pos[oid] += 1
        self._event("redo", oid, redone=self.state(oid).action)
        return self.mask(oid)

    def save_mask(self, path, object_id: Optional[str] = None) -> Path:
        """Write the current result as a label map (atomic: no half-written file)."""
        return write_image(self.image, path, self.mask(object_id).astype(np.uint8))

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    # -- internals -------------------------------------------------------------------------------
    def _object(self, object_id: Optional[str], required: bool = True) -> Optional[str]:
        oid = object_id if object_id is not None else self.active
        if oid is None or oid not in self._history:
            if not required:
                return None
            if oid is None:
                raise PromptError("no object yet: draw a box around the object first")
            raise PromptError(f"unknown object {oid!r}; known: {self.objects}")
        return oid

    def _check_reference(self, reference: Optional[np.ndarray]) -> None:
        if reference is not None and np.shape(reference) != self.image.shape:
            raise PromptError(f"reference of shape {np.shape(reference)} does not match the image {self.image.shape}")

    def _new_context(self, box: Box) -> _Context:
        net, manifest = box_model(self.segmenter, self.config, box, self.image)
        spec = plan_for(box, self.image, manifest.get("input", {}), self.config.margin_mm)
        per_view, views = next(net.head.parameters()).shape[1], getattr(net, "views", 1)
        # three views also hold one view's buffer while reading across W (networks.SliceWise._fill_across)
        channels = per_view * (views + (views == 3)) if self.config.head_only else 0
        # bfloat16 feature volumes only from the slice-wise network (a 2D network's features are float32)
        low = bf16_applies(getattr(getattr(net, "net", None), "bf16_cpu", False), self.device)
        check_memory(box_step_bytes(spec.region_shape, self.image.shape, spec.out_shape, channels, 2 if low else 4),
                     f"segmenting the {box.dim}D box {box.lo}-{box.hi} (crop {spec.region_shape})")
        return _Context(self.image, box, net, manifest.get("input", {}), self.device, self.config.head_only,
                        self.config.margin_mm)

    def _start_object(self, oid: str, ctx: _Context, first: ObjectState, reference: Optional[np.ndarray]) -> None:
        self._ctx[oid] = ctx
        self._history[oid] = [first]
        self._pos[oid] = 0
        if reference is not None:
            self._reference[oid] = np.asarray(reference, bool)
        else:
            self._reference.pop(oid, None)
        self.active = oid

    def _push(self, oid: str, state: ObjectState) -> None:
        hist = self._history[oid][: self._pos[oid] + 1]  # a new action drops the redo branch
        hist.append(state)
        self._history[oid] = hist
        self._pos[oid] = len(hist) - 1
        self.active = oid

    def _seed_masks(self, ctx: _Context, scr: Scribbles):
        """(fg, bg) clamps on the grid and on the native region; bg includes the outside of the box."""
        fg_n, bg_n = region_masks(scr, ctx.spec)
        fg_g, bg_g = network_masks(scr, ctx.spec)
        return (fg_g, (bg_g | ~ctx.inside_grid) & ~fg_g), (fg_n, (bg_n | ~ctx.inside_native) & ~fg_n)

    def _final(self, ctx: _Context, prob: np.ndarray, scr: Scribbles, crf: bool = True,
               fresh: Scribbles = Scribbles()) -> np.ndarray:
        """The result on the native region from a grid probability: CRF (native or network grid) or a
        threshold, scribbles clamped, nothing outside the box. With cfg.crf_min_keep, a cut that keeps
        less than that share of the thresholded foreground inside the box is not taken (the pairwise
        term erased a small or thin object, or a soft tuned probability): the threshold is. A background
        scribble added since the last result (`fresh`) on one piece of a foreground in several pieces
        says that piece is not the object: the cut may remove it if it keeps that share of the others."""
        cfg = self.config
        lam = cfg.lam_for(ctx.x_grid.ndim)
        (fg_g, bg_g), (fg_n, bg_n) = self._seed_masks(ctx, scr)
        thresholded = to_region(prob, ctx.spec) >= 0.5
        if not crf:
            mask = thresholded
        elif cfg.final_grid == "native":  # on at most MAX_CRF_VOXELS nodes: bounded memory for any box
            mask = capped_crf(prob, ctx.native, ctx.native_spacing, lam=lam,
                              sigma=cfg.sigma, connectivity=cfg.connectivity, fg_seeds=fg_n, bg_seeds=bg_n,
                              inside=ctx.inside_native)
        else:
            lab = crf_segment(prob, ctx.x_grid, ctx.grid_spacing, lam=lam, sigma=cfg.sigma,
                              connectivity=cfg.connectivity, fg_seeds=fg_g, bg_seeds=bg_g)
            mask = to_region(lab.astype(np.float32), ctx.spec) >= 0.5
        if crf and cfg.crf_min_keep is not None:
            fg = thresholded & ctx.inside_native
            before = fg & ~bg_n
            others = before & ~self._struck(ctx, fg, fresh)
            # the only piece struck is no licence to erase it: a scribble trims the object (measured: a thin
            # fetal corpus callosum and the cord's grey matter were erased when it was)
            if not (self._keeps(mask, before) or (others.any() and self._keeps(mask, others))):
                mask = thresholded
        return (mask | fg_n) & ~bg_n

    def _keeps(self, mask: np.ndarray, fg: np.ndarray) -> bool:
        return (mask & fg).sum() >= self.config.crf_min_keep * fg.sum()

    @staticmethod
    def _struck(ctx: _Context, fg: np.ndarray, fresh: Scribbles) -> np.ndarray:
        """The face-connected pieces of `fg` (native region) that a background scribble of `fresh` touches."""
        if not len(fresh.bg):
            return np.zeros_like(fg)
        _, new_bg = region_masks(Scribbles(bg=fresh.bg), ctx.spec)
        pieces, _ = ndimage.label(fg)
        hit = np.unique(pieces[new_bg & fg])
        return np.isin(pieces, hit[hit > 0])

    def _refine(self, oid, st: ObjectState, scr: Scribbles, mode: str, progress, cancel, deadline):
        ctx = self._ctx[oid]
        info: Dict[str, Any] = {"fg_voxels": scr.count[0], "bg_voxels": scr.count[1]}
        params = st.params
        prior = ctx.prior  # an adopted segmentation's probability: kept in every refinement of the object
        fresh = self._fresh(oid, scr)
        if mode == "supervised" and self._falls_back(ctx, st, fresh):
            mode, params = "crf", None  # the shipped network + CRF from now on (an undo returns to the tuned head)
            info["fallback"] = True
        if mode == "crf":
            if st.adopted:
                prob = st.probability
            elif params is None and ctx.network is not None:  # the shipped head (also after a fallback)
                prob = ctx.network
            else:
                prob = finetune.model_probability(ctx.model(params), ctx.inputs)
            if prior is not None and not st.adopted:
                prob = self.config.prior_weight * prior + (1.0 - self.config.prior_weight) * prob
        else:
            (fg_g, bg_g), _ = self._seed_masks(ctx, scr)
            model = ctx.model(params)  # a private copy of the tuned part: the state's own stays as it was
            res = finetune.fine_tune(model, ctx.inputs, ctx.x_grid, ctx.grid_spacing, fg_g, bg_g, self.config,
                                     progress, cancel, deadline, inside=ctx.inside_grid, prior=prior,
                                     start=None if prior is None else st.probability)
            prob = res.probability
            params = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            info.update(iterations=res.iterations, steps=res.steps, stopped_early=res.stopped_early)
        finetune.check_cancel(cancel)
        mask = self._final(ctx, prob, scr, fresh=fresh)
        # an adopted segmentation is guarded by its prior blend instead (prior_weight): correcting e.g. an
        # eroded one needs the whole boundary to move
        if self.config.local_edit is not None and mode != "unsupervised" and prior is None:
            mask = self._local(ctx, st, scr, fresh, mask)
        if progress:
            progress(1.0, "done")
        return prob, mask, params, info

    def _falls_back(self, ctx: _Context, st: ObjectState, fresh: Scribbles) -> bool:
        """cfg.fallback_margin: whether this refinement uses the shipped network instead of the tuned head. Once
        it has (st.fallback, kept by every later refinement of the object), always; else when the mean
        probability the shipped network gives the label of the scribbles added since the current result exceeds
        the tuned head's by more than the margin (the user corrected an error the tuning made or deepened)."""
        margin = self.config.fallback_margin
        if margin is None or ctx.prior is not None or ctx.network is None:
            return False
        if st.fallback:
            return True
        if st.params is None or fresh.empty:
            return False
        fg, bg = network_masks(fresh, ctx.spec)
        if not (fg.any() or bg.any()):
            return False

        def right(p: np.ndarray) -> float:
            return float(np.concatenate([p[fg], 1.0 - p[bg]]).mean())
        return right(ctx.network) - right(st.probability) > margin

    def _fresh(self, oid: str, scr: Scribbles) -> Scribbles:
        """The scribbles of `scr` added since the object's current result (its last non-scribble state)."""
        history = self._history[oid][: self._pos[oid] + 1]
        last = next(s for s in reversed(history) if not s.action.startswith("scribble"))
        return Scribbles(scr.fg[~rows_in(scr.fg, last.scribbles.fg)], scr.bg[~rows_in(scr.bg, last.scribbles.bg)])

    def _local(self, ctx: _Context, st: ObjectState, scr: Scribbles, fresh: Scribbles,
               mask: np.ndarray) -> np.ndarray:
        """finetune.local_edit of the refined mask against the current result: only the neighbourhood of
        the scribbles added since that result (`fresh`) changes (all scribbles stay clamped); without
        added scribbles the refined mask is taken whole."""
        if fresh.empty:  # refine again, or scribbles only erased: nothing to localise around
            return mask
        new_fg, new_bg = region_masks(fresh, ctx.spec)
        fg_n, bg_n = region_masks(scr, ctx.spec)
        out = finetune.local_edit(st.mask, mask, new_fg, new_bg, ctx.inside_native, self.config.local_edit,
                                  self.config.connected_edit)
        return (out | fg_n) & ~bg_n & ctx.inside_native

    def _compute(self, fn):
        """Run `fn`; on a CUDA out-of-memory error move everything to the CPU, warn, and run it again."""
        try:
            return fn()
        except OutOfMemoryError as exc:
            if self.device.type == "cpu":
                raise ModelError("out of memory on the CPU: use a smaller box or close other programs; "
                                 "the segmentation is unchanged") from exc
            log.warning("out of GPU memory (%s); continuing on the CPU", str(exc).splitlines()[0] if str(exc) else "")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            self._to_cpu()
            self._event("device_fallback", reason="out of memory", device="cpu")
            return fn()

    def _to_cpu(self) -> None:
        cpu = torch.device("cpu")
        self.device = cpu
        self.segmenter.to(cpu)
        for ctx in self._ctx.values():
            ctx.to(cpu)

    def _event(self, event: str, object_id: Optional[str] = None, **fields) -> None:
        if self.log is None:
            return
        if object_id is not None:
            fields["object"] = object_id
            d = self.dice(object_id) if object_id in self._history else None
            if d is not None:
                fields["dice"] = d
        self.log.write(event, **fields)
