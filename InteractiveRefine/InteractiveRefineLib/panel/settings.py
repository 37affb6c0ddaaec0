"""Defaults of the panel's Advanced settings, importable without torch.

Slicer imports the module file (and its parameter-node class) at startup, before the dependencies may
be installed, so the defaults cannot come from finetune.RefineConfig directly; a test keeps the two equal.
"crf_lambda" is the CRF weight of 3D boxes (and of 2D boxes unless RefineConfig.lam_2d is set). The settings
without a panel field (RefineConfig.lam_2d, the "never hurts" safeguards crf_min_keep, distance_fraction,
local_edit, lr, whole_box_3d, a scribble's uncertainty over a whole 3D box, and fallback_margin, the return to
the shipped network once a correction favours it over the tuned head) keep RefineConfig's defaults,
chosen on the validation structures in benchmarks/box_networks/select_refinement.py (docs/box_networks.md).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

#: Panel field -> default. crf_sigma 0 and time_budget 0 mean "automatic" / "no limit" in the panel
#: (None in RefineConfig); refine_config_kwargs maps them onto RefineConfig's fields.
DEFAULTS: Dict[str, Any] = {
    "iterations": 3,
    "omega": 20.0,
    "threshold": 0.8,
    "crf_lambda": 3.0,
    "crf_sigma": 0.0,
    "margin_mm": 10.0,
    "whole_network": False,
    "time_budget": 0.0,
    "three_views": True,
}


#: Parameter-node field of the panel -> key of DEFAULTS (and of refine_config_kwargs).
PANEL_FIELDS = {"iterations": "iterations", "omega": "omega", "threshold": "threshold", "crfLambda": "crf_lambda",
                "crfSigma": "crf_sigma", "marginMm": "margin_mm", "wholeNetwork": "whole_network",
                "timeBudget": "time_budget", "threeViews": "three_views"}


def refine_config_kwargs(iterations: int, omega: float, threshold: float, crf_lambda: float, crf_sigma: float,
                         margin_mm: float, whole_network: bool, time_budget: float,
                         three_views: bool = True) -> Dict[str, Any]:
    """Keyword arguments of finetune.RefineConfig from the panel's values (0 -> automatic / no limit;
    three_views -> views3d None: the shipped model's three views, which thin or deep boxes read with one; off -> 1)."""
    def positive(v: float) -> Optional[float]:
        return float(v) if v and v > 0 else None
    return {"iterations": int(iterations), "omega": float(omega), "threshold": float(threshold),
            "lam": float(crf_lambda), "sigma": positive(crf_sigma), "margin_mm": float(margin_mm),
            "head_only": not whole_network, "time_budget": positive(time_budget),
            "views3d": None if three_views else 1}
