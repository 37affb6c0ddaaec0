"""Model weights (safetensors, never pickle) with a JSON manifest and a sha256 checksum.

A model `NAME` is two files: `NAME.safetensors` and `NAME.json`. The manifest records the
architecture and its parameters, the input size and normalisation, the training data and split,
the command line, validation metrics and the sha256 of the weights file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Container, Dict, Optional, Tuple

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.atomic import atomic_path, write_text
from ..core.errors import ModelError
from .networks import ARCHITECTURES, DilatedNet, build_network

MANIFEST_VERSION = 1
REQUIRED_KEYS = ("name", "architecture", "arch_params", "input", "weights", "sha256")


def models_dir() -> Path:
    """The shipped models folder (InteractiveRefine/Resources/Models), overridable by ADAPTIVESEG_MODELS."""
    env = os.environ.get("ADAPTIVESEG_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "Resources" / "Models"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_model(net: torch.nn.Module, arch: str, manifest_path, arch_params: Dict[str, Any],
               extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write weights + manifest next to each other (each file written atomically)."""
    manifest_path = Path(manifest_path)
    if manifest_path.suffix != ".json":
        raise ModelError(f"a model is saved as NAME.json (+ NAME.safetensors); got {manifest_path.name}")
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    weights = manifest_path.with_suffix(".safetensors")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"architecture": arch})
    manifest = dict(extra or {})
    manifest.update({
        "manifest_version": MANIFEST_VERSION,
        "name": manifest_path.stem,
        "architecture": arch,
        "arch_params": arch_params,
        "weights": weights.name,
        "sha256": sha256_of(weights),
        "parameters": sum(v.numel() for v in state.values()),
    })
    manifest.setdefault("input", {})
    write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest_path


def read_manifest(manifest_path, known: Container[str] = ARCHITECTURES) -> Dict[str, Any]:
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise ModelError(f"model manifest not found: {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model manifest {manifest_path} is not valid JSON: {exc}") from None
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"model manifest {manifest_path} lacks {missing}")
    if manifest["architecture"] not in known:
        raise ModelError(f"model manifest {manifest_path} names an unknown architecture "
                         f"{manifest['architecture']!r}")
    return manifest


def verified_state(manifest_path, known: Container[str] = ARCHITECTURES
                   ) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(weights, manifest) after checking the manifest and the sha256 of the safetensors file."""
    manifest_path = Path(manifest_path)
    manifest = read_manifest(manifest_path, known)
    weights = manifest_path.parent / manifest["weights"]
    if not weights.is_file():
        raise ModelError(f"model weights not found: {weights} (named in {manifest_path.name})")
    digest = sha256_of(weights)
    if digest != manifest["sha256"]:
        raise ModelError(f"model weights {weights.name} are corrupted or were replaced: sha256 {digest[:12]}... "
                         f"does not match the manifest's {str(manifest['sha256'])[:12]}...")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"cannot read safetensors weights {weights}: {exc}") from None
    return state, manifest


def load_state(net: torch.nn.Module, state: Dict[str, torch.Tensor], manifest: Dict[str, Any]) -> None:
    """Strictly load `state` into `net`, naming the weights file on a mismatch."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"weights {manifest['weights']} do not fit architecture {manifest['architecture']}: "
                         f"{str(exc).splitlines()[0]}") from None


def load_model(manifest_path, device: Optional[torch.device] = None) -> Tuple[DilatedNet, Dict[str, Any]]:
    """Load a model after checking its manifest and the sha256 of its weights; eval mode."""
    return load_checked(manifest_path, lambda manifest, **params: build_network(manifest["architecture"], **params),
                        device=device)


def load_checked(manifest_path, build: Callable[..., torch.nn.Module], known: Container[str] = ARCHITECTURES,
                 device: Optional[torch.device] = None) -> Tuple[torch.nn.Module, Dict[str, Any]]:
    """Any shipped network: check the manifest and weights (verified_state), build it with
    `build(manifest, **arch_params)`, load the weights strictly; eval mode, on `device`."""
    manifest_path = Path(manifest_path)
    state, manifest = verified_state(manifest_path, known)
    try:
        net = build(manifest, **_tuplify(manifest["arch_params"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelError(f"model manifest {manifest_path.name} has unusable arch_params: {exc}") from None
    load_state(net, state, manifest)
    net.eval()
    if device is not None:
        net.to(device)
    return net, manifest


def _tuplify(params: Dict[str, Any]) -> Dict[str, Any]:
    """JSON turns tuples into lists; the network expects tuples for per-block settings."""
    def conv(v):
        return tuple(conv(x) for x in v) if isinstance(v, list) else v
    return {k: conv(v) for k, v in params.items()}


def default_model_path(dim: int) -> Path:
    # 3D boxes: the 2D box network run slice by slice (box3d.json, input "slicewise"); it replaced the 3D
    # PC-Net, which failed on every structure outside the abdomen (docs/box_networks.md)
    return models_dir() / ("pnet2d.json" if dim == 2 else "box3d.json")
