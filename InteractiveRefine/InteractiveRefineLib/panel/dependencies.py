"""The Python packages the Slicer modules need besides torch (read from Resources/requirements.txt).

Stdlib only: Slicer imports this before anything is installed. The modules install what is missing on
the user's request only (never at import): torch through the PyTorch extension, the rest through
slicer.packaging (Slicer 5.12+) or slicer.util.pip_install.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Dict, List

#: pip distribution name -> import name, where they differ.
IMPORT_NAMES: Dict[str, str] = {"scikit-image": "skimage", "pymaxflow": "maxflow", "simpleitk": "SimpleITK"}
REQUIREMENTS_FILE = Path(__file__).resolve().parents[2] / "Resources" / "requirements.txt"


def read_requirements(path=REQUIREMENTS_FILE) -> List[str]:
    """Requirement lines of a requirements file (comments, blank lines and pip options dropped)."""
    reqs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            reqs.append(line)
    return reqs


def distribution_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return match.group(1)


def import_name(requirement: str) -> str:
    dist = distribution_name(requirement)
    return IMPORT_NAMES.get(dist.lower(), dist.replace("-", "_"))


def missing(requirements: List[str]) -> List[str]:
    """The requirements whose package cannot be imported (nothing is imported to find out)."""
    return [r for r in requirements if importlib.util.find_spec(import_name(r)) is None]
