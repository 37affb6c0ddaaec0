"""Conversions between Slicer MRML nodes and the headless core's numpy images.

This is the only module of InteractiveRefineLib that imports slicer/vtk; it can only be
imported inside 3D Slicer. Everything else in the package is plain Python.

Coordinate conventions
----------------------
Slicer works in the RAS patient frame (x: Right, y: Anterior, z: Superior). SimpleITK and
the NIfTI/NRRD readers used by the core (image_io) work in LPS (x: Left, y: Posterior,
z: Superior). The two frames differ by a sign flip of the first two axes, F = diag(-1, -1, 1):

    origin_lps    = F @ origin_ras
    direction_lps = F @ direction_ras      (columns are the unit I, J, K axis directions)

Spacing is frame independent. Arrays are in numpy (K, J, I) order, exactly as returned by
slicer.util.arrayFromVolume and sitk.GetArrayFromImage, so no transposition is needed.

Geometry is the volume node's own IJK-to-RAS mapping; a parent transform of the node, if
any, is ignored (labelmaps written back with the same reference volume line up with it).
"""
from typing import Optional, Tuple

import numpy as np
import slicer
import vtk

from ..core.errors import AdaptiveSegError, ImageError, PromptError
from .mask_update import Extent, crop

# Sign flip between RAS and LPS (its own inverse).
_RAS_LPS_FLIP = np.diag([-1.0, -1.0, 1.0])


def volume_to_image(volumeNode) -> Tuple[np.ndarray, Tuple[float, float, float],
                                         Tuple[float, float, float], np.ndarray]:
    """Return (array_kji, spacing, origin_lps, direction_lps) of a scalar volume node.

    array_kji is a copy (K, J, I) of the voxels; spacing and origin are in ITK (x, y, z)
    order, in mm; direction is a 3x3 matrix whose columns are the I, J, K axis directions
    in LPS, i.e. np.reshape(sitkImage.GetDirection(), (3, 3)).
    """
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise ImageError("the volume node is missing or has no image data")
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise ImageError(f"{volumeNode.GetName()} is a {volumeNode.GetClassName()}; a scalar volume is required")
    if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ImageError(f"{volumeNode.GetName()} has several components; a scalar volume is required")

    array_kji = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    spacing = tuple(float(s) for s in volumeNode.GetSpacing())
    directionMatrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASDirectionMatrix(directionMatrix)
    direction_ras = slicer.util.arrayFromVTKMatrix(directionMatrix)[:3, :3]
    origin_ras = np.asarray(volumeNode.GetOrigin(), dtype=float)
    origin_lps = tuple(float(v) for v in _RAS_LPS_FLIP @ origin_ras)
    direction_lps = _RAS_LPS_FLIP @ direction_ras
    return array_kji, spacing, origin_lps, direction_lps


def image_to_volume(array_kji, spacing, origin, direction, name: str = "",
                    labelmap: bool = False):
    """Add a new volume node for a core image (spacing/origin/direction in ITK order, LPS)."""
    from ..core.geometry import ijk_to_ras_matrix  # LPS geometry -> 4x4 IJK-to-RAS matrix

    ijkToRas = np.asarray(ijk_to_ras_matrix(spacing, origin, direction), dtype=float)
    className = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    return slicer.util.addVolumeFromArray(np.ascontiguousarray(array_kji), ijkToRas, name, className)


def _check_on_reference_grid(array_kji, referenceVolumeNode, what: str) -> None:
    if referenceVolumeNode is None or referenceVolumeNode.GetImageData() is None:
        raise ImageError("a reference volume node with image data is required")
    expected = tuple(reversed(referenceVolumeNode.GetImageData().GetDimensions()))
    if tuple(np.shape(array_kji)) != expected:
        raise ImageError(f"{what} has shape {np.shape(array_kji)} but the reference volume "
                         f"{referenceVolumeNode.GetName()} has shape {expected} (K, J, I)")


def ensure_segment(segmentationNode, segmentId: Optional[str] = None, name: Optional[str] = None) -> str:
    """Return segmentId, adding an empty segment with that ID (and name) if it does not exist."""
    segmentation = segmentationNode.GetSegmentation()
    if segmentId and segmentation.GetSegment(segmentId) is not None:
        return segmentId
    return segmentation.AddEmptySegment(segmentId or "", name or segmentId or "")


