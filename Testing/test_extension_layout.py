"""The Slicer extension stays consistent: CMake lists exactly the files that exist, pyproject.toml ships every
core package, modules declare their dependencies, and CI runs the README's test command."""
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



def _pyproject():
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_pyproject_ships_every_core_package():
    """pip installs only the packages pyproject lists: a new subpackage of a core library (a folder with an
    __init__.py) that is not listed would be missing from the installed core. The *Slicer packages import slicer
    and load only inside Slicer, so the headless core does not ship them."""
    tool = _pyproject()["tool"]["setuptools"]
    roots = tool["package-dir"]
    assert set(roots) == {f"{m}Lib" for m in MODULES}
    expected = set()
    for name, folder in roots.items():
        folder = ROOT / folder
        assert (folder / "__init__.py").is_file(), folder
        for init in folder.rglob("__init__.py"):
            expected.add(".".join([name, *init.parent.relative_to(folder).parts]))
        # a folder of modules without __init__.py would not be a package setuptools ships
        loose = {p.parent for p in folder.rglob("*.py") if "__pycache__" not in p.parts
                 and not (p.parent / "__init__.py").is_file()}
        assert not loose, f"modules outside any package: {sorted(map(str, loose))}"
    listed = set(tool["packages"])
    assert not expected - listed, f"not listed in pyproject.toml's packages: {sorted(expected - listed)}"
    assert not listed - expected, f"listed in pyproject.toml but not a package: {sorted(listed - expected)}"
    assert not {p for p in listed if p.split(".")[0].endswith("Slicer")}

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
