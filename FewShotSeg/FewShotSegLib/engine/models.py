"""RP-Net weights: safetensors + JSON manifest + sha256, with the checks of InteractiveRefineLib.engine.models.

Shipped models live in FewShotSeg/Resources/Models: `default.json` (the model `segment` and `demo` use) and
the per-fold CHAOS models `chaos_s{setting}_f{fold}_{group}.json` that `evaluate` uses.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from InteractiveRefineLib.engine.models import load_checked, save_model

from .network import ARCHITECTURE, RPNet, build_rpnet

DEFAULT_NAME = "default"


def models_dir() -> Path:
    """FewShotSeg/Resources/Models, overridable by ADAPTIVESEG_FEWSHOT_MODELS."""
    env = os.environ.get("ADAPTIVESEG_FEWSHOT_MODELS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "Resources" / "Models"


def fold_model_name(setting: int, fold: int, group: str) -> str:
    return f"chaos_s{setting}_f{fold}_{group}"


def model_path(name_or_path) -> Path:
    """A model name in the shipped folder, or a path to a manifest."""
    p = Path(str(name_or_path))
    if p.suffix == ".json" or p.parent != Path("."):
        return p
    return models_dir() / f"{name_or_path}.json"


def save_rpnet(net: RPNet, manifest_path, arch_params: Dict[str, Any], extra: Dict[str, Any]) -> Path:
    return save_model(net, ARCHITECTURE, manifest_path, arch_params, extra)


def load_rpnet(name_or_path=DEFAULT_NAME, device: Optional[torch.device] = None) -> Tuple[RPNet, Dict[str, Any]]:
    """Load a checked RP-Net in eval mode."""
    return load_checked(model_path(name_or_path), lambda manifest, **params: build_rpnet(**params),
                        known=(ARCHITECTURE,), device=device)
