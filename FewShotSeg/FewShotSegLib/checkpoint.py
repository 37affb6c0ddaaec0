"""Training checkpoints that resume exactly: tensors in safetensors, everything else in JSON (never pickle).

A checkpoint is two files, NAME.safetensors and NAME.json, each written atomically (tensors first; the JSON
names the tensors' sha256, so a half-updated pair is refused). It holds the network weights, the Adam
state (moments and step of every parameter, hyper-parameters), the learning-rate schedule, the step count
and loss history, and every random state the training draws from: the episode sampler's numpy Generator
and torch Generator, torch's global CPU (and CUDA) generator, numpy's global and Python's `random`
states. Resuming from it and training on gives bit-identical weights on the CPU (test_fewshot_resume.py).
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from InteractiveRefineLib.atomic import atomic_path, write_text
from InteractiveRefineLib.errors import ModelError
from InteractiveRefineLib.models import sha256_of

FORMAT = "fewshot-train-checkpoint/1"


def _paths(path) -> tuple:
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".json"), p.with_suffix(".safetensors")


def _np_global_state() -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": keys.tolist(), "pos": int(pos), "has_gauss": int(has_gauss),
            "cached": float(cached)}


def _set_np_global_state(s: Dict[str, Any]) -> None:
    np.random.set_state((s["name"], np.asarray(s["keys"], dtype=np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def save_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched, sampler, step: int,
                    history, info: Dict[str, Any]) -> Path:
    """Write the training state after `step` optimiser steps; returns the JSON path."""
    json_path, tensor_path = _paths(path)
    tensors: Dict[str, torch.Tensor] = {f"net.{k}": v.detach().cpu().contiguous()
                                        for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for name, value in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.sampler_torch"] = sampler.gen.get_state()
    n_cuda = 0
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
            n_cuda += 1
    with atomic_path(tensor_path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    meta = {
        "format": FORMAT, "step": int(step), "history": [float(h) for h in history],
        "optimizer": {"param_groups": opt_state["param_groups"],
                      "state": {str(i): sorted(st) for i, st in opt_state["state"].items()}},
        "scheduler": sched.state_dict(),
        "rng": {"sampler_numpy": sampler.rng.bit_generator.state, "numpy_global": _np_global_state(),
                "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
                "cuda_devices": n_cuda},
        "weights": tensor_path.name, "sha256": sha256_of(tensor_path), **info,
    }
    write_text(json_path, json.dumps(meta, indent=1) + "\n")
    return json_path


def read_checkpoint(path) -> tuple:
    """(meta, tensors) of a checkpoint, checked (format, checksum)."""
    json_path, tensor_path = _paths(path)
    if not json_path.is_file() or not tensor_path.is_file():
        raise ModelError(f"checkpoint not found: {json_path} (+ {tensor_path.name})")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read checkpoint {json_path}: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ModelError(f"{json_path} is not a FewShotSeg training checkpoint ({FORMAT})")
    if sha256_of(tensor_path) != meta.get("sha256"):
        raise ModelError(f"checkpoint {tensor_path} does not match its manifest (corrupted or half-written)")
    return meta, load_file(str(tensor_path))


def restore_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer, sched, sampler,
                       expect: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Load a checkpoint into the training objects; returns its JSON part (step, history, ...).

    `expect`: entries (e.g. the training config, architecture) that must equal the checkpoint's."""
    meta, tensors = read_checkpoint(path)
    for key, value in (expect or {}).items():
        if json.loads(json.dumps(value)) != meta.get(key):
            raise ModelError(f"checkpoint {path} was written with a different {key}: {meta.get(key)} "
                             f"(this run: {value}); resume with the same settings")
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    dev = next(net.parameters()).device
    state = {}
    for idx, names in meta["optimizer"]["state"].items():
        state[int(idx)] = {n: tensors[f"opt.{idx}.{n}"] for n in names}
        for n, v in state[int(idx)].items():
            if n != "step":
                state[int(idx)][n] = v.to(dev)
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    sched.load_state_dict(meta["scheduler"])
    rng = meta["rng"]
    sampler.rng.bit_generator.state = rng["sampler_numpy"]
    sampler.gen.set_state(tensors["rng.sampler_torch"])
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available() and rng.get("cuda_devices"):
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(rng["cuda_devices"])])
    _set_np_global_state(rng["numpy_global"])
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    return meta
