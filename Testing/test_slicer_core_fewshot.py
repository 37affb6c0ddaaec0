"""FewShotSeg's Logic (FewShotSegSlicer/logic.py) on Slicer's real MRML (slicer-core; Qt-side helpers stood in for,
Testing/slicer_stubs.py): the module self-tests' checks outside Slicer. Requests built from real nodes (support
slice from the segments, slice and ROI ranges, errors named), results written named and coloured after the
support, and the whole workflow through the compute protocol on the embedded pair as Slicer loads it."""
import numpy as np
import pytest

pytest.importorskip("slicer.util", reason="slicer-core is not installed")
slicer = pytest.importorskip("slicer")

from test_slicer_core_bridge import SAMPLE, scene  # noqa: E402,F401  (the MRML scene fixture)

from InteractiveRefineLib.core.errors import PromptError  # noqa: E402
from InteractiveRefineLib.core.metrics import dice  # noqa: E402
from InteractiveRefineLib.panel import slicer_bridge as bridge  # noqa: E402


@pytest.fixture
def fewshot(monkeypatch, scene):  # noqa: F811
    """The FewShotSeg module file, importable outside Slicer; the shared compute client runs its request loop
    in a thread of this process (the default model, loaded once)."""
    import slicer_stubs

    from InteractiveRefineLib.compute.client import ComputeClient
    from InteractiveRefineLib.compute.service import ComputeService

    slicer_stubs.install(monkeypatch)
    import FewShotSeg
    import InteractiveRefine

    client = ComputeClient(service_factory=ComputeService)
    monkeypatch.setattr(InteractiveRefine.InteractiveRefineLogic, "computeClient", staticmethod(lambda: client))
    yield FewShotSeg
    client.stop()


def test_requests_from_nodes_and_named_results(scene, fewshot):  # noqa: F811
    ijk_to_ras = np.diag([0.8, 0.8, 2.5, 1.0])
    array = np.zeros((6, 10, 10), np.int16)
    array[1:4, 3:7, 2:6] = 100
    array[2, 3:7, 2:7] = 100  # slice 2 has the largest cross-section
    volume = slicer.util.addVolumeFromArray(array, ijk_to_ras, "support")
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    mask = (array > 0).astype(np.uint8)
    organ = bridge.labelmap_to_segment(segmentation, None, mask, volume)
    segmentation.GetSegmentation().GetSegment(organ).SetName("organ")
    segmentation.GetSegmentation().GetSegment(organ).SetColor(0.1, 0.2, 0.3)
    empty = bridge.ensure_segment(segmentation, None, "empty")
    logic = fewshot.FewShotSegLogic()
    request = logic.buildRequest(volume, segmentation, [organ], volume, viewName=None)
    assert (request.axis, request.slice_index) == (0, 2) and request.names == {organ: "organ"}
    np.testing.assert_array_equal(request.support_masks[organ], mask)
    request = logic.buildRequest(volume, segmentation, [organ], volume, supportSlice=3, rangeMode="slices",
                                 firstSlice=1, lastSlice=4, adapt=True, adaptSeconds=5, device="cpu")
    assert (request.slice_index, request.query_range, request.adapt) == (3, ("slices", 1, 4), True)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetSize([3.2, 3.2, 5.0])  # +-2 voxels in I and J, +-1 slice in K around voxel (i, j, k) = (4, 4, 2)
    roi.SetCenter([3.2, 3.2, 5.0])
    request = logic.buildRequest(volume, segmentation, [organ], volume, rangeMode="roi", queryRoi=roi, viewName=None)
    assert request.query_range == ("box", (1, 2, 2), (4, 7, 7))
    # "Propagate through this scan": the support volume is the query (another query volume is ignored), and the
    # greyed-out adaptation is off
    other = slicer.util.addVolumeFromArray(array * 2, ijk_to_ras, "other")
    request = logic.buildRequest(volume, segmentation, [organ], other, adapt=True, viewName=None, propagate=True,
                                 follow=True)
    assert request.propagate and not request.adapt and not request.follow
    assert request.query_image is request.support_image
    assert logic.buildRequest(volume, segmentation, [organ], other, viewName=None, follow=True).follow
    assert request.slice_index == 2 and request.query_range == ("auto",)
    for kwargs, text in (({"segmentIds": []}, "no support segment"), ({"segmentIds": [empty]}, "empty"),
                         ({"segmentIds": [organ], "supportSlice": 5}, "empty on support slice 5"),
                         ({"segmentIds": [organ], "rangeMode": "slices", "firstSlice": 4, "lastSlice": 2},
                          "after the last slice"),
                         ({"segmentIds": [organ], "rangeMode": "roi", "queryRoi": None}, "ROI")):
        with pytest.raises(PromptError, match=text):
            logic.buildRequest(volume, segmentation, queryVolume=volume, viewName=None, **kwargs)

    from FewShotSegLib.panel.controller import FewShotResult
    result = FewShotResult({organ: np.roll(mask, 1, axis=2).astype(bool)}, {})
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    written = logic.writeResult(result, output, volume, segmentation)
    segment = output.GetSegmentation().GetSegment(written[0])
    assert segment.GetName() == "organ" and np.allclose(segment.GetColor(), (0.1, 0.2, 0.3))
    np.testing.assert_array_equal(bridge.segment_to_labelmap(output, written[0], volume), np.roll(mask, 1, axis=2))
    assert logic.writeResult(result, output, volume, segmentation) == written  # re-running replaces it
    in_support = logic.writeResult(result, segmentation, volume, segmentation)
    assert segmentation.GetSegmentation().GetSegment(in_support[0]).GetName() == "organ 2"


