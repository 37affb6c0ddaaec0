"""Exact training checkpoints: weights, optimiser, iteration, RNG states; safetensors + JSON, no pickle.

Resuming from a checkpoint continues bit-identically on the same device and thread count: the network
and Adam tensors, torch's RNG (dropout) and numpy's Generator state (sampling) are all restored.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .atomic import atomic_path, write_text
from .errors import ModelError


def save_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer, rng: np.random.Generator,
                    state: Dict[str, Any]) -> Path:
    """Write `path` (.json) and its .safetensors; `state` is JSON-able (iteration, best, history, ...)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    osd = opt.state_dict()
    for idx, st in osd["state"].items():
        for key, val in st.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"opt.{idx}.{key}"] = t.detach().cpu().contiguous()
    tensors["torch_rng"] = torch.get_rng_state()
    weights = path.with_suffix(".safetensors")
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp))
    meta = {"state": state, "param_groups": osd["param_groups"], "numpy_rng": rng.bit_generator.state}
    write_text(path, json.dumps(meta, indent=1, default=_jsonable) + "\n")
    return path


def _jsonable(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    raise TypeError(f"not JSON-able in a checkpoint: {type(v).__name__}")


def load_checkpoint(path, net: torch.nn.Module, opt: torch.optim.Optimizer,
                    rng: np.random.Generator) -> Dict[str, Any]:
    """Restore `net`, `opt`, torch's and `rng`'s state from `path`; return the saved `state`."""
    path = Path(path)
    weights = path.with_suffix(".safetensors")
    if not path.is_file() or not weights.is_file():
        raise ModelError(f"checkpoint not found: {path} (+ {weights.name})")
    try:
        meta = json.loads(path.read_text())
        tensors = load_file(str(weights))
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read checkpoint {path}: {exc}") from None
    net_state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(net_state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"checkpoint {path.name} does not fit this network: {str(exc).splitlines()[0]}") from None
    opt_state: Dict[int, Dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, idx, key = k.split(".", 2)
            opt_state.setdefault(int(idx), {})[key] = v
    opt.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["torch_rng"])
    rng.bit_generator.state = meta["numpy_rng"]
    return meta["state"]


def checkpoint_paths(folder) -> Tuple[Path, Path]:
    """(last, best-so-far) checkpoint manifests of a run folder."""
    folder = Path(folder)
    return folder / "last.json", folder / "best.json"
