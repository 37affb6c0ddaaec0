"""The Slicer extension stays consistent: CMake lists exactly the files that exist, modules declare
their dependencies, and CI runs the README's test command."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["InteractiveRefine", "FewShotSeg"]


def cmake_listed(module):
    text = (ROOT / module / "CMakeLists.txt").read_text()
    text = re.sub(r"#.*", "", text).replace("${MODULE_NAME}", module)
    return {t for t in re.findall(r"[\w./-]+\.(?:py|png|svg|ui|json|safetensors|md|gz|nrrd|txt)\b", text)}


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_every_lib_file_and_resource(module):
    listed = cmake_listed(module)
    folder = ROOT / module
    existing = {p.relative_to(folder).as_posix() for pkg in (f"{module}Lib", f"{module}Slicer")
                for p in (folder / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    existing |= {p.relative_to(folder).as_posix() for p in (folder / "Resources").rglob("*") if p.is_file()}
    existing.add(f"{module}.py")
    assert not existing - listed, f"not listed in {module}/CMakeLists.txt: {sorted(existing - listed)}"
    assert not listed - existing, f"listed but missing: {sorted(listed - existing)}"


def test_top_level_cmake():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert "find_package(Slicer REQUIRED)" in text
    assert re.search(r'EXTENSION_DEPENDS\s+"?PyTorch', text)
    for module in MODULES + ["Testing"]:
        assert f"add_subdirectory({module})" in text


def test_fewshot_depends_on_interactive_refine():
    text = (ROOT / "FewShotSeg" / "FewShotSeg.py").read_text()
    assert re.search(r"dependencies\s*=\s*\[\s*\"InteractiveRefine\"\s*\]", text)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./run.sh test" in readme and "./run.sh demo" in readme
    assert re.search(r"^\./run\.sh test\s*$", ci, re.M)
