"""The embedded sample data shipped in InteractiveRefine/Resources/SampleData (see its README.md)."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import DatasetError


def sample_dir() -> Path:
    """Resources/SampleData of the module, overridable by ADAPTIVESEG_SAMPLE_DATA."""
    env = os.environ.get("ADAPTIVESEG_SAMPLE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "Resources" / "SampleData"


def sample_dataset(name: str = "chaos") -> Path:
    """Path of an embedded Decathlon-layout sample: 'chaos' (MRI, 2 held-out patients) or 'totalseg_ct'."""
    path = sample_dir() / name
    if not (path / "dataset.json").is_file():
        raise DatasetError(f"embedded sample {name!r} not found at {path}")
    return path