def test_the_workflow_on_the_pair_as_slicer_loads_it(scene, fewshot):  # noqa: F811
    volumes = slicer.modules.volumes.logic()
    root = SAMPLE / "chaos"
    support = volumes.AddArchetypeVolume(str(root / "imagesTr" / "chaos_36.nii.gz"), "chaos_36")
    support_label = volumes.AddArchetypeVolume(str(root / "labelsTr" / "chaos_36.nii.gz"), "chaos_36 label", 1)
    query = volumes.AddArchetypeVolume(str(root / "imagesTr" / "chaos_8.nii.gz"), "chaos_8")
    query_label = volumes.AddArchetypeVolume(str(root / "labelsTr" / "chaos_8.nii.gz"), "chaos_8 label", 1)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chaos_36 organs")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(support)
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(support_label, segmentation)
    labels = slicer.util.arrayFromVolume(support_label)
    kidney = next(i for i in segmentation.GetSegmentation().GetSegmentIDs()
                  if np.array_equal(bridge.segment_to_labelmap(segmentation, i, support) > 0, labels == 2))
    reference = slicer.util.arrayFromVolume(query_label) == 2
    present = np.flatnonzero(reference.any(axis=(1, 2)))
    logic = fewshot.FewShotSegLogic()
    request = logic.buildRequest(support, segmentation, [kidney], query, rangeMode="slices",
                                 firstSlice=int(present[0]), lastSlice=int(present[-1]), viewName=None)
    largest = int(np.argmax((labels == 2).sum(axis=(1, 2))))
    assert (request.axis, request.slice_index) == (0, largest)
    assert largest == labels.shape[0] - 1 - 11  # Slicer's reader reverses K here: SimpleITK's slice 11
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "few-shot result")
    try:
        written, result = logic.segment(request, output, query, segmentation, timeout=600)
    finally:
        logic.shutdown()
    [segment_id] = written
    score = dice(bridge.segment_to_labelmap(output, segment_id, query) > 0, reference)
    assert score > 0.75, score
    assert output.GetSegmentation().GetSegment(segment_id).GetName() == \
        segmentation.GetSegmentation().GetSegment(kidney).GetName()
    assert logic.deviceText.startswith("cpu")
