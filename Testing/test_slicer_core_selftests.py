"""Both modules' own self-tests (their runTest, as Reload and Test and ctest call it) on Slicer's real MRML
(slicer-core), outside Slicer: what slicer-core lacks is stood in for (Testing/slicer_stubs.py; SampleData's
download by reading the embedded files through the volumes logic and the segmentation storage node;
slicer.util.loadVolume likewise), and the compute client runs its request loop in a thread of this process.
So the self-test code itself runs in CI, including runTest's order and cleanup (no skipTest, no addCleanup)."""
import types

import pytest

pytest.importorskip("slicer.util", reason="slicer-core is not installed")
slicer = pytest.importorskip("slicer")

from test_slicer_core_bridge import SAMPLE, scene  # noqa: E402,F401  (the MRML scene fixture)


@pytest.fixture
def modules(monkeypatch, scene, segmenter):  # noqa: F811
    import sys

    import slicer_stubs

    from InteractiveRefineLib.compute.client import ComputeClient
    from InteractiveRefineLib.compute.service import ComputeService
    from InteractiveRefineLib.engine.session import InteractiveSession

    slicer_stubs.install(monkeypatch)
    volumes = slicer.modules.volumes.logic()

    def load_volume(path, properties=None, **kw):
        label = bool((properties or {}).get("labelmap"))
        return volumes.AddArchetypeVolume(str(path), str(path).split("/")[-1].split(".")[0], 1 if label else 0)

    def load_samples(name):
        assert name == "AdaptiveSegMR1"
        volume = load_volume(SAMPLE / "chaos" / "imagesTr" / "chaos_8.nii.gz")
        seg = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chaos_8 organs")
        storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
        storage.SetFileName(str(SAMPLE / "slicer" / "chaos_8.seg.nrrd"))
        assert storage.ReadData(seg)
        return [volume, seg]

    sample_data = types.ModuleType("SampleData")
    sample_data.SampleDataLogic = type("SampleDataLogic", (), {
        "registerCustomSampleDataCategory": staticmethod(lambda *a, **k: None),
        "registerCustomSampleDataSource": staticmethod(lambda *a, **k: None),
        "downloadSamples": lambda self, name: load_samples(name)})
    monkeypatch.setitem(sys.modules, "SampleData", sample_data)
    monkeypatch.setattr(slicer.util, "loadVolume", load_volume)
    monkeypatch.setattr(slicer.util, "loadLabelVolume", lambda path, **kw: load_volume(path, {"labelmap": True}))
    test_base = sys.modules["slicer.ScriptedLoadableModule"].ScriptedLoadableModuleTest
    monkeypatch.setattr(test_base, "delayDisplay", lambda self, message, *a, **k: None, raising=False)

    import FewShotSeg
    import InteractiveRefine

    client = ComputeClient(service_factory=lambda: ComputeService(
        session_factory=lambda *a, **k: InteractiveSession(*a, segmenter=segmenter, **k)))
    monkeypatch.setattr(InteractiveRefine.InteractiveRefineLogic, "computeClient", staticmethod(lambda: client))
    yield InteractiveRefine, FewShotSeg
    client.stop()


def test_interactive_refine_self_test_runs(modules):
    InteractiveRefine, _ = modules
    # with a package missing the self-test's workflows return early (said only in the display): none may be
    assert InteractiveRefine.InteractiveRefineLogic.missingDependencies() == []
    test = InteractiveRefine.InteractiveRefineTest()
    test.runTest()  # raises on any failed assertion


def test_fewshot_self_test_runs(modules):
    _, FewShotSeg = modules
    assert FewShotSeg.FewShotSegLogic.missingDependencies() == []  # else its workflow tests return early
    test = FewShotSeg.FewShotSegTest()
    test.runTest()
