"""Slicer <-> numpy conversions for the FewShotSeg panel.

Together with InteractiveRefineLib.panel.slicer_bridge this is the only FewShotSegLib module that imports
slicer; it can only be imported inside 3D Slicer (FewShotSeg declares InteractiveRefine as a dependency,
so that module's folder is on sys.path). It reads nodes into the plain arrays and matrices the core
(controller.py, ras_geometry) works on, and writes results back into segments. Call it on the GUI thread only.

Geometry: a volume's own IJK-to-RAS matrix is used (parent transforms are ignored, as in
InteractiveRefineLib.panel.slicer_bridge); an ROI is read in world coordinates.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import slicer

from InteractiveRefineLib.core.errors import ImageError, PromptError
from InteractiveRefineLib.panel.slicer_bridge import (  # noqa: F401  (re-exported)
    ensure_segment,
    ijk_to_ras_array,
    image_to_volume,
    labelmap_to_segment,
    probability_to_segment,
    roi_geometry,
    segment_to_labelmap,
    slice_to_ras_array,
    volume_to_image,
)

from .controller import result_segment_names


def volume_image(volumeNode, what: str = "volume"):
    """A scalar volume node as a core Image (array K, J, I; LPS geometry)."""
    from InteractiveRefineLib.core.image_io import Image  # SimpleITK: only when a segmentation is prepared

    if volumeNode is None:
        raise PromptError(f"select a {what}")
    array, spacing, origin, direction = volume_to_image(volumeNode)
    return Image(array, spacing, origin, direction)


def volume_shape(volumeNode) -> Tuple[int, int, int]:
    """(K, J, I) shape of a volume node's voxel array."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise ImageError("the volume node is missing or has no image data")
    return tuple(int(v) for v in reversed(volumeNode.GetImageData().GetDimensions()))


def segment_names(segmentationNode, segmentIds: Sequence[str]) -> Dict[str, str]:
    """{segment id: name}; PromptError for an ID that is not in the segmentation."""
    segmentation = segmentationNode.GetSegmentation()
    names = {}
    for segmentId in segmentIds:
        segment = segmentation.GetSegment(segmentId)
        if segment is None:
            raise PromptError(f"segment {segmentId!r} is not in {segmentationNode.GetName()}; select the support "
                              "segment(s) again")
        names[segmentId] = segment.GetName()
    return names


def support_segments(segmentationNode, segmentIds: Sequence[str], volumeNode
                     ) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """({segment id: uint8 0/1 mask (K, J, I) on the support volume's grid}, {segment id: name}), in the
    given order; PromptError without a segmentation, without segments, or for an unknown ID."""
    if segmentationNode is None:
        raise PromptError("select the support segmentation")
    if not segmentIds:
        raise PromptError("no support segment selected: choose the segment(s) to learn in the Support section")
    names = segment_names(segmentationNode, segmentIds)
    masks = {segmentId: segment_to_labelmap(segmentationNode, segmentId, volumeNode) for segmentId in segmentIds}
    return masks, names


def slice_view_matrix(viewName: str = "Red") -> Optional[np.ndarray]:
    """SliceToRAS 4x4 of a slice view (numpy), or None when the scene has no such slice node (found by
    its node ID, so this works whether or not the view is shown)."""
    sliceNode = slicer.mrmlScene.GetNodeByID("vtkMRMLSliceNode" + viewName)
    return None if sliceNode is None else slice_to_ras_array(sliceNode)


def view_slice(volumeNode, viewName: str = "Red") -> Optional[Tuple[int, int, bool]]:
    """(array axis, slice index, oblique) of the volume slice a slice view shows, or None without the view.
    PromptError if the view's plane is outside the volume."""
    from InteractiveRefineLib.panel.ras_geometry import slice_of_view

    sliceToRas = slice_view_matrix(viewName)
    if sliceToRas is None:
        return None
    return slice_of_view(sliceToRas, ijk_to_ras_array(volumeNode), volume_shape(volumeNode))


def query_roi_geometry(roiNode) -> Tuple[np.ndarray, np.ndarray]:
    """(ObjectToWorld 4x4, side lengths in mm) of the query ROI (InteractiveRefine's checks: placed, not
    under a transform)."""
    if roiNode is None:
        raise PromptError("select or create the query ROI (range mode ROI)")
    return roi_geometry(roiNode)


def write_results(outputSegmentationNode, queryVolumeNode, masks: Dict[str, np.ndarray],
                  supportSegmentationNode) -> List[str]:
    """Write each result mask into the output segmentation; return the written segment IDs (mask order).

    A result segment takes the name and colour of its support segment. In another segmentation an
    existing segment of that name is overwritten (re-running replaces the previous result); when the
    output is the support segmentation itself, new numbered segments are added instead.
    """
    supportSegmentation = supportSegmentationNode.GetSegmentation()
    outputSegmentation = outputSegmentationNode.GetSegmentation()
    sameNode = outputSegmentationNode is supportSegmentationNode
    supportIds = list(masks)
    supportNames = list(segment_names(supportSegmentationNode, supportIds).values())
    existing = [outputSegmentation.GetSegment(sid).GetName() for sid in outputSegmentation.GetSegmentIDs()]
    names = result_segment_names(supportNames, existing, sameNode)
    written = []
    for supportId, name in zip(supportIds, names):
        targetId = "" if sameNode else outputSegmentation.GetSegmentIdBySegmentName(name)
        if not targetId:
            targetId = ensure_segment(outputSegmentationNode, None, name)
        labelmap_to_segment(outputSegmentationNode, targetId, np.asarray(masks[supportId]).astype(np.uint8),
                            queryVolumeNode)
        segment = outputSegmentation.GetSegment(targetId)
        segment.SetName(name)
        segment.SetColor(*supportSegmentation.GetSegment(supportId).GetColor())
        written.append(targetId)
    return written

