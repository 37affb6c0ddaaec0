"""InteractiveRefine's Logic (InteractiveRefineSlicer/logic.py) on Slicer's real MRML (slicer-core), with the
real models through the compute protocol: the self-test's workflow outside Slicer. Only what slicer-core lacks
is stood in for: the Qt-side helper modules (ScriptedLoadableModule's Logic base, i18n's tr, the
parameter-node wrapper) and the parameter node itself (a namespace with the same fields).

Checked: ROI -> box, Segment written into the user's segment, scribbles in their own never-saved node (never
in the user's segmentation), a hand edit outside the box kept and inside it replaced, undo through the
compute process, Accept removes the scribbles, a fresh ROI per placement."""
import types
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer.util", reason="slicer-core is not installed")
slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from test_slicer_core_bridge import SAMPLE, scene  # noqa: E402,F401  (the MRML scene fixture)

from InteractiveRefineLib.core.metrics import dice  # noqa: E402
from InteractiveRefineLib.core.prompts import box_from_mask, main_object  # noqa: E402
from InteractiveRefineLib.panel import slicer_bridge as bridge  # noqa: E402
from InteractiveRefineLib.panel.ras_geometry import box_to_roi  # noqa: E402
from InteractiveRefineLib.panel.settings import DEFAULTS, PANEL_FIELDS  # noqa: E402


@pytest.fixture
def logic_class(monkeypatch, scene, segmenter):  # noqa: F811
    """InteractiveRefineLogic imported with the Qt-side helpers stood in for; its compute client runs the
    request loop in a thread of this process with the already loaded models."""
    import slicer_stubs

    from InteractiveRefineLib.compute.client import ComputeClient
    from InteractiveRefineLib.compute.service import ComputeService
    from InteractiveRefineLib.engine.session import InteractiveSession

    slicer_stubs.install(monkeypatch)
    from InteractiveRefineSlicer.logic import InteractiveRefineLogic

    client = ComputeClient(service_factory=lambda: ComputeService(
        session_factory=lambda *a, **k: InteractiveSession(*a, segmenter=segmenter, **k)))
    monkeypatch.setattr(InteractiveRefineLogic, "computeClient", staticmethod(lambda: client))
    yield InteractiveRefineLogic
    client.stop()


def parameters(volume, segmentation, **kw):
    """The parameter node's fields (InteractiveRefineSlicer/parameters.py) with their defaults."""
    fields = dict(inputVolume=volume, segmentation=segmentation, segmentName="kidney", roi=None, device="cpu",
                  autoRefine=False, recordLog=False, logFolder=Path("."), participant="", caseId="",
                  referenceSegmentation=None, referenceSegmentName="")
    fields.update({field: DEFAULTS[key] for field, key in PANEL_FIELDS.items()})
    fields.update(kw)
    return types.SimpleNamespace(**fields)


def load_sample(scene):  # noqa: F811
    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(SAMPLE / "chaos" / "imagesTr" / "chaos_8.nii.gz"),
                                                               "chaos_8")
    reference = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "chaos_8 organs")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(SAMPLE / "slicer" / "chaos_8.seg.nrrd"))
    assert storage.ReadData(reference)
    return volume, reference


def boxed_sample(scene, structure, as_reference=False, **fields):  # noqa: F811
    """The sample in `scene`, a new segmentation and the parameters whose ROI is a tight 2D box on the
    largest slice of `structure` (a segment of the sample's reference; with as_reference, also the panel's
    reference segment). Returns (volume, ref, k, box, segmentation, p)."""
    volume, reference = load_sample(scene)
    ref = bridge.segment_to_labelmap(reference, bridge.segment_id_by_name(reference, structure), volume) > 0
    k = int(np.argmax(ref.sum(axis=(1, 2))))
    box = box_from_mask(main_object(ref), 0, k)
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my organs")
    if as_reference:
        fields.update(referenceSegmentation=reference, referenceSegmentName=structure)
    p = parameters(volume, segmentation, **fields)
    centre, size = box_to_roi(box, bridge.ijk_to_ras_array(volume))
    p.roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    p.roi.SetCenter(*[float(v) for v in centre])
    p.roi.SetSize(float(size[0]), float(size[1]), 0.0)
    return volume, ref, k, box, segmentation, p


def finish_and_write(logic, p, segmentId, timeout=60):
    """Wait for the running step, write its update as the panel does; (status, the segment read back)."""
    status = logic.wait(timeout)
    assert status.job.state == "done", status.job.error
    logic.applyUpdate(p, status.update)
    return status, bridge.segment_to_labelmap(p.segmentation, segmentId, p.inputVolume) > 0


