"""Episodic training of RP-Net: supervised base organs + superpixel self-supervision, seeded, with progress.

`train_rpnet` trains one network on prepared volumes; `train_protocol_model` builds the volumes of one
CHAOS fold / setting / test group (protocol.py) and saves the model with its manifest (command recorded).

Long runs fit the machine: with `checkpoint` set, the full training state (checkpoint.py) is written every
`checkpoint_seconds` and at the end (or when `stop_after` steps are done), and `resume` continues from such a
checkpoint exactly where it stopped: the same command, interrupted and resumed, gives the same weights.
`init` starts from the weights of another model of the same architecture (the pretrained encoder, pretrain.py).
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..engine.losses import dice_ce, refinement_loss
from ..engine.models import load_rpnet, save_rpnet
from ..engine.network import DEFAULT_PARAMS, build_rpnet
from ..engine.protocol import CHAOS_GROUPS, base_labels, fold_cases
from ..engine.slices import NETWORK_SIZE
from .checkpoint import restore_checkpoint, save_checkpoint
from .episodes import EpisodeSampler, Volume, prepare_case_volumes


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000            # optimiser steps (batches of episodes)
    batch: int = 8               # episodes per step
    lr: float = 1e-3             # Adam, cosine-decayed to 5% over the steps
    weight_decay: float = 1e-4
    iterations: int = 3          # recurrent refinement steps in training (about 10 at test time)
    align_weight: float = 1.0    # prototype alignment loss (support predicted from query prototypes)
    p_superpixel: float = 0.5    # share of label-free superpixel episodes
    seed: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


CHECKPOINT_SECONDS = 300.0


def init_weights(net: torch.nn.Module, init) -> Dict[str, object]:
    """Copy the weights of model `init` (a manifest path or shipped name) into `net`; same architecture."""
    src, manifest = load_rpnet(init)
    try:
        net.load_state_dict(src.state_dict())
    except RuntimeError as exc:
        from InteractiveRefineLib.core.errors import ModelError
        raise ModelError(f"--init model {init} does not fit this network's architecture: {exc}") from None
    return {"name": manifest.get("name"), "sha256": manifest.get("sha256"),
            "pretraining": manifest.get("pretraining", {}).get("datasets")}


def train_rpnet(volumes: Sequence[Volume], base: Sequence[int], config: TrainConfig = TrainConfig(),
                device: torch.device = torch.device("cpu"), arch_params: Optional[Dict] = None,
                show_progress: bool = True, checkpoint=None, checkpoint_seconds: float = CHECKPOINT_SECONDS,
                resume=None, init=None, stop_after: Optional[int] = None) -> Dict[str, object]:
    """Train a new RP-Net; returns {'net', 'history', 'seconds', 'step', 'init'} (net in eval mode, on `device`).

    checkpoint: path (NAME.json) of the checkpoint written every `checkpoint_seconds` and when training stops;
    resume: a checkpoint to continue from (same config and architecture); init: model whose weights start the
    training; stop_after: stop after this many steps in all (the schedule still spans config.steps).
    """
    seed_everything(config.seed)
    net = build_rpnet(**(arch_params or {})).to(device)
    init_info = init_weights(net, init) if init is not None and resume is None else None
    sampler = EpisodeSampler(volumes, base, config.p_superpixel, seed=config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(s / max(config.steps, 1), 1.0))))
    history: List[float] = []
    expect = {"config": dataclasses.asdict(config), "arch_params": dict(arch_params or {}),
              "episodes": {"volumes": [v.case_id for v in volumes], "base": [int(b) for b in base]}}
    start = 0
    if resume is not None:
        meta = restore_checkpoint(resume, net, opt, sched, sampler, expect)
        start, history = int(meta["step"]), list(meta["history"])
        init_info = meta.get("init")
    end = config.steps if stop_after is None else min(int(stop_after), config.steps)
    t0 = time.monotonic()
    last_save = t0

    def save(step):
        if checkpoint is not None:
            save_checkpoint(checkpoint, net, opt, sched, sampler, step, history, dict(expect, init=init_info))
    net.train()
    bar = tqdm(range(start, end), desc="train", disable=not show_progress, mininterval=2.0)
    for step in bar:
        ep = {k: v.to(device) for k, v in sampler.sample(config.batch).items()}
        out = net(ep["support_img"], ep["support_mask"], ep["query_img"], iterations=config.iterations)
        loss = refinement_loss(out["logits"], ep["query_mask"])
        if config.align_weight > 0:
            align = net.alignment_logits(out["query_cre"], out["logits"][-1], out["support"]["cre"])
            align = torch.nn.functional.interpolate(align, size=ep["support_mask"].shape[-2:], mode="bilinear",
                                                    align_corners=False)
            loss = loss + config.align_weight * dice_ce(align, ep["support_mask"])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(history[-50:]):.3f}")
        if checkpoint is not None and time.monotonic() - last_save > checkpoint_seconds:
            save(step + 1)
            last_save = time.monotonic()
    save(max(end, start))
    net.eval()
    return {"net": net, "history": history, "seconds": time.monotonic() - t0, "step": max(end, start),
            "init": init_info}


def train_protocol_model(dataset, out_path, setting: int, group: Optional[str], cases: Sequence[str],
                         config: TrainConfig = TrainConfig(), device: torch.device = torch.device("cpu"),
                         groups: Dict[str, tuple] = CHAOS_GROUPS, fold: Optional[int] = None,
                         show_progress: bool = True, command: str = "", checkpoint=None, resume=None,
                         init=None, checkpoint_seconds: float = CHECKPOINT_SECONDS,
                         stop_after: Optional[int] = None) -> Optional[Path]:
    """Train on `cases` for one test group (None: the default model, every label supervised) and save it.

    The group's organs are never supervised classes; in setting 2 their slices are removed entirely.
    checkpoint / resume / init / stop_after: see train_rpnet. A run stopped before config.steps writes its
    checkpoint only (no model) and returns None.
    """
    if group is None:
        base, excluded = tuple(dataset.foreground_labels), ()
    else:
        base, excluded = base_labels(group, groups), tuple(groups[group])
    volumes = prepare_case_volumes(dataset, cases, setting, excluded)
    result = train_rpnet(volumes, base, config, device, show_progress=show_progress, checkpoint=checkpoint,
                         checkpoint_seconds=checkpoint_seconds, resume=resume, init=init, stop_after=stop_after)
    if result["step"] < config.steps:
        return None
    arch = dict(DEFAULT_PARAMS)
    extra = {
        "input": {"size": NETWORK_SIZE, "normalisation": "per-volume percentile clip [0.5, 99.5], z-score",
                  "slice_axis": "any (trained on axial)"},
        "training": {"dataset": str(getattr(dataset, "name", "")), "cases": list(cases), "setting": setting,
                     "test_group": group, "test_labels": list(excluded), "supervised_labels": list(base),
                     "fold": fold, "config": dataclasses.asdict(config), "device": str(device),
                     "init": result["init"], "resumed_from": str(resume) if resume is not None else None,
                     "seconds": round(float(result["seconds"]), 1),
                     "final_loss": round(float(np.mean(result["history"][-50:])), 4),
                     "slices_used": int(sum(v.allowed.sum() for v in volumes))},
        "command": command,
    }
    return save_rpnet(result["net"].cpu(), out_path, arch, extra)


def fold_training_cases(dataset, fold: int) -> List[str]:
    return fold_cases(dataset.case_ids, fold)["train"]
