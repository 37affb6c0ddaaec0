"""Resumable training of the class-agnostic 2D box network on structures of every shape (issue 11).

One 2D network (P-Net with an image and a box-mask channel) serves 2D boxes directly and 3D boxes
slice by slice (networks.SliceWise, tied by the 3D CRF of the session). Samples: box_samples.py;
data split: box_sources.py. Model selection on the validation structures only (never test patients
or evaluation-only data): the score is the mean over validation groups of (2D Dice + 3D Dice) / 2.

The run folder holds `last.json/.safetensors` (exact resume: weights, Adam, iteration, RNG states),
written every `ckpt_minutes` and at the end, and `snapshots/itNNNNN.json`, the model at each validation
(a later choice, e.g. on another validation group, needs them); the best validation model is saved to
`out` as a shipped-format model (safetensors + manifest). `init_from` starts a new run from a model's
weights (fresh optimiser and schedule); that model is validated first and saved as the best so far. A resume
refuses sampling settings other than its checkpoint's (RESUME_SAME).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from ..core.device import choose_device, cpu_bf16_supported
from ..core.errors import ModelError
from ..core.metrics import dice
from ..core.prompts import box_from_mask, validate_box
from ..engine.inference import DEFAULT_INPUT, predict_box, views_for
from ..engine.models import save_model
from ..engine.networks import ARCHITECTURES, SliceWise, build_network
from .box_samples import MIN_AREA, BoxSampler
from .box_sources import Volume, load_sources, recipe
from .checkpoint import load_checkpoint, save_checkpoint
from .train import loss_fn

log = logging.getLogger(__name__)

GROUP_WEIGHTS = {"chaos": 0.15, "totalseg": 0.15, "pseudo": 0.25, "hippocampus": 0.1, "fetal": 0.1,
                 "adult_brain": 0.1, "cord": 0.075, "spleen_ct": 0.075}


@dataclass
class BoxTrainConfig:
    out: str = "runs/box2d/pnet2d.json"            # best validation model (shipped format)
    run_dir: str = "checkpoints/box2d_scratch"     # resumable checkpoints (the committed runs: checkpoints/box2d*)
    data_root: Optional[str] = None
    batch: int = 16
    lr: float = 1e-3
    warmup: int = 200
    max_iters: int = 12000                         # the cosine schedule's length
    stop_after_minutes: float = 0.0                # end this invocation (checkpointed) after this; 0 = never
    ckpt_minutes: float = 5.0
    val_every: int = 250
    val_hippocampus: int = 10                      # validation subjects used during training
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    sample_workers: int = 0                        # processes drawing samples; > 0: each sample seeded by its index
    precision: str = "fp32"                        # "bf16": the forward pass under bfloat16 autocast (TRAIN_PRECISIONS)
    slab_fraction: float = 0.4
    pseudo_by_group: bool = True                   # pseudo-object images: a random group, then a volume of it
    union_fraction: float = 0.3                    # labelled samples whose object is touching structures' union
    ring_share: float = 0.2                        # pseudo-objects that are rings around a hole
    init_from: Optional[str] = None                # a model (NAME.json) whose weights start a new run
    group_weights: Dict[str, float] = field(default_factory=lambda: dict(GROUP_WEIGHTS))
    arch_overrides: Dict = field(default_factory=dict)
    input: Dict = field(default_factory=lambda: dict(DEFAULT_INPUT, box_channel=True))
    command: str = ""


# "bf16": the network's forward pass runs under torch's bfloat16 autocast (weights, gradients, optimiser and loss
# stay float32): on a CPU with native bfloat16 (this project's 2-core EPYC) a step of batch 32 takes about half the
# time of float32 (docs/box_networks.md). It may change between a run and its resume, like the thread count.
TRAIN_PRECISIONS = ("fp32", "bf16")


def lr_at(it: int, cfg: BoxTrainConfig) -> float:
    """Linear warm-up, then cosine decay to 2% of `lr` at `max_iters`."""
    if it < cfg.warmup:
        return cfg.lr * (it + 1) / cfg.warmup
    t = min(1.0, (it - cfg.warmup) / max(1, cfg.max_iters - cfg.warmup))
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def validation_cases(volumes: List[Volume]):
    """(group, volume, label, mask, 2D boxes, 3D box) per validation structure; 2D: 3 slices of each."""
    cases = []
    for v in volumes:
        for l in v.label_ids:
            m = v.labels == l
            if not m.any():
                continue
            areas = m.sum(axis=(1, 2))
            ks = np.nonzero(areas >= MIN_AREA)[0]
            picks = sorted({int(ks[int(q * (len(ks) - 1))]) for q in (0.25, 0.5, 0.75)}) if len(ks) else []
            boxes2d = [validate_box(box_from_mask(m, 0, k), m.shape) for k in picks]
            cases.append((v.group, v, l, m, boxes2d, box_from_mask(m)))
    return cases


# how install_models ships the network for 3D boxes, and how validate reads them
SLICEWISE_MAX_SLICES = 16
SLICEWISE_VIEWS = 3
# until session 18 validate read 3D boxes with one view and every slice; on the CHAOS validation kidneys that
# ranked two snapshots the other way round from the shipped three-view path (benchmarks/box_networks/s18_3d)
VALIDATION_3D = f"network alone, {SLICEWISE_VIEWS} views, {SLICEWISE_MAX_SLICES} slices (as box3d.json)"
ONE_VIEW_3D = "network alone, 1 view, every slice"  # checkpoints before session 18


def validate(net: torch.nn.Module, input_cfg: Dict, cases, device) -> Dict[str, float]:
    """Dice of tight 2D boxes and 3D boxes per group, the filled box beside it. 3D boxes are read as the shipped
    box3d.json reads them (VALIDATION_3D; one view for a thin or deep box, inference.views_for)."""
    net.eval()
    cfg3 = dict(input_cfg, slicewise=True, slicewise_max_slices=SLICEWISE_MAX_SLICES)
    wrapped: Dict[int, SliceWise] = {}
    per: Dict[str, Dict[str, List[float]]] = {}
    for group, v, l, m, boxes2d, box3d in cases:
        g = per.setdefault(group, {"2d": [], "3d": [], "filled_2d": [], "filled_3d": []})
        for b in boxes2d:
            k = b.lo[0]
            g["2d"].append(dice(predict_box(net, input_cfg, v.image, b, device).mask[k], m[k]))
            g["filled_2d"].append(dice(b.mask(m.shape)[k], m[k]))
        views = views_for(SLICEWISE_VIEWS, box3d, v.image, cfg3)
        if views not in wrapped:
            wrapped[views] = SliceWise(net, SLICEWISE_MAX_SLICES, views).eval()
        g["3d"].append(dice(predict_box(wrapped[views], dict(cfg3, slicewise_views=views), v.image, box3d,
                                        device).mask, m))
        g["filled_3d"].append(dice(box3d.mask(m.shape), m))
    net.train()
    out: Dict[str, float] = {}
    scores = []
    for group, g in sorted(per.items()):
        for k, vals in g.items():
            if vals:
                out[f"{group}_{k}"] = round(float(np.mean(vals)), 4)
        scores.append(0.5 * (out.get(f"{group}_2d", 0.0) + out[f"{group}_3d"]))
    out["score"] = round(float(np.mean(scores)), 4)
    return out


def train_box(cfg: BoxTrainConfig, resume: bool = False,
              volumes: Optional[Tuple[List[Volume], List[Volume]]] = None) -> Optional[Path]:
    """Train (or resume) until max_iters or stop_after_minutes; returns the best model's manifest path (the
    `--out` of the invocation that saved it), None while no validation of the run (or its chain) has saved one.

    `volumes`: (train, val) volumes instead of box_sources' recipe (tests use small synthetic ones).
    """
    if cfg.precision not in TRAIN_PRECISIONS:
        raise ModelError(f"training precision must be one of {TRAIN_PRECISIONS}; got {cfg.precision!r}")
    last = Path(cfg.run_dir) / "last.json"
    if not resume and last.exists():  # a run from scratch would overwrite another run's checkpoint
        raise ModelError(f"{cfg.run_dir} already holds a training checkpoint ({last.name}): add --resume to continue "
                         "it, or give another --run-dir to start a new run")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = choose_device(cfg.device)
    if cfg.precision == "bf16" and not (cpu_bf16_supported() if device.type == "cpu"
                                        else device.type == "cuda" and torch.cuda.is_bf16_supported()):
        log.warning("--precision bf16 on a %s without native bfloat16: emulated, likely slower than fp32",
                    device.type.upper())
    arch = "pnet2d"
    arch_params = dict(ARCHITECTURES[arch], in_channels=2 if cfg.input.get("box_channel") else 1,
                       **cfg.arch_overrides)
    # before the data: a bad --init-from or a checkpoint of other settings fails fast
    net = _initial_network(arch, arch_params, cfg, resume).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    state = {"iteration": 0, "best": -1.0, "history": [], "minutes": 0.0}
    if resume:
        state = load_checkpoint(last, net, opt, rng)
        cfg = _resumed_config(cfg, state.get("config", {}), last)
        log.info("resumed at iteration %d from %s", state["iteration"], last)
    # [iteration, precision] where each precision began (checkpoints before session 17: float32 from the start)
    changes = state.setdefault("precisions", [[0, "fp32" if resume else cfg.precision]])
    if changes[-1][1] != cfg.precision:
        changes.append([state["iteration"], cfg.precision])
    if volumes is None:
        volumes = (load_sources("train", cfg.data_root),
                   load_sources("val", cfg.data_root, limit=cfg.val_hippocampus))
    train_vols, val_vols = volumes
    val_cases = validation_cases(val_vols)
    if resume and state["best"] >= 0 and state.get("best_validation_3d", ONE_VIEW_3D) != VALIDATION_3D:
        _rescore_best(state, cfg, val_cases, device)
    sampler = BoxSampler(train_vols, cfg.input, cfg.group_weights, cfg.slab_fraction, cfg.pseudo_by_group,
                         cfg.union_fraction, cfg.ring_share)
    if cfg.init_from and not resume:  # the starting model is the best so far: a new best must beat its score
        metrics = validate(net, cfg.input, val_cases, device)
        metrics.update(iteration=0, minutes=0.0, init_from=cfg.init_from, validation_3d=VALIDATION_3D)
        state["history"].append(metrics)
        state["best"], state["best_validation_3d"] = metrics["score"], VALIDATION_3D
        print(f"iter 0 validation {metrics}", file=sys.stderr, flush=True)
        _save_best(net, arch, arch_params, cfg, state, metrics, device)
    batches = training_batches(sampler, rng, cfg, state["iteration"], device.type == "cuda")
    with contextlib.closing(batches):  # sampling processes end with the run, also when it fails
        _train_loop(net, opt, rng, cfg, state, batches, val_cases, device, arch, arch_params, last)
    # checkpoints before session 16 did not record where the best went: this invocation's --out
    return Path(state.get("best_saved_to", cfg.out)) if state["best"] >= 0 else None


def _train_loop(net, opt, rng, cfg: BoxTrainConfig, state, batches, val_cases, device, arch, arch_params,
                last: Path) -> None:
    it = state["iteration"]
    t0 = time.monotonic()
    t_ckpt = t0
    minutes_before = state["minutes"]
    net.train()
    while it < cfg.max_iters:
        for group in opt.param_groups:
            group["lr"] = lr_at(it, cfg)
        x, y = (t.to(device, non_blocking=True) for t in next(batches))
        y = y.long()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            logits = net(x)
        loss = loss_fn(logits.float(), y)
        loss.backward()
        opt.step()
        it += 1
        state["iteration"] = it
        state["minutes"] = round(minutes_before + (time.monotonic() - t0) / 60, 3)
        if it % 50 == 0:
            print(f"iter {it} loss {loss.item():.4f} lr {lr_at(it, cfg):.2e} "
                  f"{state['minutes']:.1f} min", file=sys.stderr, flush=True)
        if it % cfg.val_every == 0 or it == cfg.max_iters:
            metrics = validate(net, cfg.input, val_cases, device)
            metrics.update(iteration=it, minutes=state["minutes"], loss=round(loss.item(), 4),
                           precision=cfg.precision,  # this invocation's; state["precisions"] has each change
                           validation_3d=VALIDATION_3D)  # since session 18 (before: one view, every slice)
            state["history"].append(metrics)
            print(f"iter {it} validation {metrics}", file=sys.stderr, flush=True)
            _save_snapshot(net, arch, arch_params, cfg, metrics)
            if metrics["score"] > state["best"]:
                state["best"], state["best_validation_3d"] = metrics["score"], VALIDATION_3D
                _save_best(net, arch, arch_params, cfg, state, metrics, device)
        elapsed = (time.monotonic() - t0) / 60
        stop = cfg.stop_after_minutes and elapsed >= cfg.stop_after_minutes
        if stop or it == cfg.max_iters or (time.monotonic() - t_ckpt) / 60 >= cfg.ckpt_minutes:
            save_checkpoint(last, net, opt, rng, dict(state, config=asdict(cfg)))
            t_ckpt = time.monotonic()
        if stop:
            log.info("stopped after %.1f min at iteration %d; resume with --resume", elapsed, it)
            break


class IndexedSamples(torch.utils.data.Dataset):
    """Sample k of a run drawn from its own generator, seeded by (seed, k): the batches are the same for any number
    of worker processes, and a resumed run needs no sampler state."""

    def __init__(self, sampler: BoxSampler, seed: int, total: int):
        self.sampler, self.seed, self.total = sampler, seed, total

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, k: int):
        x, y = self.sampler.sample(np.random.default_rng([self.seed, int(k)]))
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.uint8))  # 0/1: 1/8 of the shared memory


def training_batches(sampler: BoxSampler, rng: np.random.Generator, cfg: BoxTrainConfig, start: int,
                     pin: bool = False):
    """(input, target) batches from iteration `start` on. `sample_workers` 0: drawn here from one stream `rng`
    (the recipe of sessions 1-15, checkpointed with the run). Otherwise drawn ahead by that many processes
    (torch's DataLoader), sample k from (seed, k): a GPU then waits far less for the CPU. The workers are forked
    where the system can (the training volumes are shared, not copied into each); elsewhere each gets a copy."""
    if cfg.sample_workers <= 0:
        while True:
            xs, ys = zip(*[sampler.sample(rng) for _ in range(cfg.batch)])
            yield torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
    total = cfg.max_iters * cfg.batch
    # its own generator: the loader's worker seeds (unused here) must not draw from torch's global RNG, which
    # the checkpoint restores for dropout
    loader = torch.utils.data.DataLoader(
        IndexedSamples(sampler, cfg.seed, total), batch_size=cfg.batch, sampler=range(start * cfg.batch, total),
        num_workers=cfg.sample_workers, prefetch_factor=2, pin_memory=pin,
        multiprocessing_context="fork" if "fork" in multiprocessing.get_all_start_methods() else None,
        generator=torch.Generator().manual_seed(cfg.seed))
    yield from loader


# settings a resumed run must share with its checkpoint (the sampler's and the batch's: they decide what the
# remaining iterations see), with the value a checkpoint written before the setting existed ran with
RESUME_SAME = {"batch": None, "seed": None, "slab_fraction": None, "group_weights": None, "input": None,
               "arch_overrides": None, "union_fraction": 0.0, "pseudo_by_group": False, "ring_share": 0.2}


def _resumed_config(cfg: BoxTrainConfig, saved: Dict, path: Path) -> BoxTrainConfig:
    """`cfg` checked against the checkpoint's settings (RESUME_SAME); the schedule may change (max_iters, lr).
    The run's starting model (init_from) is the checkpoint's: the one given again is not needed."""
    for key, before in RESUME_SAME.items():
        was = saved.get(key, before)
        now = json.loads(json.dumps(getattr(cfg, key)))
        if was is not None and was != now:
            raise ModelError(f"checkpoint {path} was written with {key} = {was} (this run: {now}); resume with "
                             "the same setting (--union-fraction 0 --pseudo-sampling volume for runs before "
                             "session 11)")
    # the worker count may change (same samples), not whether samples come from one stream or by index
    was_indexed = saved.get("sample_workers", 0) > 0
    if was_indexed != (cfg.sample_workers > 0):
        raise ModelError(f"checkpoint {path} drew its samples " + ("by index (--sample-workers > 0)" if was_indexed
                         else "from one stream (--sample-workers 0)") + "; resume the same way")
    return replace(cfg, init_from=saved.get("init_from", cfg.init_from))


def _initial_network(arch: str, arch_params: Dict, cfg: BoxTrainConfig, resume: bool = False) -> torch.nn.Module:
    """A new network, or `cfg.init_from`'s weights (checked: manifest, checksum, same architecture); on
    resume a new one (the checkpoint's weights replace it)."""
    if not cfg.init_from or resume:
        return build_network(arch, in_channels=arch_params["in_channels"], **cfg.arch_overrides)
    from ..engine.models import load_model, read_manifest
    src = read_manifest(cfg.init_from)
    if src["architecture"] != arch or src["arch_params"] != json.loads(json.dumps(arch_params)):
        raise ModelError(f"--init-from {cfg.init_from}: a {src['architecture']} {src['arch_params']}, "
                         f"not this run's {arch} {arch_params}")
    return load_model(cfg.init_from)[0].train()


def _rescore_best(state, cfg: BoxTrainConfig, val_cases, device) -> None:
    """A resumed run whose best was scored with another 3D validation (before session 18: one view) scores that
    best again as validate now reads 3D boxes, so that later validations compare like with like. Without its
    file the best is forgotten: the next validation saves a new one."""
    from ..engine.models import load_model
    # checkpoints before session 16 did not record where their best went (this invocation's --out may be another
    # model): such a best is forgotten too
    path = Path(state["best_saved_to"]) if state.get("best_saved_to") else None
    if path is None or not path.is_file():
        log.warning("the best model so far (%s) is not here to score again with the new 3D validation; the next "
                    "validation saves a new best", path or "not recorded")
        state["best"] = -1.0
        return
    old = state["best"]
    with torch.random.fork_rng(devices=[]):  # building the network draws initial weights: the run's RNG stays put
        state["best"] = validate(load_model(path, device)[0], cfg.input, val_cases, device)["score"]
    state["best_validation_3d"] = VALIDATION_3D
    log.info("best so far (%s) scored again as validate reads 3D boxes now: %.4f (was %.4f)", path, state["best"], old)


def _save_snapshot(net, arch, arch_params, cfg: BoxTrainConfig, metrics) -> None:
    path = Path(cfg.run_dir) / "snapshots" / f"it{metrics['iteration']:05d}.json"
    save_model(net, arch, path, arch_params, {"input": cfg.input, "validation": metrics, "command": cfg.command})


def _save_best(net, arch, arch_params, cfg: BoxTrainConfig, state, metrics, device) -> None:
    state["best_saved_to"] = str(cfg.out)
    manifest = {
        "input": cfg.input,
        "training": {
            "recipe": "box_sources.py (train part) + pseudo-objects; see its docstring",
            "data": {part: recipe(part) for part in ("train", "val", "eval")},
            "groups": cfg.group_weights, "seed": cfg.seed, "batch": cfg.batch, "lr": cfg.lr,
            "iterations_at_best": state["iteration"], "minutes": state["minutes"], "device": str(device),
            "torch": torch.__version__, "python": platform.python_version(), "config": asdict(cfg),
            "validation_3d": VALIDATION_3D,
            "validation_set": "box_sources.py (val part): CHAOS val patients (liver, spleen; kidneys), "
                              f"{cfg.val_hippocampus} validation hippocampus subjects, cord GM/WM (T2*, MT), "
                              "fetal cortex and corpus callosum (GA21-25 non-operated)",
            "history": state["history"],
        },
        "validation": metrics,
        "command": cfg.command,
    }
    save_model(net, arch, cfg.out, arch_params, manifest)


def install_models(best_manifest, models_folder=None, foreground_threshold: Optional[float] = None,
                   foreground_threshold_3d: Optional[float] = None) -> Tuple[Path, Path]:
    """Ship a trained box network: `pnet2d.json` (2D boxes) and `box3d.json` (the same weights run slice
    by slice in 3D boxes, input "slicewise"), each with its own weights file and checksum. In session 15 the
    shipped box3d.json was another snapshot's; since session 16 both come from one call (docs/box_networks.md).
    `foreground_threshold` / `foreground_threshold_3d`: the 2D / 3D boxes' cut, when one was chosen after training
    (else 2D boxes keep the trained manifest's cut, 0.5 when it has none, and 3D boxes cut at 0.5)."""
    from ..engine.models import load_model, models_dir, read_manifest
    src = read_manifest(best_manifest)
    net, _ = load_model(best_manifest)
    folder = Path(models_folder) if models_folder else models_dir()
    extra = {k: v for k, v in src.items() if k in ("input", "input_notes", "training", "validation", "command")}
    extra["training"] = dict(extra.get("training", {}), trained_as=str(best_manifest),
                             data={part: recipe(part) for part in ("train", "val", "eval")})
    for dim, cut in ((2, foreground_threshold), (3, foreground_threshold_3d)):
        if cut is not None and not 0.0 < cut < 1.0:
            raise ModelError(f"a {dim}D foreground cut must lie in (0, 1); got {cut}")
    if foreground_threshold is not None:
        extra["input"] = dict(extra["input"], foreground_threshold=foreground_threshold)
    p2 = save_model(net, src["architecture"], folder / "pnet2d.json", src["arch_params"], extra)
    # above 16 slices the features of 16 evenly spaced slices, interpolated: the same validation Dice, a
    # third of the latency of 48 slices (benchmarks/box_networks/select_3d_slices.md)
    # three views (the box read across all three axes; thin or deep boxes keep one, BoxSegmenter.model): the
    # validation winner (select_3d_views.md, thin_rule.md), within the 1 s budget since the bfloat16 path
    # a 2D foreground cut (chosen for 2D boxes after training) is not the 3D path's: 3D boxes have their own
    input3 = {k: v for k, v in src["input"].items() if k != "foreground_threshold"}
    if foreground_threshold_3d is not None:
        input3["foreground_threshold"] = foreground_threshold_3d
    extra3 = dict({k: v for k, v in extra.items() if k != "input_notes"},
                  input=dict(input3, slicewise=True, slicewise_max_slices=SLICEWISE_MAX_SLICES,
                             slicewise_views=SLICEWISE_VIEWS),
                  note="the 2D box network run slice by slice inside a 3D box (networks.SliceWise); "
                       "chosen over the 3D PC-Net on the validation structures (benchmarks/box_networks)")
    p3 = save_model(net, src["architecture"], folder / "box3d.json", src["arch_params"], extra3)
    return p2, p3