def test_the_panel_workflow_on_real_mrml(scene, logic_class):  # noqa: F811
    from InteractiveRefineLib.evaluation.robot import next_scribble

    volume, ref, k, box, segmentation, p = boxed_sample(scene, "right kidney", as_reference=True)
    logic = logic_class()
    assert logic.boxFromRoi(p.roi, volume) == box and "2D box on slice" in logic.describeBox(p.roi, volume)

    logic.startSegment(p)
    status = logic.wait(120)
    assert status.job.state == "done", status.job.error
    first = status.update
    segmentId = logic.applyUpdate(p, first)
    np.testing.assert_array_equal(bridge.segment_to_labelmap(segmentation, segmentId, volume) > 0, first.mask)
    assert first.dice > 0.7 and logic.hasResult and not logic.hasScribbles

    # hand edits (Segment Editor module): paint outside the box, erase the object inside it
    edited = first.mask.copy()
    edited[k, 0:4, 0:4] = True
    edited[box.mask(ref.shape)] = False
    bridge.labelmap_to_segment(segmentation, segmentId, edited, volume)

    stroke = next_scribble(first.mask, ref, box, logic._controller.image.spacing_kji, np.random.default_rng(0))
    helper = np.zeros(ref.shape, np.uint8)
    helper[tuple(np.asarray(stroke.voxels).T)] = 1
    helperId = logic.helperSegmentId(p, stroke.label)
    scribbles = logic.scribbleNode(p, create=False)
    assert scribbles is not None and scribbles is not segmentation and not scribbles.GetSaveWithScene()
    bridge.labelmap_to_segment(scribbles, helperId, helper, volume)
    assert list(segmentation.GetSegmentation().GetSegmentIDs()) == [segmentId]  # nothing of ours in it
    changed, _message = logic.syncScribbles(p)
    assert changed and logic.hasScribbles and logic.canUndo()
    inside = box.mask(ref.shape)

    # Reset gives the same result as the segment last got from the session (nothing to write by the session's
    # account), but the user erased it by hand: read back, it is written again; the paint outside stays.
    logic.history(p, "reset")
    _status, written = finish_and_write(logic, p, segmentId)
    np.testing.assert_array_equal(written[inside], first.mask[inside])
    np.testing.assert_array_equal(written[~inside], edited[~inside])
    assert not any((bridge.segment_to_labelmap(scribbles, i, volume) > 0).any() for i in logic.helperSegmentIds(p))

    bridge.labelmap_to_segment(scribbles, helperId, helper, volume)
    assert logic.syncScribbles(p)[0]
    logic.startRefine(p, "supervised")
    status, written = finish_and_write(logic, p, segmentId, 300)
    np.testing.assert_array_equal(written[~inside], edited[~inside])  # the hand edit outside the box stays
    np.testing.assert_array_equal(written[inside], status.update.mask[inside])  # inside: the session's result
    assert dice(written[k], ref[k]) >= dice(first.mask[k], ref[k]) - 0.02

    logic.history(p, "undo")
    _status, written = finish_and_write(logic, p, segmentId)
    np.testing.assert_array_equal(written[inside], first.mask[inside])
    np.testing.assert_array_equal(written[~inside], edited[~inside])
    fg_bg = [bridge.segment_to_labelmap(scribbles, i, volume) > 0 for i in logic.helperSegmentIds(p)]
    assert sum(int(m.sum()) for m in fg_bg) == int(helper.sum())  # undo to the scribble state keeps them

    logic.accept(p)
    assert logic.scribbleNode(p, create=False) is None and logic.helperSegmentIds(p) == []
    assert not logic.hasSession and segmentation.GetSegmentation().GetSegment(segmentId) is not None
    logic.shutdown()


