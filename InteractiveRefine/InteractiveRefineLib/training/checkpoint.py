"""Training checkpoints that resume exactly: tensors in safetensors, everything else in JSON (never pickle).

A checkpoint is NAME.safetensors + NAME.json, each written atomically (tensors first; the JSON names
the tensors' sha256, so a half-updated pair is refused). The shared part holds the network weights, the
Adam state (moments and step of every parameter, hyper-parameters) and torch's global CPU (and CUDA)
RNG; each trainer adds its own state (`meta`, `extra_tensors`): its schedule, samplers' RNGs, history.
Used by the box network's `train-box` (below) and FewShotSeg's training (FewShotSegLib.training.checkpoint).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..core.atomic import atomic_path, write_text
from ..core.errors import ModelError
from ..engine.models import sha256_of

BOX_FORMAT = "box-train-checkpoint/1"


def checkpoint_files(path) -> Tuple[Path, Path]:
    """(NAME.json, NAME.safetensors) of a checkpoint given as either file or NAME."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_suffix(".json"), p.with_suffix(".safetensors")


def _jsonable(v):
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    raise TypeError(f"not JSON-able in a checkpoint: {type(v).__name__}")


def save_training_state(path, net: torch.nn.Module, opt: torch.optim.Optimizer, fmt: str, meta: Dict[str, Any],
                        extra_tensors: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    """Write weights, Adam, torch's RNG (+ `extra_tensors`) and `meta` (JSON-able); returns the JSON path."""
    json_path, tensor_path = checkpoint_files(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    tensors: Dict[str, torch.Tensor] = {f"net.{k}": v.detach().cpu().contiguous()
                                        for k, v in net.state_dict().items()}
    opt_state = opt.state_dict()
    for idx, st in opt_state["state"].items():
        for name, value in st.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    for i, s in enumerate(cuda):
        tensors[f"rng.cuda.{i}"] = s
    tensors.update(extra_tensors or {})
    with atomic_path(tensor_path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": fmt})
    full = {"format": fmt, **meta,
            "optimizer": {"param_groups": opt_state["param_groups"],
                          "state": {str(i): sorted(st) for i, st in opt_state["state"].items()}},
            "cuda_devices": len(cuda), "weights": tensor_path.name, "sha256": sha256_of(tensor_path)}
    write_text(json_path, json.dumps(full, indent=1, default=_jsonable) + "\n")
    return json_path


def read_training_state(path, fmt: str, what: str = "training checkpoint") -> Tuple[Dict[str, Any], Dict]:
    """(meta, tensors) of a checkpoint, checked (format, checksum)."""
    json_path, tensor_path = checkpoint_files(path)
    if not json_path.is_file() or not tensor_path.is_file():
        raise ModelError(f"checkpoint not found: {json_path} (+ {tensor_path.name})")
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read checkpoint {json_path}: {exc}") from None
    if meta.get("format") != fmt:
        raise ModelError(f"{json_path} is not a {what} ({fmt})")
    if sha256_of(tensor_path) != meta.get("sha256"):
        raise ModelError(f"checkpoint {tensor_path} does not match its manifest (corrupted or half-written)")
    return meta, load_file(str(tensor_path))


def restore_training_state(path, net: torch.nn.Module, opt: torch.optim.Optimizer, fmt: str,
                           what: str = "training checkpoint", expect: Optional[Dict[str, Any]] = None
                           ) -> Tuple[Dict[str, Any], Dict]:
    """Load weights, Adam and torch's RNG from a checkpoint; returns (meta, tensors) for the rest.

    `expect`: entries (e.g. the training config, architecture) that must equal the checkpoint's."""
    meta, tensors = read_training_state(path, fmt, what)
    for key, value in (expect or {}).items():
        if json.loads(json.dumps(value)) != meta.get(key):
            raise ModelError(f"checkpoint {path} was written with a different {key}: {meta.get(key)} "
                             f"(this run: {value}); resume with the same settings")
    try:
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path} does not fit this network: {str(exc).splitlines()[0]}") from None
    dev = next(net.parameters()).device
    state = {}
    for idx, names in meta["optimizer"]["state"].items():
        state[int(idx)] = {n: tensors[f"opt.{idx}.{n}"] if n == "step" else tensors[f"opt.{idx}.{n}"].to(dev)
                           for n in names}
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    if torch.cuda.is_available() and meta.get("cuda_devices"):
        torch.cuda.set_rng_state_all([tensors[f"rng.cuda.{i}"] for i in range(meta["cuda_devices"])])
    return meta, tensors


def save_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
                    state: Dict[str, Any]) -> Path:
    """The box trainer's checkpoint: the shared part + its sampler's numpy Generator + `state` (JSON-able:
    iteration, best, history, config)."""
    return save_training_state(path, net, opt, BOX_FORMAT, {"state": state, "numpy_rng": rng.bit_generator.state})


def load_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                    rng: np.random.Generator) -> Dict[str, Any]:
    """Restore a box trainer's checkpoint into `net`, `opt`, torch's RNG and `rng`; returns its `state`."""
    meta, _ = restore_training_state(path, net, opt, BOX_FORMAT, "box network training checkpoint")
    rng.bit_generator.state = meta["numpy_rng"]
    return meta["state"]

