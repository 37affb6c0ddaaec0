"""The core packages are grouped by layer (docs/development.md): each module imports only from its own layer and
the layers below it, lazy imports included, and FewShotSegLib takes InteractiveRefineLib's shared core from
InteractiveRefineLib.core (the only place it exists). Every import of the two packages, anywhere in the
repository, names a module that exists (a lazy import left at a module's old place fails only when it runs)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBS = {"InteractiveRefineLib": ROOT / "InteractiveRefine" / "InteractiveRefineLib",
        "FewShotSegLib": ROOT / "FewShotSeg" / "FewShotSegLib"}
# The command-line entry modules stay at each package root and may import every layer.
ROOT_MODULES = {"InteractiveRefineLib": {"__init__", "__main__", "cli", "segment_command", "train_box_cli"},
                "FewShotSegLib": {"__init__", "__main__", "cli", "options"}}
EVERY = {"core", "engine", "compute", "panel", "training", "evaluation"}
# layer -> the InteractiveRefineLib layers it may import (for both packages: FewShotSeg's layers sit on IR's).
IR_ALLOWED = {"core": {"core"}, "engine": {"core", "engine"}, "compute": {"core", "engine", "compute"},
              "panel": {"core", "engine", "compute", "panel"}, "training": {"core", "engine", "training"},
              "evaluation": EVERY}
FS_ALLOWED = {"engine": {"engine"}, "training": {"engine", "training"},
              "evaluation": {"engine", "training", "evaluation"}, "panel": {"engine", "panel"}}
# The compute child hosts the few-shot requests too: its service imports (lazily) FewShotSeg's segmenter, the
# box network as propagation uses it, and the panel's request handler, which are Slicer-free.
EXCEPTIONS = {("InteractiveRefineLib.compute.service", "FewShotSegLib.engine.segment"),
              ("InteractiveRefineLib.compute.service", "FewShotSegLib.engine.propagate"),
              ("InteractiveRefineLib.compute.service", "FewShotSegLib.panel.controller")}


def module_files():
    for lib, folder in LIBS.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield lib, path


def module_name(lib, path):
    parts = list(path.relative_to(LIBS[lib]).with_suffix("").parts)
    return [lib] + parts


def imported_modules(lib, path):
    """Absolute dotted names of every InteractiveRefineLib/FewShotSegLib import, lazy ones included."""
    name = module_name(lib, path)
    package = name[:-1]  # also for __init__.py: its name ends in "__init__"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            mod = base + (node.module.split(".") if node.module else [])
            targets = [".".join(mod)] if node.module else [".".join(mod + [a.name]) for a in node.names]
        else:
            continue
        yield from (t for t in targets if t.split(".")[0] in LIBS)


def layer_of(dotted):
    parts = dotted.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in EVERY) else None


def test_only_command_modules_at_the_package_roots():
    for lib, folder in LIBS.items():
        flat = {p.stem for p in folder.glob("*.py")}
        assert flat == ROOT_MODULES[lib], f"{lib}: put {sorted(flat - ROOT_MODULES[lib])} into a layer"
        assert {p.name for p in folder.iterdir() if (p / "__init__.py").exists()} <= EVERY


@pytest.mark.parametrize("lib,path", list(module_files()), ids=lambda v: v if isinstance(v, str) else
                         v.relative_to(ROOT).as_posix())
def test_imports_follow_the_layers(lib, path):
    name = module_name(lib, path)
    if len(name) == 2:  # a root (command) module
        return
    layer = name[1]
    bad = []
    for target in imported_modules(lib, path):
        target_lib, target_layer = target.split(".")[0], layer_of(target)
        if target_lib == "InteractiveRefineLib":
            ok = target_layer in IR_ALLOWED[layer]
        else:
            # InteractiveRefineLib's evaluation (large-volume, GPU check) also measures FewShotSeg.
            ok = target_layer in (FS_ALLOWED[layer] if lib == "FewShotSegLib" else
                                  set(FS_ALLOWED) if layer == "evaluation" else set())
        if not ok and (".".join(name), target) not in EXCEPTIONS:
            bad.append(target)
    assert not bad, f"{'.'.join(name)} ({layer}) imports {bad} from a layer above or beside it"


def test_layer_check_sees_lazy_relative_imports(tmp_path):
    path = LIBS["InteractiveRefineLib"] / "core" / "errors.py"
    found = set(imported_modules("InteractiveRefineLib", path))
    assert found == set(), found
    path = LIBS["InteractiveRefineLib"] / "compute" / "service.py"
    found = set(imported_modules("InteractiveRefineLib", path))
    assert "InteractiveRefineLib.engine.session" in found  # a lazy `from ..engine.session import ...`
    assert "InteractiveRefineLib.core.errors" in found


def module_exists(dotted):
    parts = dotted.split(".")
    base = LIBS[parts[0]].joinpath(*parts[1:])
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def missing_names(node, module):
    """For `from <package> import a, b`: the names that are neither its submodules nor bound in its __init__."""
    init = LIBS[module.split(".")[0]].joinpath(*module.split(".")[1:], "__init__.py")
    if not init.is_file():
        return []
    bound = {a.asname or a.name for n in ast.walk(ast.parse(init.read_text()))
             if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    bound |= {n.name for n in ast.parse(init.read_text()).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    return [f"{module}.{a.name}" for a in node.names
            if a.name not in bound and a.name != "__version__" and not module_exists(f"{module}.{a.name}")]


@pytest.mark.parametrize("lib,path", list(module_files()), ids=lambda v: v if isinstance(v, str) else
                         v.relative_to(ROOT).as_posix())
def test_every_import_names_an_existing_module(lib, path):
    """Lazy imports run only when their function does: a module moved to another layer must not leave one
    pointing at its old place."""
    missing = [t for t in imported_modules(lib, path) if not module_exists(t)]
    package = module_name(lib, path)[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join(base + node.module.split("."))
            if module.split(".")[0] in LIBS and module_exists(module):
                missing += missing_names(node, module)
    assert not missing, f"{path.name} imports modules that do not exist: {missing}"


OTHER_FILES = sorted(p for pattern in ("*/*.py", "*/*Slicer/*.py", "Testing/*.py", "benchmarks/**/*.py", "scripts/*.py")
                     for p in ROOT.glob(pattern) if ".venv" not in p.parts and not any(p.is_relative_to(f) for f in
                                                                                       LIBS.values()))


@pytest.mark.parametrize("path", OTHER_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_module_files_tests_and_scripts_import_existing_modules(path):
    """The same for the Slicer side, the tests and the benchmark scripts (absolute imports, lazy ones too)."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                 [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        missing += [n for n in names if n.split(".")[0] in LIBS and not module_exists(n)]
        if isinstance(node, ast.ImportFrom) and names and names[0].split(".")[0] in LIBS and module_exists(names[0]):
            missing += missing_names(node, names[0])
    assert not missing, f"{path.name} imports modules that do not exist: {missing}"
