"""FewShotSeg training checkpoints that resume exactly, on InteractiveRefineLib.training.checkpoint's shared part
(safetensors + JSON with a checksum; weights, Adam state, torch's global CPU and CUDA RNG). Added here:
the learning-rate schedule, the step count and loss history, and the other random states the training
draws from: the episode sampler's numpy Generator and torch Generator, numpy's global and Python's
`random` states. Resuming from it and training on gives bit-identical weights on the CPU (test_fewshot_resume.py).
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from InteractiveRefineLib.training.checkpoint import read_training_state, restore_training_state, save_training_state

FORMAT = "fewshot-train-checkpoint/1"
WHAT = "FewShotSeg training checkpoint"


def _np_global_state() -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _set_np_global_state(s: Dict[str, Any]) -> None:
    np.random.set_state((s["name"], np.asarray(s["keys"], dtype=np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def save_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched, sampler, step: int,
                    history, info: Dict[str, Any]) -> Path:
    """Write the training state after `step` optimiser steps; returns the JSON path."""
    py = random.getstate()
    meta = {"step": int(step), "history": [float(h) for h in history], "scheduler": sched.state_dict(),
            "rng": {"sampler_numpy": sampler.rng.bit_generator.state, "numpy_global": _np_global_state(),
                    "python": [py[0], list(py[1]), py[2]]},
            **info}
    return save_training_state(path, net, opt, FORMAT, meta, {"rng.sampler_torch": sampler.gen.get_state()})


def read_checkpoint(path) -> tuple:
    """(meta, tensors) of a checkpoint, checked (format, checksum)."""
    return read_training_state(path, FORMAT, WHAT)


def restore_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched, sampler,
                       expect: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Load a checkpoint into the training objects; returns its JSON part (step, history, ...).

    `expect`: entries (e.g. the training config, architecture) that must equal the checkpoint's."""
    meta, tensors = restore_training_state(path, net, opt, FORMAT, WHAT, expect)
    sched.load_state_dict(meta["scheduler"])
    rng = meta["rng"]
    sampler.rng.bit_generator.state = rng["sampler_numpy"]
    sampler.gen.set_state(tensors["rng.sampler_torch"])
    _set_np_global_state(rng["numpy_global"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    return meta
