"""Both bridges (InteractiveRefineLib/panel/slicer_bridge.py, FewShotSegLib/panel/slicer_bridge.py) against
Slicer's real MRML classes from the slicer-core wheel (requirements-dev.txt): a vtkMRMLScene set as
slicer.mrmlScene, with the segmentation converter rules registered and the Volumes, Segmentations, Colors and
Markups logic created on it, as an application does at start-up. Qt widgets are not in slicer-core: slice
views shown in a layout stay covered by Slicer's self-tests."""
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer.util", reason="slicer-core is not installed") and pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from InteractiveRefineLib.core.geometry import ijk_to_ras_matrix  # noqa: E402
from InteractiveRefineLib.core.image_io import Image, read_image  # noqa: E402
from InteractiveRefineLib.core.prompts import Box  # noqa: E402
from InteractiveRefineLib.panel import slicer_bridge as bridge  # noqa: E402
from InteractiveRefineLib.panel.ras_geometry import box_to_roi, roi_to_box  # noqa: E402
from InteractiveRefineLib.panel.segment_names import BG_COLOR, FG_COLOR, scribble_segment_names  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "InteractiveRefine" / "Resources" / "SampleData"


@pytest.fixture
def scene(monkeypatch):
    """A scene as slicer.mrmlScene with the logic Slicer creates at start-up (trame-slicer does the same)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not factory.GetConverterRules():
        for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                     slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
            factory.RegisterConverterRule(rule())
    s = slicer.vtkMRMLScene()
    app = slicer.vtkSlicerApplicationLogic()
    app.SetMRMLScene(s)
    modules = types.SimpleNamespace()
    for name, cls in (("volumes", "vtkSlicerVolumesLogic"), ("segmentations", "vtkSlicerSegmentationsModuleLogic"),
                      ("markups", "vtkSlicerMarkupsLogic")):
        logic = getattr(slicer, cls)()
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(s)
        setattr(modules, name, types.SimpleNamespace(logic=lambda logic=logic: logic))
    colors = slicer.vtkSlicerColorLogic()
    colors.SetMRMLApplicationLogic(app)
    colors.SetMRMLScene(s)
    app.SetModuleLogic("Colors", colors)  # the volumes logic finds the colour tables through this
    modules.colors = types.SimpleNamespace(logic=lambda: colors)
    monkeypatch.setattr(slicer, "mrmlScene", s, raising=False)
    monkeypatch.setattr(slicer, "modules", modules, raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(applicationLogic=lambda: app,
                                                             layoutManager=lambda: None), raising=False)
    yield s
    s.Clear(1)


def oblique_flipped_direction():
    """An oblique LPS direction with a flipped axis (det -1), columns the I, J, K directions."""
    a = np.deg2rad(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    return rot @ np.diag([1.0, -1.0, 1.0])


def add_volume(array, spacing=(0.8, 1.1, 2.5), origin=(-30.0, 12.0, 7.0), direction=None):
    direction = np.eye(3) if direction is None else direction
    return bridge.image_to_volume(array, spacing, origin, direction, name="vol"), (spacing, origin, direction)


def test_volume_to_array_kji_with_its_geometry(scene):
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1000, size=(5, 7, 9)).astype(np.int16)
    for direction in (np.eye(3), oblique_flipped_direction()):
        node, (spacing, origin, d) = add_volume(array, direction=direction)
        got, sp, org, dirn = bridge.volume_to_image(node)
        np.testing.assert_array_equal(got, array)  # (K, J, I) as numpy holds it, no transposition
        np.testing.assert_allclose(sp, spacing)
        np.testing.assert_allclose(org, origin, atol=1e-9)
        np.testing.assert_allclose(dirn, d, atol=1e-9)
        # the node's IJK-to-RAS matrix is the one the core computes from the LPS geometry
        np.testing.assert_allclose(bridge.ijk_to_ras_array(node), ijk_to_ras_matrix(spacing, origin, d), atol=1e-9)
        # voxel (k, j, i) = (1, 2, 3) sits where the matrix says, in RAS
        ras = bridge.ijk_to_ras_array(node) @ np.array([3, 2, 1, 1.0])
        lps = np.asarray(origin) + np.asarray(d) @ (np.array([3, 2, 1]) * np.asarray(spacing))
        np.testing.assert_allclose(ras[:3], lps * [-1, -1, 1], atol=1e-9)
    with pytest.raises(Exception, match="missing or has no image data"):
        bridge.volume_to_image(None)


def test_volume_matches_the_nifti_reader(scene):
    """A NIfTI file loaded as Slicer loads it (volumes logic) holds, voxel for voxel at the same physical
    points, what image_io (SimpleITK) reads. (Slicer's reader may order an axis the other way round, here K:
    the geometry the bridge reports says so, and the core works on the array with that geometry.)"""
    path = SAMPLE / "chaos" / "imagesTr" / "chaos_8.nii.gz"
    node = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), "chaos_8")
    array, spacing, origin, direction = bridge.volume_to_image(node)
    image = read_image(path)
    np.testing.assert_allclose(ijk_to_ras_matrix(spacing, origin, direction), bridge.ijk_to_ras_array(node), atol=1e-6)
    np.testing.assert_array_equal(array, on_slicer_grid(image, node))


def on_slicer_grid(image, node):
    """SimpleITK's array reordered to the node's voxel order, through the two IJK-to-RAS matrices only."""
    itk_ijk = ijk_to_ras_matrix(image.spacing, image.origin, np.asarray(image.direction).reshape(3, 3))
    to_itk = np.linalg.inv(itk_ijk) @ bridge.ijk_to_ras_array(node)  # the node's voxel indices -> SimpleITK's
    np.testing.assert_allclose(to_itk, np.round(to_itk), atol=1e-4)  # the same grid, axes at most reordered
    shape = tuple(reversed(node.GetImageData().GetDimensions()))
    k, j, i = np.indices(shape).reshape(3, -1)
    ijk = np.round(to_itk @ np.stack([i, j, k, np.ones_like(i)])).astype(int)
    return image.array[ijk[2], ijk[1], ijk[0]].reshape(shape)


def test_segment_round_trip_and_extent_write_leave_the_rest(scene):
    array = np.zeros((6, 20, 24), np.int16)
    volume, _ = add_volume(array, direction=oblique_flipped_direction())
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg.CreateDefaultDisplayNodes()
    a = np.zeros(array.shape, bool)
    a[1:5, 3:15, 4:20] = True
    b = np.zeros(array.shape, bool)
    b[2:4, 10:18, 2:8] = True  # overlaps a
    ida = bridge.labelmap_to_segment(seg, None, a, volume)
    idb = bridge.labelmap_to_segment(seg, None, b, volume)
    np.testing.assert_array_equal(bridge.segment_to_labelmap(seg, ida, volume) > 0, a)
    np.testing.assert_array_equal(bridge.segment_to_labelmap(seg, idb, volume) > 0, b)
    assert bridge.segment_to_labelmap(seg, ida, volume).dtype == np.uint8
    # a shared layer (as after a merge): the write must still touch segment a only
    seg.GetSegmentation().CollapseBinaryLabelmaps(False)
    new = a.copy()
    extent = ((2, 5, 6), (4, 12, 14))
    box = np.zeros(array.shape, bool)
    box[2:4, 5:12, 6:14] = True
    new[box] = False
    new[2:4, 6:9, 7:10] = True  # inside the extent: cleared except a small block
    new[0, 0, 0] = True  # outside the extent: must NOT be written
    bridge.write_mask_extent(seg, ida, new, extent, volume)
    expected = np.where(box, new, a)
    np.testing.assert_array_equal(bridge.segment_to_labelmap(seg, ida, volume) > 0, expected)
    np.testing.assert_array_equal(bridge.segment_to_labelmap(seg, idb, volume) > 0, b)  # untouched
    bridge.write_mask_extent(seg, ida, a, None, volume)  # None: nothing to write
    np.testing.assert_array_equal(bridge.segment_to_labelmap(seg, ida, volume) > 0, expected)
    with pytest.raises(Exception, match="shape"):
        bridge.write_mask_extent(seg, ida, a[:3], extent, volume)


@pytest.mark.parametrize("direction", ["axial", "oblique_flipped"])
def test_roi_node_to_voxel_box(scene, direction):
    d = np.eye(3) if direction == "axial" else oblique_flipped_direction()
    volume, _ = add_volume(np.zeros((20, 60, 50), np.int16), direction=d)
    ijk_to_ras = bridge.ijk_to_ras_array(volume)
    box = Box((4, 10, 12), (9, 40, 30))
    centre, size = box_to_roi(box, ijk_to_ras)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetCenter(*[float(v) for v in centre])
    roi.SetSize(*[float(v) for v in size])
    assert bridge.roi_is_placed(roi)
    object_to_ras, size_mm = bridge.roi_geometry(roi)
    np.testing.assert_allclose(object_to_ras[:3, 3], centre, atol=1e-6)
    got = roi_to_box(object_to_ras, size_mm, ijk_to_ras, (20, 60, 50))
    if direction == "axial":
        assert got == box
    else:  # an axis-aligned RAS box around an oblique grid covers the box (and a little more)
        assert all(gl <= bl for gl, bl in zip(got.lo, box.lo)) and all(gh >= bh for gh, bh in zip(got.hi, box.hi))
        assert got != box
        # an ROI turned with the volume's axes (ObjectToNode) gives the box exactly
        axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
        axes[:, 1] *= np.sign(np.linalg.det(axes))  # a rotation (the flipped axis points the other way)
        turned = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
        m = vtk.vtkMatrix4x4()
        for r in range(3):
            for c in range(3):
                m.SetElement(r, c, float(axes[r, c]))
        turned.SetAndObserveObjectToNodeMatrix(m)
        kji_centre = (np.asarray(box.lo) + np.asarray(box.hi) - 1) / 2
        turned.SetCenter(*[float(v) for v in (ijk_to_ras @ np.r_[kji_centre[::-1], 1.0])[:3]])
        spacing = np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
        turned.SetSize(*[float(v) for v in (np.asarray(box.size[::-1]) - 1) * spacing])
        assert roi_to_box(*bridge.roi_geometry(turned), ijk_to_ras, (20, 60, 50)) == box
    roi.SetSize(float(size[0]), float(size[1]), 0.0)
    if direction == "axial":  # thin along S: a 2D box on one axial slice
        flat = roi_to_box(*bridge.roi_geometry(roi), ijk_to_ras, (20, 60, 50))
        assert flat.axis == 0 and flat.hi[0] - flat.lo[0] == 1
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    roi.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(Exception, match="under a transform"):
        bridge.roi_geometry(roi)
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    assert not bridge.roi_is_placed(empty)
    with pytest.raises(Exception, match="place the box first"):
        bridge.roi_geometry(empty)


def test_sample_seg_nrrd_loads_with_names_colours_and_labels(scene):
    from InteractiveRefineLib.panel.slicer_samples import ORGAN_COLORS

    volume = slicer.modules.volumes.logic().AddArchetypeVolume(str(SAMPLE / "chaos" / "imagesTr" / "chaos_8.nii.gz"),
                                                               "chaos_8")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(SAMPLE / "slicer" / "chaos_8.seg.nrrd"))
    assert storage.ReadData(seg)
    segmentation = seg.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert sorted(names) == sorted(ORGAN_COLORS)
    label = on_slicer_grid(read_image(SAMPLE / "chaos" / "labelsTr" / "chaos_8.nii.gz"), volume)
    for value, name in enumerate(["liver", "right kidney", "left kidney", "spleen"], start=1):
        sid = bridge.segment_id_by_name(seg, name)
        np.testing.assert_allclose(segmentation.GetSegment(sid).GetColor(), ORGAN_COLORS[name], atol=1e-3)
        np.testing.assert_array_equal(bridge.segment_to_labelmap(seg, sid, volume) > 0, label == value)


def test_scribble_segments_live_in_a_node_that_is_not_saved(scene, tmp_path):
    volume, _ = add_volume(np.zeros((4, 10, 12), np.int16))
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "organs")
    result = bridge.ensure_named_segment(seg, "kidney")
    assert bridge.scribble_node(seg, create=False) is None
    node = bridge.scribble_node(seg, volume)
    assert node is not seg and bridge.scribble_node(seg) is node  # found again, not duplicated
    assert not node.GetSaveWithScene() and not node.GetDisplayNode().GetSaveWithScene()
    ids = [bridge.ensure_named_segment(node, n, c) for n, c in zip(scribble_segment_names("kidney"),
                                                                   (FG_COLOR, BG_COLOR))]
    assert ids[0] != ids[1] and bridge.ensure_named_segment(node, scribble_segment_names("kidney")[0]) == ids[0]
    np.testing.assert_allclose(node.GetSegmentation().GetSegment(ids[0]).GetColor(), FG_COLOR, atol=1e-6)
    fg = np.zeros((4, 10, 12), bool)
    fg[1, 2:5, 3] = True
    bridge.labelmap_to_segment(node, ids[0], fg, volume)
    np.testing.assert_array_equal(bridge.segment_to_labelmap(node, ids[0], volume) > 0, fg)
    assert list(seg.GetSegmentation().GetSegmentIDs()) == [result]  # the user's segmentation has no helper segment
    # saving the scene leaves the scribbles out
    scene.SetRootDirectory(str(tmp_path))
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    text = (tmp_path / "scene.mrml").read_text()
    assert "organs" in text and "organs scribbles" not in text and bridge.SCRIBBLES_FOR not in text
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    bridge.scribble_node(other, volume)
    assert bridge.remove_scribble_nodes(scene, seg) == 1 and bridge.scribble_node(seg, create=False) is None
    assert bridge.scribble_node(other, create=False) is not None
    assert bridge.remove_scribble_nodes(scene) == 1


# -- FewShotSeg's bridge ---------------------------------------------------------------------------------
def test_fewshot_bridge_reads_supports_views_and_writes_named_results(scene):
    from FewShotSegLib.panel import slicer_bridge as fs

    volume, _ = add_volume(np.arange(4 * 10 * 12, dtype=np.int16).reshape(4, 10, 12))
    image = fs.volume_image(volume)
    assert isinstance(image, Image) and image.shape == (4, 10, 12) == fs.volume_shape(volume)
    support = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "support")
    liver = np.zeros((4, 10, 12), bool)
    liver[1:3, 2:6, 2:7] = True
    lid = bridge.labelmap_to_segment(support, None, liver, volume)
    support.GetSegmentation().GetSegment(lid).SetName("liver")
    support.GetSegmentation().GetSegment(lid).SetColor(0.1, 0.2, 0.3)
    masks, names = fs.support_segments(support, [lid], volume)
    np.testing.assert_array_equal(masks[lid] > 0, liver)
    assert names == {lid: "liver"}
    with pytest.raises(Exception, match="not in support"):
        fs.segment_names(support, ["nope"])
    with pytest.raises(Exception, match="no support segment"):
        fs.support_segments(support, [], volume)
    # a Red slice node (found by its ID, shown or not): axial slice 2 of the volume
    assert fs.slice_view_matrix("Red") is None and fs.view_slice(volume) is None
    red = slicer.vtkMRMLSliceNode()
    red.SetLayoutName("Red")
    red.SetSingletonTag("Red")
    scene.AddNode(red)
    assert red.GetID() == "vtkMRMLSliceNodeRed"
    ras = bridge.ijk_to_ras_array(volume) @ np.array([0, 0, 2, 1.0])
    red.SetOrientationToAxial()
    red.JumpSliceByCentering(*ras[:3])
    axis, index, oblique = fs.view_slice(volume, "Red")
    assert (axis, index, oblique) == (0, 2, False)
    # results: named and coloured after the support, replacing a same-named segment in another node
    out = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    result = np.zeros((4, 10, 12), bool)
    result[2, 3:5, 3:5] = True
    [wid] = fs.write_results(out, volume, {lid: result}, support)
    seg = out.GetSegmentation().GetSegment(wid)
    assert seg.GetName() == "liver" and np.allclose(seg.GetColor(), (0.1, 0.2, 0.3))
    np.testing.assert_array_equal(bridge.segment_to_labelmap(out, wid, volume) > 0, result)
    [again] = fs.write_results(out, volume, {lid: liver}, support)
    assert again == wid and out.GetSegmentation().GetNumberOfSegments() == 1
    [same] = fs.write_results(support, volume, {lid: result}, support)  # into the support: a numbered name
    assert support.GetSegmentation().GetSegment(same).GetName() == "liver 2"
    np.testing.assert_array_equal(bridge.segment_to_labelmap(support, lid, volume) > 0, liver)  # kept
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    with pytest.raises(Exception, match="place the box first"):
        fs.query_roi_geometry(roi)
    with pytest.raises(Exception, match="select or create the query ROI"):
        fs.query_roi_geometry(None)
