"""The FewShotSeg panel's parameter node (saved with the scene) and the choices it offers."""
from typing import Annotated

from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Minimum, WithinRange, parameterNodeWrapper

#: The panel's choices and defaults, as in FewShotSegLib.panel.controller (Testing/test_fewshot_panel.py checks
#: that they agree). Written out here because Slicer imports this file at startup, before the core's packages (numpy,
#: torch) may be installed; FewShotSegLib is imported inside the methods.
DEFAULT_ADAPT_SECONDS = 60.0
DEVICES = ("auto", "cuda", "cpu")
RANGE_MODES = ("auto", "roi", "slices")
AXIS_NAMES = ("K", "J", "I")


@parameterNodeWrapper
class FewShotSegParameterNode:
    """The panel's state, saved with the scene.

    supportSegmentIds: IDs of the support segments to learn (kept in sync with the segment selector by the
    widget: no GUI connector exists for qMRMLSegmentSelectorWidget). supportSlice: index along supportAxis
    (array axis 0 = K, 1 = J, 2 = I), -1 = automatic. firstSlice/lastSlice: query range (inclusive) along the
    same axis when rangeMode is "slices". adaptSeconds: cap on the exemplar adaptation's seconds for the whole run.
    propagate: "Propagate through this scan" (the support volume itself is segmented; queryVolume unused).
    follow: "Follow through the query" (each few-shot result followed through the query from its middle slice).
    """

    supportVolume: vtkMRMLScalarVolumeNode
    supportSegmentation: vtkMRMLSegmentationNode
    supportSegmentIds: list[str]
    supportSlice: Annotated[int, Minimum(-1)] = -1
    supportAxis: Annotated[int, Choice([0, 1, 2])] = 0
    queryVolume: vtkMRMLScalarVolumeNode
    rangeMode: Annotated[str, Choice(list(RANGE_MODES))] = "auto"
    queryRoi: vtkMRMLMarkupsROINode
    firstSlice: Annotated[int, Minimum(0)] = 0
    lastSlice: Annotated[int, Minimum(0)] = 0
    outputSegmentation: vtkMRMLSegmentationNode
    adapt: bool = False
    adaptSeconds: Annotated[float, WithinRange(1.0, 3600.0)] = DEFAULT_ADAPT_SECONDS
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    propagate: bool = False
    follow: bool = False