def test_propagate_to_3d_on_real_mrml(scene, logic_class, monkeypatch):  # noqa: F811
    """The 2D box result -> 'Propagate to 3D' (FewShotSeg's same-scan propagation in the compute process) ->
    the 3D result in the same segment as one step; Undo goes back to the 2D result."""
    volume, ref, k, box, segmentation, p = boxed_sample(scene, "spleen", segmentName="spleen")
    logic = logic_class()
    assert not logic.canPropagate3D()
    logic.startSegment(p)
    status = logic.wait(120)
    segmentId = logic.applyUpdate(p, status.update)
    flat = bridge.segment_to_labelmap(segmentation, segmentId, volume) > 0
    assert flat[k].any() and not np.delete(flat, k, axis=0).any() and logic.canPropagate3D()
    assert logic.propagate3DMissing() is None

    # InteractiveRefine does not depend on FewShotSeg: without it the button is greyed out, with the reason
    import importlib.util
    with monkeypatch.context() as m:
        find_spec = importlib.util.find_spec
        m.setattr(importlib.util, "find_spec",
                  lambda name, *a: None if name == "FewShotSegLib" else find_spec(name, *a))
        assert not logic.canPropagate3D() and "FewShotSeg" in logic.propagate3DMissing()
        with pytest.raises(ValueError, match="FewShotSeg"):
            logic.startPropagate3D(p)
    assert logic.canPropagate3D()

    logic.startPropagate3D(p)
    assert logic.busy and logic.cancellable
    status, written = finish_and_write(logic, p, segmentId, 300)
    assert status.job.name == "propagate to 3D"
    assert (written.any(axis=(1, 2))).sum() > 10 and dice(written, ref) > 0.8, dice(written, ref)
    assert list(segmentation.GetSegmentation().GetSegmentIDs()) == [segmentId]  # the same segment
    assert not logic.canPropagate3D() and logic.canUndo()  # now a 3D result; one undo back to 2D
    logic.history(p, "undo")
    _status, written = finish_and_write(logic, p, segmentId)
    np.testing.assert_array_equal(written, flat)
    assert not logic.canUndo() and logic.canPropagate3D()
    logic.shutdown()


def test_a_fresh_roi_for_every_placement(scene, logic_class):  # noqa: F811
    logic = logic_class()
    first = logic.startBoxPlacement(None)
    assert first.GetAttribute("AdaptiveSeg.Box") == "1"
    app = slicer.app.applicationLogic()
    assert app.GetSelectionNode().GetActivePlaceNodeID() == first.GetID()
    assert app.GetInteractionNode().GetCurrentInteractionMode() == app.GetInteractionNode().Place
    second = logic.startBoxPlacement(first)
    assert second is not first and first.GetScene() is None  # the module's previous box is removed
    mine = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "a user's ROI")
    third = logic.startBoxPlacement(mine)
    assert third is not mine and mine.GetScene() is scene  # a user's own ROI is never removed
    # the box made around a segment chosen for refinement is the module's too: the next placement replaces it
    volume, reference = load_sample(scene)
    p = parameters(volume, reference)
    fitted = logic.selectForRefinement(p, volume, reference, bridge.segment_id_by_name(reference, "right kidney"))
    assert p.roi is fitted and fitted.GetScene() is scene
    assert logic.startBoxPlacement(fitted) is not fitted and fitted.GetScene() is None


@pytest.mark.parametrize("module_name, widget_class", [("InteractiveRefine", "InteractiveRefineWidget"),
                                                       ("FewShotSeg", "FewShotSegWidget")])
def test_an_error_shows_one_dialog_and_updates_the_buttons(monkeypatch, scene, module_name,  # noqa: F811
                                                           widget_class):
    """Nested GUI actions (a stroke that triggers a refinement) that fail show one dialog, not two, and the
    buttons are updated after it; the error does not escape into Qt's event loop."""
    import importlib

    import slicer_stubs

    slicer_stubs.install(monkeypatch)
    module = importlib.import_module(module_name)
    widget = object.__new__(getattr(module, widget_class))
    widget.ui = types.SimpleNamespace(statusLabel=types.SimpleNamespace(text=""))
    calls = {"dialogs": [], "buttons": 0}
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, *a, **k: calls["dialogs"].append(text))
    update = "updateButtons" if module_name == "InteractiveRefine" else "_updateButtons"
    monkeypatch.setattr(widget, update, lambda: calls.__setitem__("buttons", calls["buttons"] + 1), raising=False)
    if module_name == "InteractiveRefine":
        monkeypatch.setattr(widget, "setStatus", lambda text: setattr(widget.ui.statusLabel, "text", text))
    after = []
    with widget.guarded("Could not read the scribbles."):
        with widget.guarded("Refinement failed."):
            raise ValueError("the box is outside the volume")
        after.append("the outer action goes on")
    assert len(calls["dialogs"]) == 1 and "the box is outside the volume" in calls["dialogs"][0]
    assert calls["dialogs"][0].startswith("Refinement failed.") and after == ["the outer action goes on"]
    assert calls["buttons"] == 2 and "outside the volume" in widget.ui.statusLabel.text
