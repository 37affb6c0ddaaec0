"""InteractiveRefineLogic: MRML nodes <-> the core's arrays, the session (a RefineController on the shared
compute process), the scribble node, dependencies. Usable from the Python console and the self-tests; the
widget (InteractiveRefine.py) only wires the GUI to it."""
import os

import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from InteractiveRefineLib.panel.settings import DEFAULTS  # torch-free

from .parameters import InteractiveRefineParameterNode

#: Version requirement passed to PyTorchUtils (e.g. ">=2.0"), or None for any version.
TORCH_VERSION_REQUIREMENT = ">=2.1"


class InteractiveRefineLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between MRML nodes and the core (usable from the Python console and self-tests)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._controller = None
        self._sessionKey = None
        self._to3d = None  # FewShotSegLib.panel.propagate_to_3d.PropagateTo3D of the current session

    def getParameterNode(self):
        return InteractiveRefineParameterNode(super().getParameterNode())

    @staticmethod
    def modelsPath():
        """Folder of the bundled model weights (Resources/Models)."""
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Models")

    # -- dependencies --------------------------------------------------------------------------
    @staticmethod
    def missingDependencies():
        """Requirements (pip form) that are not installed, torch first; nothing is imported."""
        import importlib.util

        from InteractiveRefineLib.panel.dependencies import missing, read_requirements

        torch = [] if importlib.util.find_spec("torch") is not None else ["torch"]
        return torch + missing(read_requirements())

    def installDependencies(self, askConfirmation=True):
        """Install what is missing; True when everything is available. torch comes from the PyTorch
        extension (the CUDA build that matches the GPU driver), the rest from slicer.packaging
        (Slicer 5.12+) or slicer.util.pip_install. Called on user action only."""
        missing = self.missingDependencies()
        if not missing:
            return True
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
                _("AdaptiveSeg needs these Python packages: {packages}. Download and install them now? "
                  "This can take several minutes.").format(packages=", ".join(missing))):
            return False
        try:
            if "torch" in missing:
                try:
                    import PyTorchUtils
                except ImportError:
                    raise RuntimeError(_("AdaptiveSeg needs the PyTorch extension: install it with the Extensions "
                                         "Manager, restart Slicer and try again.")) from None
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=TORCH_VERSION_REQUIREMENT)
                if torch is None:
                    return False
            others = [r for r in missing if r != "torch"]
            if others:
                try:
                    import slicer.packaging as packaging  # Slicer 5.12+
                except ImportError:
                    packaging = None
                if packaging is not None:
                    # skip_in_testing=False: the self-tests need the packages too
                    packaging.pip_ensure(others, prompt_install=False, requester="AdaptiveSeg", skip_in_testing=False)
                else:
                    slicer.util.pip_install(others)
        except Exception as exc:
            raise RuntimeError(_("Installing {packages} failed: {error}\nCheck the network connection and "
                                 "restart Slicer before trying again.").format(packages=", ".join(missing),
                                                                               error=exc)) from exc
        import importlib

        importlib.invalidate_caches()
        still = self.missingDependencies()
        if still:
            raise RuntimeError(_("{packages} still cannot be imported; restart Slicer and try again.").format(
                packages=", ".join(still)))
        return True

    def ensureDependencies(self, askConfirmation=True):
        """True when everything is installed. In testing mode nothing is ever installed and nothing is asked
        (a ctest run must not download gigabytes, and a dialog would block it): False when something is
        missing."""
        if not self.missingDependencies():
            return True
        if slicer.app.testingEnabled():
            return False
        return self.installDependencies(askConfirmation=askConfirmation)

    # -- compute process -----------------------------------------------------------------------
    @staticmethod
    def computeClient():
        """The compute process both panels share (PythonSlicer, started on the first request)."""
        from InteractiveRefineLib.compute.client import shared_client

        def launch(args, envUpdate):  # PythonSlicer with Slicer's environment; its output goes to a log file
            return slicer.util.launchConsoleProcess(args, updateEnvironment=dict(envUpdate))

        return shared_client(launcher=launch)

    # -- segment editor node -------------------------------------------------------------------
    @staticmethod
    def segmentEditorNode():
        tag = "InteractiveRefineSegmentEditor"
        node = slicer.mrmlScene.GetSingletonNode(tag, "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag(tag)
            node = slicer.mrmlScene.AddNode(node)
        # Painting a scribble must not erase the segment being refined (the default overwrites all).
        node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)
        return node

    # -- box -----------------------------------------------------------------------------------
    @staticmethod
    def startBoxPlacement(roiNode=None):
        """Start placing a box ROI (two clicks) in the views; returns a new ROI node. A fresh node per
        placement: a finished ROI keeps its required/maximum point counts, so reusing it would make a click
        without a drag a zero-size box. The previous box ROI is removed if this module created it."""
        if roiNode is not None and roiNode.GetAttribute("AdaptiveSeg.Box") == "1":
            slicer.mrmlScene.RemoveNode(roiNode)
        roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", _("box"))
        roiNode.SetAttribute("AdaptiveSeg.Box", "1")
        selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        selectionNode.SetReferenceActivePlaceNodeClassName("vtkMRMLMarkupsROINode")
        selectionNode.SetActivePlaceNodeID(roiNode.GetID())
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        interactionNode.SetPlaceModePersistence(0)
        interactionNode.SetCurrentInteractionMode(interactionNode.Place)
        return roiNode

    @staticmethod
    def isPlaced(roiNode):
        from InteractiveRefineLib.panel import slicer_bridge

        return slicer_bridge.roi_is_placed(roiNode)

    @staticmethod
    def flattenToView(roiNode):
        """Make a just-placed ROI a 2D box on the slice of the view it was drawn in."""
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.ras_geometry import flatten_roi, nearest_view

        views = slicer_bridge.slice_views()
        if not views:
            return
        objectToRas, size = slicer_bridge.roi_geometry(roiNode)
        matrices = [slicer_bridge.slice_to_ras_array(node) for _, node in views]
        index = nearest_view(objectToRas[:3, 3], matrices)
        slicer_bridge.set_roi_size(roiNode, flatten_roi(objectToRas, size, matrices[index][:3, 2]))
        roiNode.SetAttribute("AdaptiveSeg.View", views[index][0])

    @staticmethod
    def _viewNormal(roiNode):
        from InteractiveRefineLib.panel import slicer_bridge

        name = roiNode.GetAttribute("AdaptiveSeg.View")
        for viewName, node in slicer_bridge.slice_views():
            if viewName == name:
                return slicer_bridge.slice_to_ras_array(node)[:3, 2]
        return None

    def boxFromRoi(self, roiNode, volumeNode):
        """The ROI as a core Box in the volume's voxel indices (2D when the ROI is thin)."""
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.ras_geometry import roi_to_box

        objectToRas, size = slicer_bridge.roi_geometry(roiNode)
        shape = tuple(reversed(volumeNode.GetImageData().GetDimensions()))
        return roi_to_box(objectToRas, size, slicer_bridge.ijk_to_ras_array(volumeNode), shape,
                          self._viewNormal(roiNode))

    def describeBox(self, roiNode, volumeNode):
        if not self.isPlaced(roiNode):
            return _("box not placed yet")
        box = self.boxFromRoi(roiNode, volumeNode)
        size = " x ".join(str(s) for i, s in enumerate(box.size) if i != box.axis)
        if box.axis is None:
            return _("3D box, {size} voxels (K x J x I)").format(size=size)
        return _("2D box on slice {index} of array axis {axis}, {size} voxels").format(
            index=box.slice_index, axis="KJI"[box.axis], size=size)

    # -- session -------------------------------------------------------------------------------
    @property
    def busy(self):
        return self._controller is not None and self._controller.busy or self._propagating

    @property
    def hasSession(self):
        return self._controller is not None

    @property
    def hasResult(self):
        return self._controller is not None and self._controller.has_object

    @property
    def hasScribbles(self):
        return self.hasResult and self._controller.has_scribbles

    @property
    def cancellable(self):
        """Whether the running step can be cancelled (and reports progress)."""
        job = self._to3d.current if self._propagating else None if self._controller is None \
            else self._controller.current
        return job is not None and not job.finished and job.cancellable

    @property
    def deviceText(self):
        return None if self._controller is None else self._controller.device_text

    def canUndo(self):
        return self._controller is not None and (self._controller.can_undo() or self._to3d is not None
                                                 and self._to3d.can_undo())

    @property
    def _propagating(self):
        return self._to3d is not None and self._to3d.busy

    @staticmethod
    def propagate3DMissing():
        """Why "Propagate to 3D" cannot run in this Slicer (None when it can): it runs FewShotSeg's propagation,
        and InteractiveRefine does not depend on the FewShotSeg module, which may not be installed."""
        import importlib.util

        if importlib.util.find_spec("FewShotSegLib") is None:
            return _("Propagate to 3D needs the Few-Shot Segmentation (FewShotSeg) module of this extension; "
                     "install or enable it to use this button.")
        return None

    def canPropagate3D(self):
        """Whether the session's result comes from a 2D box (what "Propagate to 3D" starts from) and the
        FewShotSeg module that propagates it is available."""
        box = self._controller.box if self.hasResult else None
        return box is not None and box.axis is not None and not self.busy and self.propagate3DMissing() is None

    def startPropagate3D(self, p):
        """'Propagate to 3D': the 2D box result (its slice of the segment) is the support of FewShotSeg's
        same-scan propagation in the compute process; poll() then delivers the 3D result as one step of the
        session (FewShotSegLib.panel.propagate_to_3d), written into the same segment by applyUpdate."""
        missing = self.propagate3DMissing()
        if missing is not None:
            raise ValueError(missing)
        from FewShotSegLib.panel.propagate_to_3d import PropagateTo3D
        from InteractiveRefineLib.panel import slicer_bridge

        controller = self._session(p, _("propagate"))
        if self._to3d is None or self._to3d.controller is not controller:
            self._to3d = PropagateTo3D(controller)
        segmentId = slicer_bridge.segment_id_by_name(p.segmentation, p.segmentName.strip())
        if segmentId is None:
            raise ValueError(_("segment {name!r} does not exist: press Segment first").format(
                name=p.segmentName.strip()))
        current = slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, p.inputVolume) > 0
        return self._to3d.start(current, p.device)

    def canRedo(self):
        return self._controller is not None and self._controller.can_redo()

    def times(self):
        return None if self._controller is None else self._controller.times()

    def refineConfig(self, p):
        """The Advanced settings as RefineConfig's fields (torch is not imported in Slicer's process)."""
        from InteractiveRefineLib.panel.settings import PANEL_FIELDS, refine_config_kwargs

        return refine_config_kwargs(**{key: getattr(p, field) for field, key in PANEL_FIELDS.items()})

    def _ensureController(self, p):
        """The session for this volume, segment and device (a new one, with a new log, if any changed)."""
        from InteractiveRefineLib.core.image_io import Image
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.refine_controller import RefineController

        key = self._objectKey(p) + (p.device, p.recordLog, str(p.logFolder), p.participant, p.caseId)
        if self._controller is not None and key == self._sessionKey:
            return self._controller
        self.closeSession()
        array, spacing, origin, direction = slicer_bridge.volume_to_image(p.inputVolume)
        reference = None
        if p.referenceSegmentation and p.referenceSegmentName.strip():
            refId = slicer_bridge.segment_id_by_name(p.referenceSegmentation, p.referenceSegmentName.strip())
            if refId is None:
                raise ValueError(_("reference segment {name!r} not found").format(name=p.referenceSegmentName))
            reference = slicer_bridge.segment_to_labelmap(p.referenceSegmentation, refId, p.inputVolume)
        logFolder = str(p.logFolder) if p.recordLog else None
        if p.recordLog and (not logFolder or logFolder == "."):
            raise ValueError(_("choose a folder for the interaction log (User study section)"))
        self._controller = RefineController(Image(array, spacing, origin, direction), self.refineConfig(p), p.device,
                                            log_folder=logFolder, participant=p.participant, case=p.caseId,
                                            reference=reference, client=self.computeClient())
        self._sessionKey = key
        return self._controller

    @staticmethod
    def _objectKey(p):
        return (p.inputVolume.GetID() if p.inputVolume else None, p.segmentation.GetID() if p.segmentation else None,
                p.segmentName.strip())

    def _session(self, p, what):
        """The running session, if it is still about the selected volume, segmentation and segment."""
        if self._controller is None:
            raise ValueError(_("nothing to {what} yet: place a box and press Segment").format(what=what))
        if self._sessionKey[:3] != self._objectKey(p):
            raise ValueError(_("the volume, segmentation or segment name changed since Segment: press Segment "
                               "(or Refine this segment) again to start on the new selection"))
        return self._controller

    def startSegment(self, p):
        """Segment the object in the ROI (in the compute process); poll() delivers the result."""
        from InteractiveRefineLib.panel import slicer_bridge

        self._checkInputs(p)
        box = self.boxFromRoi(p.roi, p.inputVolume)
        controller = self._ensureController(p)
        controller.config = self.refineConfig(p)
        self._forgetPropagation()
        segmentId = slicer_bridge.segment_id_by_name(p.segmentation, p.segmentName.strip())
        current = None if segmentId is None else slicer_bridge.segment_to_labelmap(p.segmentation, segmentId,
                                                                                    p.inputVolume)
        return controller.start_box(box, current)

    def startAdopt(self, p):
        """Start from the segment's current content (in the compute process); poll() delivers it."""
        from InteractiveRefineLib.panel import slicer_bridge

        self._checkInputs(p, needBox=False)
        segmentId = slicer_bridge.segment_id_by_name(p.segmentation, p.segmentName.strip())
        if segmentId is None:
            raise ValueError(_("segment {name!r} does not exist yet: place a box and press Segment").format(
                name=p.segmentName.strip()))
        current = slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, p.inputVolume)
        controller = self._ensureController(p)
        controller.config = self.refineConfig(p)
        self._forgetPropagation()
        return controller.start_adopt(current)

    def startRefine(self, p, mode="supervised"):
        controller = self._session(p, _("refine"))
        controller.config = self.refineConfig(p)
        return controller.start_refine(mode)

    def poll(self):
        if self._propagating:
            return self._to3d.poll()
        return None if self._controller is None else self._controller.poll()

    def wait(self, timeout=None):
        """Block until the running step ends (scripts and self-tests; the panel polls)."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while self._propagating:  # the propagation, then (if it succeeded) the adopt step it starts
            if end is not None and time.monotonic() > end:
                raise TimeoutError("the propagation did not finish in time")
            status = self._to3d.poll()
            if not self._propagating and status is not None and status.job.finished:
                return status  # failed or cancelled: no step follows
            time.sleep(0.02)
        if self._controller is None:
            return None
        return self._controller.wait(None if end is None else max(end - time.monotonic(), 0.0))

    def cancel(self):
        if self._propagating:
            return self._to3d.cancel()
        return self._controller is not None and self._controller.cancel()

    def history(self, p, action):
        """Start undo, redo or reset (in the compute process); poll() delivers the update. Undo right after
        'Propagate to 3D' goes back to the 2D result."""
        controller = self._session(p, action)
        if action == "undo" and not controller.can_undo() and self._to3d is not None and self._to3d.can_undo():
            return self._to3d.undo()
        return getattr(controller, action)()

    def _forgetPropagation(self):
        if self._to3d is not None:
            self._to3d.forget()

    def closeSession(self, stopCompute=False):
        """End the session without waiting: a running step is cancelled and its result dropped, the log is
        closed, the scribbles are removed. stopCompute: also end the compute process (scene close, module
        cleanup), which frees everything it held, GPU memory included."""
        from InteractiveRefineLib.panel import slicer_bridge

        controller, self._controller, self._sessionKey = self._controller, None, None
        to3d, self._to3d = self._to3d, None
        if to3d is not None:
            to3d.cancel()
        if controller is not None:
            controller.cancel()
            controller.close()
        slicer_bridge.remove_scribble_nodes(slicer.mrmlScene)
        if stopCompute:
            client = self.computeClient()
            client.stop(timeout=client.GUI_STOP_WAIT)

    def shutdown(self):
        self.closeSession(stopCompute=True)

    @staticmethod
    def _checkInputs(p, needBox=True):
        if not p.inputVolume:
            raise ValueError(_("select a volume"))
        if not p.segmentation:
            raise ValueError(_("select or create a segmentation"))
        if not p.segmentName.strip():
            raise ValueError(_("name the segment"))
        if needBox and not p.roi:
            raise ValueError(_("place a box around the object first"))

    # -- segments ------------------------------------------------------------------------------
    @staticmethod
    def scribbleNode(p, create=True):
        """The segmentation node holding this segmentation's scribbles (never saved with the scene), or None."""
        from InteractiveRefineLib.panel import slicer_bridge

        if not p or not p.segmentation:
            return None
        return slicer_bridge.scribble_node(p.segmentation, p.inputVolume, create=create)

    def helperSegmentIds(self, p):
        """IDs of the existing foreground / background scribble segments (in the scribble node)."""
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.segment_names import scribble_segment_names

        node = self.scribbleNode(p, create=False)
        if node is None or not p.segmentName.strip():
            return []
        ids = [slicer_bridge.segment_id_by_name(node, n) for n in scribble_segment_names(p.segmentName)]
        return [i for i in ids if i]

    def helperSegmentId(self, p, label):
        """ID of the scribble segment of `label` ('fg' or 'bg'), created (green / red) if needed."""
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.segment_names import BG_COLOR, FG_COLOR, scribble_segment_names

        fgName, bgName = scribble_segment_names(p.segmentName)
        name, color = (fgName, FG_COLOR) if label == "fg" else (bgName, BG_COLOR)
        return slicer_bridge.ensure_named_segment(self.scribbleNode(p), name, color)

    def syncScribbles(self, p):
        """Give the scribble segments' content to the session (sent ahead of its next step); (changed,
        message)."""
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.segment_names import scribble_segment_names

        if not self.hasResult or self._sessionKey[:3] != self._objectKey(p):
            return False, ""  # strokes on another selection are not this session's scribbles
        node = self.scribbleNode(p, create=False)
        masks = []
        for name in scribble_segment_names(p.segmentName):
            segmentId = None if node is None else slicer_bridge.segment_id_by_name(node, name)
            masks.append(None if segmentId is None
                         else slicer_bridge.segment_to_labelmap(node, segmentId, p.inputVolume))
        shape = self._controller.image.shape
        import numpy as np

        fg, bg = (np.zeros(shape, bool) if m is None else m > 0 for m in masks)
        _ignored, message = self._controller.set_scribbles(fg, bg)
        return self._controller.scribbles_changed, message

    def applyUpdate(self, p, update):
        """Write a step's result into the segment (changed extent only) and, after undo/redo/reset/box,
        the scribbles into the scribble node's segments."""
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.segment_names import BG_COLOR, FG_COLOR, scribble_segment_names

        controller = self._session(p, _("write"))
        segmentId = slicer_bridge.ensure_named_segment(p.segmentation, p.segmentName.strip())
        # Read the segment back first: a hand edit made since the last write (or a failed write) must leave
        # nothing stale, so the write covers every voxel that differs from what the segment holds now.
        current = slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, p.inputVolume) > 0
        rebaser = self._to3d if self._to3d is not None and self._to3d.controller is controller else controller
        update = rebaser.rebase(update, current)  # the hand-off's undo also removes what propagation added
        try:
            slicer_bridge.write_mask_extent(p.segmentation, segmentId, update.mask, update.extent, p.inputVolume)
        except Exception:
            # the segment may be partly written: later steps must compare with what it really holds
            controller.mark_written(slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, p.inputVolume))
            raise
        if update.scribbles is not None:
            node = self.scribbleNode(p, create=any(m.any() for m in update.scribbles))
            for name, color, mask in zip(scribble_segment_names(p.segmentName), (FG_COLOR, BG_COLOR),
                                         update.scribbles):
                if node is None:
                    break
                helperId = slicer_bridge.segment_id_by_name(node, name)
                if helperId is None and not mask.any():
                    continue
                helperId = helperId or slicer_bridge.ensure_named_segment(node, name, color)
                slicer_bridge.labelmap_to_segment(node, helperId, mask, p.inputVolume)
        return segmentId

    def accept(self, p):
        """End the session (logged) and remove the scribbles; the result stays."""
        from InteractiveRefineLib.panel import slicer_bridge

        self._session(p, _("accept")).accept()
        slicer_bridge.remove_scribble_nodes(slicer.mrmlScene, p.segmentation)
        self._controller, self._sessionKey = None, None

    def selectForRefinement(self, p, volumeNode, segmentationNode, segmentId):
        """Select a segment to refine and fit a 3D box ROI around it."""
        from InteractiveRefineLib.core.prompts import box_from_mask
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.ras_geometry import box_to_roi

        mask = slicer_bridge.segment_to_labelmap(segmentationNode, segmentId, volumeNode)
        box = box_from_mask(mask)
        centre, size = box_to_roi(box, slicer_bridge.ijk_to_ras_array(volumeNode))
        p.inputVolume = volumeNode
        p.segmentation = segmentationNode
        p.segmentName = segmentationNode.GetSegmentation().GetSegment(segmentId).GetName()
        roi = p.roi
        if roi is None:  # the module's own box ROI: replaced (not left behind) by the next placement
            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", _("box"))
            roi.SetAttribute("AdaptiveSeg.Box", "1")
        roi.RemoveAttribute("AdaptiveSeg.View")
        roi.SetCenter(*[float(v) for v in centre])
        roi.SetSize(*[float(v) for v in size])
        p.roi = roi
        return roi

    # -- study log -----------------------------------------------------------------------------
    def defaultSummaryPath(self, p):
        """`<log>_summary.csv` next to the log when recording, else None (ask the user)."""
        if self._controller is None or self._controller.log.path is None:
            return None
        path = self._controller.log.path
        return str(path.with_name(path.stem + "_summary.csv"))

    def exportSummary(self, path):
        from InteractiveRefineLib.core.study import summarize, write_summary_csv

        if self._controller is None:
            raise ValueError(_("no session to summarise yet"))
        log = self._controller.log
        row = summarize(log.events, log=str(log.path or ""))
        return write_summary_csv([row], path)

    @staticmethod
    def restoreDefaults(p):
        from InteractiveRefineLib.panel.settings import PANEL_FIELDS

        wasModifying = p.StartModify()
        try:
            for field, key in PANEL_FIELDS.items():
                setattr(p, field, DEFAULTS[key])
        finally:
            p.EndModify(wasModifying)
