"""The core packages never import Slicer, Qt, CTK or VTK (only the bridge may), and every module
file parses with the Python 3.9 grammar (Slicer 5.8 bundles Python 3.9)."""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBS = [ROOT / "InteractiveRefine" / "InteractiveRefineLib", ROOT / "FewShotSeg" / "FewShotSegLib"]
FORBIDDEN = {"slicer", "qt", "ctk", "vtk", "mrml", "vtkSegmentationCorePython", "PythonQt"}
ALLOWED_THIRD_PARTY = {"numpy", "scipy", "torch", "SimpleITK", "safetensors", "tqdm", "skimage", "maxflow",
                       "matplotlib", "InteractiveRefineLib", "FewShotSegLib"}
CORE_FILES = sorted(p for lib in LIBS for p in lib.rglob("*.py")
                    if p.name != "slicer_bridge.py" and "__pycache__" not in p.parts)


def imported_roots(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


def test_core_files_found():
    assert len(CORE_FILES) >= 15


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_imports_no_slicer(path):
    bad = [(name, line) for name, line in imported_roots(path) if name in FORBIDDEN]
    assert not bad, f"{path.name} imports {bad}: only slicer_bridge.py may talk to Slicer"


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_core_imports_only_allowed_packages(path):
    stdlib = set(sys.stdlib_module_names)
    bad = [(n, line) for n, line in imported_roots(path) if n not in stdlib and n not in ALLOWED_THIRD_PARTY]
    assert not bad, f"{path.name} imports packages outside the allowed list: {bad}"


def test_purity_check_detects_a_slicer_import(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import os\nif True:\n    from slicer.util import arrayFromVolume\n")
    assert ("slicer", 3) in list(imported_roots(f))


ALL_PY = sorted(p for p in ROOT.glob("*/**/*.py") if ".venv" not in p.parts and "runs" not in p.parts)


@pytest.mark.parametrize("path", ALL_PY, ids=lambda p: str(p.relative_to(ROOT)))
def test_python39_syntax(path):
    ast.parse(path.read_text(), filename=str(path), feature_version=(3, 9))
