"""Stand-ins for the Qt-side helper modules slicer-core lacks (ScriptedLoadableModule's base classes, i18n,
the parameter-node wrapper, qt itself), so the module files' Logic classes can run on slicer-core's real MRML.
Only names used at import time or by the Logic are provided; nothing here draws or binds a GUI."""
import sys
import types
import unittest

STUBBED = ("qt", "slicer.ScriptedLoadableModule", "slicer.i18n", "slicer.parameterNodeWrapper")
MODULES = ("InteractiveRefine", "InteractiveRefineSlicer", "InteractiveRefineSlicer.gui",
           "InteractiveRefineSlicer.logic", "InteractiveRefineSlicer.parameters", "FewShotSeg", "FewShotSegSlicer",
           "FewShotSegSlicer.logic", "FewShotSegSlicer.parameters")


def install(monkeypatch) -> None:
    """Put the stand-ins in sys.modules (undone by monkeypatch) and forget the module files imported with them."""
    class _Base:
        def __init__(self, parent=None):
            self.parent = parent

        def getParameterNode(self):
            return None  # the wrapper below keeps the fields itself

    slm = types.ModuleType("slicer.ScriptedLoadableModule")
    slm.ScriptedLoadableModule = type("ScriptedLoadableModule", (_Base,), {})
    slm.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogic", (_Base,), {})
    slm.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (_Base,), {})
    slm.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,), {})
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.Choice = pnw.WithinRange = pnw.Minimum = lambda *a, **k: None
    pnw.parameterNodeWrapper = _wrapper
    for name, module in (("qt", types.ModuleType("qt")), ("slicer.ScriptedLoadableModule", slm),
                         ("slicer.i18n", i18n), ("slicer.parameterNodeWrapper", pnw)):
        monkeypatch.setitem(sys.modules, name, module)
    for name in MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)


def _wrapper(cls):
    """@parameterNodeWrapper stand-in: an object with the class's annotated fields and their defaults."""
    import copy

    fields = dict(getattr(cls, "__annotations__", {}))
    defaults = {name: getattr(cls, name) for name in fields if hasattr(cls, name)}

    def __init__(self, parameterNode=None):
        self.parameterNode = parameterNode
        for name in fields:
            setattr(self, name, copy.copy(defaults.get(name)))

    return type(cls.__name__, (), {"__init__": __init__, "__doc__": cls.__doc__,
                                   "StartModify": lambda self: 0, "EndModify": lambda self, was: None})