def labelmap_to_segment(segmentationNode, segmentId, mask_kji, referenceVolumeNode) -> str:
    """Replace the content of a segment by a binary mask on the reference volume's grid.

    mask_kji: (K, J, I) array, nonzero inside. The segment is created if it does not exist.
    Returns the segment ID.
    """
    _check_on_reference_grid(mask_kji, referenceVolumeNode, "the mask")
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    geometryRole = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    if segmentationNode.GetNodeReference(geometryRole) is None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    segmentId = ensure_segment(segmentationNode, segmentId)
    mask = (np.asarray(mask_kji) > 0).astype(np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, referenceVolumeNode)
    return segmentId


def probability_to_segment(segmentationNode, segmentId, probability_kji, referenceVolumeNode,
                           threshold: float = 0.5) -> str:
    """Threshold a foreground probability map (voxels > threshold) into a segment."""
    probability = np.asarray(probability_kji, dtype=np.float32)
    return labelmap_to_segment(segmentationNode, segmentId, probability > threshold, referenceVolumeNode)


def segment_to_labelmap(segmentationNode, segmentId, referenceVolumeNode) -> np.ndarray:
    """Return a segment as a uint8 (K, J, I) mask (0/1) on the reference volume's grid."""
    if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
        raise AdaptiveSegError(f"segment {segmentId!r} not found in {segmentationNode.GetName()}")
    array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolumeNode)
    return (np.asarray(array) > 0).astype(np.uint8)


# -- geometry as numpy 4x4 matrices (the pure conversions are in ras_geometry) ----------------------
def _array(vtkMatrix) -> np.ndarray:
    return np.array(slicer.util.arrayFromVTKMatrix(vtkMatrix), dtype=float)


def _check_untransformed(node, what: str) -> None:
    if node.GetParentTransformNode() is not None:
        raise PromptError(f"the {what} {node.GetName()} is under a transform; harden it first "
                          "(Data module: right-click the transform, Harden transform)")


def ijk_to_ras_array(volumeNode) -> np.ndarray:
    """The volume's IJK-to-RAS 4x4 matrix (numpy)."""
    _check_untransformed(volumeNode, "volume")
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return _array(matrix)


def roi_is_placed(roiNode) -> bool:
    """A box ROI is complete once its two placement clicks collapsed into one centre point."""
    return (roiNode is not None and roiNode.GetNumberOfControlPoints() == 1
            and roiNode.GetNumberOfDefinedControlPoints() == 1 and max(roiNode.GetSize()) > 0)


def roi_geometry(roiNode):
    """(object_to_ras 4x4, size_mm (3,)) of a Markups ROI: its axes and centre, and its side lengths."""
    if not roi_is_placed(roiNode):
        raise PromptError("place the box first: press 'Place box' and click two opposite corners in a view")
    _check_untransformed(roiNode, "box")
    return _array(roiNode.GetObjectToWorldMatrix()), np.array(roiNode.GetSize(), dtype=float)


def set_roi_size(roiNode, size_mm) -> None:
    roiNode.SetSize(*[float(v) for v in size_mm])


def slice_views():
    """[(name, sliceNode)] of the Red, Yellow and Green views shown in the layout (none without a main
    window)."""
    layoutManager = slicer.app.layoutManager()
    views = []
    if layoutManager is None:
        return views
    for name in ("Red", "Yellow", "Green"):
        widget = layoutManager.sliceWidget(name)
        if widget is not None and widget.visible:
            views.append((name, widget.mrmlSliceNode()))
    return views


def slice_to_ras_array(sliceNode) -> np.ndarray:
    return _array(sliceNode.GetSliceToRAS())


# -- segments ---------------------------------------------------------------------------------------
def segment_id_by_name(segmentationNode, name: str) -> Optional[str]:
    segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(name)
    return segmentId or None


