"""The InteractiveRefine panel's parameter node: everything the panel shows, saved with the scene (the .ui binds
its widgets to these fields by SlicerParameterName)."""
import pathlib
from typing import Annotated

from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from InteractiveRefineLib.panel.settings import DEFAULTS  # torch-free


@parameterNodeWrapper
class InteractiveRefineParameterNode:
    """Everything the panel shows, saved with the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentName: str = "object"
    roi: vtkMRMLMarkupsROINode
    device: Annotated[str, Choice(["auto", "cuda", "cpu"])] = "auto"
    autoRefine: bool = False
    # Advanced (defaults from the core)
    iterations: Annotated[int, WithinRange(1, 20)] = DEFAULTS["iterations"]
    omega: Annotated[float, WithinRange(1.0, 100.0)] = DEFAULTS["omega"]
    threshold: Annotated[float, WithinRange(0.5, 1.0)] = DEFAULTS["threshold"]
    crfLambda: Annotated[float, WithinRange(0.0, 100.0)] = DEFAULTS["crf_lambda"]
    crfSigma: Annotated[float, WithinRange(0.0, 10000.0)] = DEFAULTS["crf_sigma"]
    marginMm: Annotated[float, WithinRange(0.0, 100.0)] = DEFAULTS["margin_mm"]
    wholeNetwork: bool = DEFAULTS["whole_network"]
    timeBudget: Annotated[float, WithinRange(0.0, 600.0)] = DEFAULTS["time_budget"]
    threeViews: bool = DEFAULTS["three_views"]
    # User study
    recordLog: bool = False
    logFolder: pathlib.Path
    participant: str = ""
    caseId: str = ""
    referenceSegmentation: vtkMRMLSegmentationNode
    referenceSegmentName: str = ""
