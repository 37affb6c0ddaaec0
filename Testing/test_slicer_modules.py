"""Static checks of the Slicer side that need no Slicer: every .ui is a well-formed Designer form, every
`self.ui.<name>` the module code uses exists in its .ui, every parameter-node binding names a field,
every MRML widget gets the scene, modules compile, help cites the three methods, self-tests are
registered. (The Slicer code itself runs in Slicer's own self-tests, registered with ctest.)"""
import ast
import py_compile
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["InteractiveRefine", "FewShotSeg"]


def ui_path(module):
    return ROOT / module / "Resources" / "UI" / f"{module}.ui"


def ui_tree(module):
    return ET.parse(ui_path(module)).getroot()


def module_source(module):
    """The module file and its Slicer-side package (<Module>Slicer/: parameter node, Logic), if any."""
    files = [ROOT / module / f"{module}.py"] + sorted((ROOT / module / f"{module}Slicer").glob("*.py"))
    return "\n".join(p.read_text() for p in files)


def widget_names(root):
    return {w.get("name"): w.get("class") for w in root.iter("widget")}


def parameter_fields(source):
    """Annotated fields of the module's @parameterNodeWrapper class(es)."""
    fields = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            fields |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    return fields


@pytest.mark.parametrize("module", MODULES)
def test_ui_is_a_designer_form_for_the_module(module):
    root = ui_tree(module)
    assert root.tag == "ui" and root.get("version") == "4.0"
    assert root.findtext("class") == module
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_widget_used_in_the_code_exists(module):
    names = widget_names(ui_tree(module))
    used = set(re.findall(r"self\.ui\.(\w+)", module_source(module)))
    assert used, "the module uses no .ui widget"
    assert not used - set(names), f"used in {module}.py but missing from the .ui: {sorted(used - set(names))}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_bindings_name_parameter_node_fields(module):
    root = ui_tree(module)
    fields = parameter_fields(module_source(module))
    assert fields, "no @parameterNodeWrapper class"
    bound = {}
    for w in root.iter("widget"):
        for p in w.findall("property"):
            if p.get("name") == "SlicerParameterName":
                bound[w.get("name")] = p.findtext("string")
    assert bound, "no widget is bound to the parameter node"
    unknown = {w: f for w, f in bound.items() if f not in fields}
    assert not unknown, f"bound to fields that do not exist: {unknown}"
    assert len(set(bound.values())) == len(bound), "two widgets bound to the same field"


@pytest.mark.parametrize("module", MODULES)
def test_custom_widgets_declared_and_mrml_widgets_get_the_scene(module):
    root = ui_tree(module)
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if c.startswith(("qMRML", "ctk", "qSlicer"))}
    assert not custom - declared, f"undeclared custom widgets: {sorted(custom - declared)}"
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    # Widgets the code gives the scene itself (the Segment Editor needs its editor node first).
    receivers |= set(re.findall(r"self\.ui\.(\w+)\.setMRMLScene\(", module_source(module)))
    mrml = {w.get("name") for w in root.iter("widget")
            if w.get("class", "").startswith(("qMRML", "qSlicer")) and w.get("class") != "qMRMLWidget"}
    assert not mrml - receivers, f"MRML widgets that never get the scene: {sorted(mrml - receivers)}"


@pytest.mark.parametrize("module", MODULES)
def test_module_compiles_and_cites_the_methods(module, tmp_path):
    py_compile.compile(str(ROOT / module / f"{module}.py"), cfile=str(tmp_path / "m.pyc"), doraise=True)
    for extra in sorted((ROOT / module / f"{module}Slicer").glob("*.py")):
        py_compile.compile(str(extra), cfile=str(tmp_path / (extra.stem + "_s.pyc")), doraise=True)
    lib_folder = ROOT / module / f"{module}Lib"
    for lib in sorted(lib_folder.rglob("*.py")):
        name = "_".join(lib.relative_to(lib_folder).with_suffix("").parts)
        py_compile.compile(str(lib), cfile=str(tmp_path / (name + ".pyc")), doraise=True)
    for citation in ("BIFSeg", "RP-Net", "ELSNet"):  # the shared CITATIONS of InteractiveRefine.py
        assert citation in module_source("InteractiveRefine")
    assert re.search(r'acknowledgementText = _\(""".*?"""\) \+ CITATIONS', module_source(module), re.S)
    assert "helpText" in module_source(module)