def ensure_named_segment(segmentationNode, name: str, color=None) -> str:
    """The ID of the segment called `name`, added (empty, with `color`) if there is none."""
    segmentId = segment_id_by_name(segmentationNode, name)
    if segmentId:
        return segmentId
    if segmentationNode.GetDisplayNode() is None:
        segmentationNode.CreateDefaultDisplayNodes()
    segmentation = segmentationNode.GetSegmentation()
    return segmentation.AddEmptySegment("", name, list(color)) if color is not None \
        else segmentation.AddEmptySegment("", name)


def write_mask_extent(segmentationNode, segmentId, mask_kji, extent: Optional[Extent], referenceVolumeNode) -> None:
    """Replace a segment's voxels inside `extent` ((lo, hi) in K, J, I; hi exclusive) by `mask_kji`
    (full reference grid); voxels outside the extent are left as they are. None: nothing changed."""
    _check_on_reference_grid(mask_kji, referenceVolumeNode, "the mask")
    if extent is None:
        return
    from vtk.util import numpy_support

    geometryRole = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    if segmentationNode.GetNodeReference(geometryRole) is None:
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    segmentation = segmentationNode.GetSegmentation()
    segmentation.SeparateSegmentLabelmap(segmentId)  # our writes must not touch segments sharing its layer
    (k0, j0, i0), (k1, j1, i1) = extent
    block = np.ascontiguousarray((crop(mask_kji, extent) > 0).astype(np.uint8))
    image = slicer.vtkOrientedImageData()
    ijkToRas = vtk.vtkMatrix4x4()
    referenceVolumeNode.GetIJKToRASMatrix(ijkToRas)
    image.SetImageToWorldMatrix(ijkToRas)
    image.SetExtent(i0, i1 - 1, j0, j1 - 1, k0, k1 - 1)
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = block.ravel()
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    vtkExtent = [i0, i1 - 1, j0, j1 - 1, k0, k1 - 1]
    # MERGE_MIN clears what the block does not have, MERGE_MASK adds what it has (with the segment's own
    # label value): a replace limited to the extent, as the Segment Editor's "set" does (MODE_REPLACE
    # would drop the segment's voxels outside the extent).
    for mode in (logic.MODE_MERGE_MIN, logic.MODE_MERGE_MASK):
        if not logic.SetBinaryLabelmapToSegment(image, segmentationNode, segmentId, mode, vtkExtent):
            raise AdaptiveSegError(f"could not write segment {segmentId!r} of {segmentationNode.GetName()} "
                                   "(is its source representation a binary labelmap?)")


# -- scribbles: a segmentation node of their own, never saved with the scene ----------------------------
#: Attribute of a scribble node: the ID of the segmentation whose segment it helps to refine.
SCRIBBLES_FOR = "AdaptiveSeg.ScribblesFor"


def scribble_node(segmentationNode, referenceVolumeNode=None, create: bool = True):
    """The segmentation node that holds the foreground/background scribbles for `segmentationNode`.

    The scribbles live in a node of their own, not in the user's segmentation, and that node (with its
    display node) is not saved with the scene: saving a scene mid-session never stores them, and Accept or
    closing the session removes the node. None when there is none and `create` is False.
    """
    scene = segmentationNode.GetScene()
    for node in slicer.util.getNodesByClass("vtkMRMLSegmentationNode", scene):
        if node.GetAttribute(SCRIBBLES_FOR) == segmentationNode.GetID():
            return node
    if not create:
        return None
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{segmentationNode.GetName()} scribbles")
    node.SetAttribute(SCRIBBLES_FOR, segmentationNode.GetID())
    node.SetSaveWithScene(False)
    node.CreateDefaultDisplayNodes()
    for i in range(node.GetNumberOfDisplayNodes()):
        node.GetNthDisplayNode(i).SetSaveWithScene(False)
    if referenceVolumeNode is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(referenceVolumeNode)
    return node


def remove_scribble_nodes(scene, segmentationNode=None) -> int:
    """Remove the scribble node of `segmentationNode` (all scribble nodes when None); returns how many."""
    removed = 0
    for node in list(slicer.util.getNodesByClass("vtkMRMLSegmentationNode", scene)):
        owner = node.GetAttribute(SCRIBBLES_FOR)
        if owner and (segmentationNode is None or owner == segmentationNode.GetID()):
            scene.RemoveNode(node)
            removed += 1
    return removed