@pytest.mark.parametrize("module", MODULES)
def test_self_test_exists_and_is_registered_with_ctest(module):
    tree = ast.parse(module_source(module))
    tests = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Test"]
    assert tests and any(getattr(b, "id", None) == "ScriptedLoadableModuleTest" for b in tests[0].bases)
    methods = {f.name for f in tests[0].body if isinstance(f, ast.FunctionDef)}
    run_test = next(f for f in tests[0].body if isinstance(f, ast.FunctionDef) and f.name == "runTest")
    called = {c.func.attr for c in ast.walk(run_test) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
    workflow = {m for m in methods if m.startswith("test_")}
    assert workflow and workflow <= called, f"runTest does not run {sorted(workflow - called)}"
    cmake = (ROOT / module / "CMakeLists.txt").read_text()
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake
    assert "Resources/UI/${MODULE_NAME}.ui" in cmake or f"Resources/UI/{module}.ui" in cmake


#: Core modules a module file may import at startup: they need nothing but the standard library.
LIGHT_CORE = {"InteractiveRefineLib.panel.settings", "InteractiveRefineLib.panel.segment_names",
              "InteractiveRefineLib.core.errors"}


@pytest.mark.parametrize("module", MODULES)
def test_no_heavy_imports_at_module_import(module):
    """Slicer imports the module file at startup: torch and the core must be imported lazily (the
    dependencies may not be installed yet, and installing happens on user action only)."""
    tree = ast.parse(module_source(module))
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    modules = {a.name for n in top if isinstance(n, ast.Import) for a in n.names} | {
        n.module for n in top if isinstance(n, ast.ImportFrom) and n.module not in LIGHT_CORE}
    roots = {m.split(".")[0] for m in modules}
    assert not roots & {"torch", "numpy", "scipy", "SimpleITK", "skimage", "maxflow", "safetensors",
                        "InteractiveRefineLib", "FewShotSegLib"}


@pytest.mark.parametrize("name", sorted(LIGHT_CORE))
def test_light_core_modules_import_only_the_standard_library(name):
    import subprocess
    import sys
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'InteractiveRefine')!r}); import {name}; "
            "heavy = {'torch', 'numpy', 'scipy', 'SimpleITK'} & set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- what Slicer's test harnesses and users need (issue 13, item 5) -------------------------------------------
def _method(module, cls, name):
    tree = ast.parse(module_source(module))
    klass = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
    return next(f for f in klass.body if isinstance(f, ast.FunctionDef) and f.name == name), klass


@pytest.mark.parametrize("module", MODULES)
def test_self_tests_never_skip_or_add_cleanups(module):
    """Reload and Test calls runTest outside unittest: skipTest would be an error there and addCleanup
    callbacks never run. Neither may be reached from runTest."""
    _, klass = _method(module, f"{module}Test", "runTest")
    calls = {c.func.attr for c in ast.walk(klass) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
    assert not calls & {"skipTest", "addCleanup"}, calls & {"skipTest", "addCleanup"}


@pytest.mark.parametrize("module", MODULES)
def test_one_error_dialog_per_action(module):
    """slicer.util.tryWithErrorDisplay re-raises: the code after the block is skipped and an enclosing handler
    shows a second dialog. The panels use their own guard, which shows one and updates the buttons."""
    source = module_source(module)
    assert "with slicer.util.tryWithErrorDisplay(" not in source
    assert "def guarded(self, message" in source and "with self.guarded(" in source


def test_testing_mode_never_installs_or_asks():
    fn, _ = _method("InteractiveRefine", "InteractiveRefineLogic", "ensureDependencies")
    text = ast.unparse(fn)
    assert "testingEnabled()" in text and text.index("testingEnabled()") < text.index("installDependencies")
    fewshot = module_source("FewShotSeg")
    assert "slicer.app.testingEnabled() or not self.logic.installDependencies" in fewshot


def test_a_fresh_roi_per_placement():
    fn, _ = _method("InteractiveRefine", "InteractiveRefineLogic", "startBoxPlacement")
    text = ast.unparse(fn)
    assert "AddNewNodeByClass('vtkMRMLMarkupsROINode'" in text and "RemoveAllControlPoints" not in text


def test_one_undo_history_and_scribbles_outside_the_users_segmentation():
    source = module_source("InteractiveRefine")
    assert "setMaximumNumberOfUndoStates(0)" in source and "setUndoEnabled(False)" in source
    for name in ("helperSegmentId", "syncScribbles", "applyUpdate"):
        fn, _ = _method("InteractiveRefine", "InteractiveRefineLogic", name)
        assert "scribbleNode" in ast.unparse(fn), name
    exit_fn, _ = _method("InteractiveRefine", "InteractiveRefineWidget", "exit")
    assert "observeScribbles(None)" in ast.unparse(exit_fn)  # strokes elsewhere are not scribbles


@pytest.mark.parametrize("module", MODULES)
def test_panels_use_the_compute_process(module):
    source = module_source(module)
    assert "computeClient()" in source and "Worker(" not in source


@pytest.mark.parametrize("module", MODULES)
def test_closing_the_scene_ends_the_compute_process(module):
    """Each panel frees the shared compute process (its models, GPU memory) when the scene closes: the other
    panel's widget may never have been created, so neither may rely on it."""
    fn, _ = _method(module, f"{module}Widget", "onSceneStartClose")
    assert "stopCompute=True" in ast.unparse(fn)
