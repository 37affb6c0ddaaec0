"""InteractiveRefine: deep-learning segmentation from a box, refined with scribbles (BIFSeg).

This file: the module, the widget (GUI wiring only) and the self-test; the parameter node and the Logic are in
InteractiveRefineSlicer/. The work is done by the Slicer-free core (InteractiveRefineLib: the RefineController
sends each step to the persistent compute process, a separate PythonSlicer process that owns the session,
so Slicer's main thread, which holds the GIL while Qt idles, never starves it) and the node <-> array
conversions by InteractiveRefineLib.panel.slicer_bridge. torch and the core are imported inside methods, so the
module loads before its dependencies are installed; they are installed when the user first presses Segment
(never in testing mode).

One undo history: the embedded Segment Editor only paints the scribbles, which live in a segmentation node of
their own that is never saved with the scene, and its own undo is off; Undo/Redo/Reset are this module's.
Hand edits of the result segment (e.g. in the Segment Editor module) are read back before every write.
"""
import logging

import qt
import slicer
import vtk

# The parameter node and the Logic live in InteractiveRefineSlicer/ (this file: module, widget, self-test);
# importable from here as before (FewShotSeg uses InteractiveRefineLogic).
from InteractiveRefineSlicer.gui import guarded
from InteractiveRefineSlicer.logic import TORCH_VERSION_REQUIREMENT, InteractiveRefineLogic  # noqa: F401
from InteractiveRefineSlicer.parameters import InteractiveRefineParameterNode  # noqa: F401
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

POLL_MS = 100
STROKE_DEBOUNCE_MS = 300

CITATIONS = """
<ul>
<li>BIFSeg: G. Wang et al., "Interactive Medical Image Segmentation Using Deep Learning With
Image-Specific Fine Tuning", IEEE Transactions on Medical Imaging 37(7), 2018.</li>
<li>RP-Net: H. Tang et al., "Recurrent Mask Refinement for Few-Shot Medical Image
Segmentation", ICCV 2021.</li>
<li>ELSNet: Q. En and Y. Guo, "Exemplar Learning for Medical Image Segmentation", BMVC 2022.</li>
</ul>
"""


#
# InteractiveRefine
#


class InteractiveRefine(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Interactive Refine")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Markups", "Segmentations", "SampleData"]
        self.parent.contributors = ["AdaptiveSeg developers"]
        self.parent.helpText = _("""
Segment an object from a box with a deep-learning model (P-Net 2D, or a 3D variant), then correct it
with foreground (green) and background (red) scribbles: each refinement fine-tunes the network on this
image and runs a graph-cut CRF (BIFSeg). Works for objects the model never saw in training.
<ol>
<li>Select the volume and a segmentation; name the segment (it is created when needed).</li>
<li><b>Place 2D box</b> and click two opposite corners in a slice view (a box on that slice), or
<b>Place 3D box</b> (adjust its depth in another view); then <b>Segment</b>. Or <b>Refine this
segment</b> to start from the segment as it is (e.g. a Few-Shot Segmentation result).</li>
<li>Pick <b>Foreground</b> or <b>Background</b> and paint; <b>Refine</b> (or tick "refine when a stroke
ends"). <b>Refine without scribbles</b> adapts to the image alone. The scribbles live in a segmentation of
their own ("... scribbles"), never saved with the scene.</li>
<li><b>Undo</b> / <b>Redo</b> / <b>Reset</b> move through this module's steps (the only undo here); <b>Accept</b>
keeps the result and removes the scribbles. Edits of the result in the Segment Editor are kept outside the box
and read back before the next write.</li>
</ol>
For user studies, the interaction log (JSON lines) records every step with its time; Export summary
writes a CSV, and <code>python -m InteractiveRefineLib analyze-logs DIR</code> summarises a folder of logs.
See the <a href="https://github.com/adaptiveseg/SlicerAdaptiveSeg">AdaptiveSeg documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Part of the AdaptiveSeg extension. The methods follow these publications:
""") + CITATIONS
        slicer.app.connect("startupCompleted()", registerSampleData)


#
# Sample data
#


def registerSampleData():
    """Register the embedded MR patients (volume + named organ segments) in the Sample Data module."""
    import SampleData

    from InteractiveRefineLib.panel.slicer_samples import CATEGORY, samples

    if hasattr(SampleData.SampleDataLogic, "registerCustomSampleDataCategory"):  # Slicer 5.12+
        SampleData.SampleDataLogic.registerCustomSampleDataCategory(CATEGORY, title=_("AdaptiveSeg"))
    for sample in samples():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(
            category=CATEGORY,
            sampleName=sample.name,
            thumbnailFileName=str(sample.thumbnail),
            uris=sample.uris(),
            fileNames=sample.file_names(),
            nodeNames=list(sample.node_names),
            checksums=sample.checksums(),
            loadFileType=list(sample.load_types),  # the keyword every Slicer 5.x accepts
        )


#
# InteractiveRefineWidget
#


class InteractiveRefineWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Panel: inputs, box, scribbles (embedded Segment Editor), history, progress, study log, settings."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._guiBoundNodes = []  # raw parameter nodes the GUI stays bound to (Slicer 5.8 cannot unbind)
        self._writingSegments = False  # our own writes must not count as scribble strokes
        self._flattenOnPlacement = False
        self._observedScribbles = None  # the scribble node's segmentation, observed while the module is entered

    # -- setup ---------------------------------------------------------------------------------
    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/InteractiveRefine.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = InteractiveRefineLogic()
        self._propagate3DToolTip = self.ui.propagate3DButton.toolTip  # the .ui text, shown when it can run

        # The Segment Editor needs its node before it gets the scene.
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        self.ui.segmentEditorWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.segmentEditorWidget.setEffectNameOrder(["Paint", "Draw", "Erase"])
        self.ui.segmentEditorWidget.unorderedEffectsVisible = False
        self.ui.segmentEditorWidget.segmentationNodeSelectorVisible = False
        self.ui.segmentEditorWidget.sourceVolumeNodeSelectorVisible = False
        self.ui.segmentEditorWidget.switchToSegmentationsButtonVisible = False
        # One undo history: the module's. The embedded editor paints scribbles only, with its undo off.
        if hasattr(self.ui.segmentEditorWidget, "setUndoEnabled"):
            self.ui.segmentEditorWidget.setUndoEnabled(False)
        self.ui.segmentEditorWidget.setMaximumNumberOfUndoStates(0)

        self._polledJob = None  # the step onPoll last showed
        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_MS)
        self._pollTimer.connect("timeout()", self.onPoll)
        self._clockTimer = qt.QTimer()
        self._clockTimer.setInterval(1000)
        self._clockTimer.connect("timeout()", self.updateTimes)
        self._strokeTimer = qt.QTimer()
        self._strokeTimer.setSingleShot(True)
        self._strokeTimer.setInterval(STROKE_DEBOUNCE_MS)
        self._strokeTimer.connect("timeout()", self.onStrokeEnded)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        interactionNode = slicer.app.applicationLogic().GetInteractionNode()
        self.addObserver(interactionNode, slicer.vtkMRMLInteractionNode.EndPlacementEvent, self.onPlacementEnded)

        for button, handler in (
                (self.ui.placeBox2DButton, lambda: self.onPlaceBox(flat=True)),
                (self.ui.placeBox3DButton, lambda: self.onPlaceBox(flat=False)),
                (self.ui.segmentButton, self.onSegment),
                (self.ui.adoptButton, self.onAdopt),
                (self.ui.propagate3DButton, self.onPropagate3D),
                (self.ui.foregroundButton, lambda: self.onPaint("fg")),
                (self.ui.backgroundButton, lambda: self.onPaint("bg")),
                (self.ui.refineButton, lambda: self.onRefine("supervised")),
                (self.ui.unsupervisedButton, lambda: self.onRefine("unsupervised")),
                (self.ui.undoButton, lambda: self.onHistory("undo")),
                (self.ui.redoButton, lambda: self.onHistory("redo")),
                (self.ui.resetButton, lambda: self.onHistory("reset")),
                (self.ui.acceptButton, self.onAccept),
                (self.ui.cancelButton, self.onCancel),
                (self.ui.exportSummaryButton, self.onExportSummary),
                (self.ui.restoreDefaultsButton, self.onRestoreDefaults),
                (self.ui.installButton, self.onInstall)):
            button.connect("clicked(bool)", lambda checked=False, h=handler: h())
        self.ui.progressBar.hide()
        self.ui.cancelButton.hide()
        self.initializeParameterNode()

    def cleanup(self):
        for timer in (self._pollTimer, self._clockTimer, self._strokeTimer):
            timer.stop()
        self.observeScribbles(None)
        self.logic.shutdown()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self.ui.segmentEditorWidget.installKeyboardShortcuts()
        self.observeScribbles(self.logic.scribbleNode(self._parameterNode, create=False))
        self._clockTimer.start()

    def exit(self):
        # The GUI stays bound to the parameter node: a background step may still finish and write its
        # result, and Slicer <= 5.8 cannot unbind (connectGui returns no tag there). Strokes made elsewhere
        # after leaving the module are not scribbles: stop observing them.
        self.ui.segmentEditorWidget.setActiveEffect(None)
        self.ui.segmentEditorWidget.uninstallKeyboardShortcuts()
        self.ui.segmentEditorWidget.removeViewObservations()
        self.observeScribbles(None)
        self._strokeTimer.stop()
        self._clockTimer.stop()

    def onSceneStartClose(self, caller, event):
        self._pollTimer.stop()
        self.observeScribbles(None)
        self.logic.closeSession(stopCompute=True)  # ends the compute process: its GPU memory is freed
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(self.logic.segmentEditorNode())
        if self.parent.isEntered:
            self.initializeParameterNode()

    # -- parameter node ------------------------------------------------------------------------
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            volumes = [n for n in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                       if not n.IsA("vtkMRMLLabelMapVolumeNode")]
            if volumes:
                self._parameterNode.inputVolume = volumes[0]

    def setParameterNode(self, parameterNode):
        if (parameterNode is not None and self._parameterNode is not None
                and parameterNode.parameterNode is self._parameterNode.parameterNode):
            return  # already bound (binding twice would pile up GUI connections)
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:  # Slicer 5.8's connectGui returns no tag: nothing to undo
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
                self._guiBoundNodes = [n for n in self._guiBoundNodes if n is not self._parameterNode.parameterNode]
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self._parameterNode = parameterNode
        if self._parameterNode:
            # a binding that could not be removed (5.8) is kept and not made twice: two connectors per widget
            # would update each widget twice per change (the same guard as FewShotSeg's _connectGui)
            raw = self._parameterNode.parameterNode
            if not any(n is raw for n in self._guiBoundNodes):  # also after A -> B -> A
                self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
                self._guiBoundNodes.append(raw)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self.onParameterChanged()

    def onParameterChanged(self, caller=None, event=None):
        p = self._parameterNode
        editor = self.ui.segmentEditorWidget
        if p is not None:
            scribbles = self.logic.scribbleNode(p, create=False)
            if scribbles is not None and editor.segmentationNode() is not scribbles:
                editor.setSegmentationNode(scribbles)
            # Slicer refuses (and logs an error) a source volume before the editor has a segmentation node
            if editor.segmentationNode() is not None and editor.sourceVolumeNode() is not p.inputVolume:
                editor.setSourceVolumeNode(p.inputVolume)
            if self.parent.isEntered:
                self.observeScribbles(scribbles)
            self.observeRoi(p.roi)
        self.updateButtons()

    def observeScribbles(self, scribbleNode):
        """Watch the scribble node's voxels (only while the module is entered): a stroke ends there."""
        segmentation = scribbleNode.GetSegmentation() if scribbleNode else None
        if segmentation is self._observedScribbles:
            return
        if self._observedScribbles is not None:
            self.removeObserver(self._observedScribbles, slicer.vtkSegmentation.RepresentationModified,
                                self.onSegmentVoxelsModified)
        self._observedScribbles = segmentation
        if segmentation is not None:
            self.addObserver(segmentation, slicer.vtkSegmentation.RepresentationModified, self.onSegmentVoxelsModified)

    def observeRoi(self, roiNode):
        for node in slicer.util.getNodesByClass("vtkMRMLMarkupsROINode"):
            if node is not roiNode and self.hasObserver(node, vtk.vtkCommand.ModifiedEvent, self.onRoiModified):
                self.removeObserver(node, vtk.vtkCommand.ModifiedEvent, self.onRoiModified)
        if roiNode is not None and not self.hasObserver(roiNode, vtk.vtkCommand.ModifiedEvent, self.onRoiModified):
            self.addObserver(roiNode, vtk.vtkCommand.ModifiedEvent, self.onRoiModified)
        self.onRoiModified()

    # -- state shown ---------------------------------------------------------------------------
    def updateButtons(self):
        p = self._parameterNode
        busy = self.logic.busy
        ready = bool(p and p.inputVolume and p.segmentation and p.segmentName.strip())
        has = self.logic.hasResult
        self.ui.segmentButton.enabled = ready and bool(p.roi) and not busy
        self.ui.adoptButton.enabled = ready and not busy
        for button in (self.ui.placeBox2DButton, self.ui.placeBox3DButton):
            button.enabled = ready and not busy
        for button in (self.ui.foregroundButton, self.ui.backgroundButton, self.ui.refineButton,
                       self.ui.unsupervisedButton, self.ui.resetButton, self.ui.acceptButton):
            button.enabled = has and not busy
        self.ui.propagate3DButton.enabled = self.logic.canPropagate3D()
        missing = self.logic.propagate3DMissing()  # greyed out with the reason when FewShotSeg is absent
        self.ui.propagate3DButton.toolTip = missing or self._propagate3DToolTip
        self.ui.undoButton.enabled = has and self.logic.canUndo()
        self.ui.redoButton.enabled = has and self.logic.canRedo()
        self.ui.exportSummaryButton.enabled = self.logic.hasSession
        self.ui.cancelButton.visible = busy and self.logic.cancellable  # a box prediction cannot stop early
        self.ui.progressBar.visible = busy
        self.ui.deviceLabel.text = self.logic.deviceText or _("(chosen when you press Segment)")

    def updateTimes(self):
        times = self.logic.times()
        if times is None:
            self.ui.timesLabel.text = _("no session yet")
            return
        self.ui.timesLabel.text = _("user {user:.1f} s, compute {compute:.1f} s, {n} interactions").format(
            user=times["user_seconds"], compute=times["compute_seconds"], n=times["interactions"])

    def guarded(self, message, waitCursor=False):
        """Run a GUI action: an error shows one dialog (nested actions do not add a second one), is logged,
        and the buttons are updated (InteractiveRefineSlicer.gui.guarded)."""
        return guarded(message, self.setStatus, self.updateButtons, "InteractiveRefine", waitCursor)

    def setStatus(self, text):
        self.ui.statusLabel.text = text
        logging.info("InteractiveRefine: %s", text)

    def onRoiModified(self, caller=None, event=None):
        p = self._parameterNode
        if not p or not p.roi or not p.inputVolume:
            self.ui.boxLabel.text = _("no box")
            return
        try:
            self.ui.boxLabel.text = self.logic.describeBox(p.roi, p.inputVolume)
        except Exception as exc:  # a box being placed or outside the volume: say so, never crash the GUI
            self.ui.boxLabel.text = str(exc)
        self.updateButtons()

    # -- box -----------------------------------------------------------------------------------
    def onPlaceBox(self, flat):
        with self.guarded(_("Could not start placing the box."), waitCursor=False):
            self.ui.segmentEditorWidget.setActiveEffect(None)  # an active effect would cancel placement
            self._flattenOnPlacement = flat
            self._parameterNode.roi = self.logic.startBoxPlacement(self._parameterNode.roi)
            self.setStatus(_("Click two opposite corners of the box in a slice view."))

    def onPlacementEnded(self, caller=None, event=None):
        p = self._parameterNode
        if not p or not p.roi or not self.logic.isPlaced(p.roi):
            return
        if self._flattenOnPlacement:
            self.logic.flattenToView(p.roi)
            self._flattenOnPlacement = False
        self.onRoiModified()

    # -- long steps ----------------------------------------------------------------------------
    def onSegment(self):
        with self.guarded(_("Segmentation failed."), waitCursor=True):
            if not self.logic.ensureDependencies():
                self.setStatus(_("The required Python packages are not installed; nothing was done."))
                return
            self.logic.startSegment(self._parameterNode)
            self.startPolling(_("Segmenting..."))

    def onAdopt(self):
        with self.guarded(_("Could not start from the segment."), waitCursor=True):
            if not self.logic.ensureDependencies():
                self.setStatus(_("The required Python packages are not installed; nothing was done."))
                return
            self.logic.startAdopt(self._parameterNode)
            self.startPolling(_("Taking over the segment for refinement..."))

    def onPropagate3D(self):
        with self.guarded(_("Could not propagate to 3D."), waitCursor=True):
            self.logic.startPropagate3D(self._parameterNode)
            self.startPolling(_("Propagating the 2D result through the scan..."))

    def onRefine(self, mode):
        with self.guarded(_("Refinement failed."), waitCursor=False):
            p = self._parameterNode
            self.syncScribbles()
            self.logic.startRefine(p, mode)
            self.startPolling(_("Refining ({mode})...").format(mode=mode))

    def startPolling(self, message):
        self.setStatus(message)
        # Steps that report no progress show a busy bar (range 0..0) rather than a bar stuck at 0 %.
        self.ui.progressBar.setRange(0, 100 if self.logic.cancellable else 0)
        self.ui.progressBar.value = 0
        self._polledJob = None
        self._pollTimer.start()
        self.updateButtons()

    def onPoll(self):
        status = self.logic.poll()
        if status is None:
            self._pollTimer.stop()
            self.updateButtons()
            return
        job = status.job
        if job is not self._polledJob:  # a step that starts another (Propagate to 3D, then adopt)
            self._polledJob = job
            self.ui.progressBar.setRange(0, 100 if job.cancellable else 0)
            self.ui.progressBar.setFormat("%p%")
            self.updateButtons()  # Cancel only while the step can stop
        self.ui.progressBar.value = int(100 * job.fraction)
        if job.message:
            self.ui.progressBar.setFormat(f"{job.message} %p%")
        if not job.finished:
            return
        self._pollTimer.stop()
        if job.state == "done" and status.update is not None:
            try:
                self.applyUpdate(status.update)
            except Exception as exc:  # e.g. the segmentation was deleted while the step ran
                self.setStatus(_("Could not write the result: {error}").format(error=exc))
                slicer.util.errorDisplay(_("Could not write the result: {error}").format(error=exc))
                self.updateButtons()
                return
            dice = status.update.dice
            self.setStatus(_("{name} done in {seconds:.1f} s").format(name=job.name, seconds=job.seconds)
                           + ("" if dice is None else _(" (Dice {dice:.3f})").format(dice=dice)))
        elif job.state == "cancelled":
            self.setStatus(_("{name} cancelled; the segmentation is unchanged").format(name=job.name))
        else:
            self.setStatus(_("{name} failed: {error}").format(name=job.name, error=job.error))
            slicer.util.errorDisplay(_("{name} failed: {error}").format(name=job.name, error=job.error))
        self.updateButtons()
        self.updateTimes()

    def onCancel(self):
        if self.logic.cancel():
            self.setStatus(_("Cancelling..."))

    # -- scribbles -----------------------------------------------------------------------------
    def onPaint(self, label):
        with self.guarded(_("Could not select the scribble segment."), waitCursor=False):
            p = self._parameterNode
            segmentId = self.logic.helperSegmentId(p, label)
            scribbles = self.logic.scribbleNode(p)
            editor = self.ui.segmentEditorWidget
            if editor.segmentationNode() is not scribbles:
                editor.setSegmentationNode(scribbles)
            editor.setSourceVolumeNode(p.inputVolume)
            self.observeScribbles(scribbles)
            editor.setCurrentSegmentID(segmentId)
            editor.setActiveEffectByName("Paint")

    @vtk.calldata_type(vtk.VTK_STRING)
    def onSegmentVoxelsModified(self, caller, event, segmentId):
        if self._writingSegments or not self.logic.hasResult:
            return
        if segmentId in self.logic.helperSegmentIds(self._parameterNode):
            self._strokeTimer.start()  # restarts: one sync after the stroke's burst of events

    def onStrokeEnded(self):
        if self.logic.busy:
            self._strokeTimer.start()  # try again once the running step is over
            return
        with self.guarded(_("Could not read the scribbles."), waitCursor=False):
            changed = self.syncScribbles()
            if changed and self._parameterNode.autoRefine and self.logic.hasScribbles:
                self.onRefine("supervised")
        self.updateButtons()
        self.updateTimes()

    def syncScribbles(self):
        changed, message = self.logic.syncScribbles(self._parameterNode)
        if message:
            self.setStatus(message)
        return changed

    # -- history -------------------------------------------------------------------------------
    def onHistory(self, action):
        with self.guarded(_("Could not {action}.").format(action=action), waitCursor=False):
            self.logic.history(self._parameterNode, action)
            self.startPolling(_("{action}...").format(action=action.capitalize()))

    def applyUpdate(self, update):
        self._writingSegments = True
        try:
            self.logic.applyUpdate(self._parameterNode, update)
        finally:
            self._writingSegments = False

    def onAccept(self):
        with self.guarded(_("Could not accept the result."), waitCursor=False):
            self.ui.segmentEditorWidget.setActiveEffect(None)
            self._writingSegments = True
            try:
                self.logic.accept(self._parameterNode)
            finally:
                self._writingSegments = False
            self.setStatus(_("Accepted; the scribbles were removed"))
            self.observeScribbles(None)

    # -- study log, settings, dependencies -----------------------------------------------------
    def onExportSummary(self):
        with self.guarded(_("Could not export the summary."), waitCursor=False):
            path = self.logic.defaultSummaryPath(self._parameterNode)
            if path is None:
                path = qt.QFileDialog.getSaveFileName(self.parent, _("Export summary"), "session_summary.csv",
                                                      "CSV (*.csv)")
                if not path:
                    return
            written = self.logic.exportSummary(path)
            self.setStatus(_("Summary written to {path}").format(path=written))

    def onRestoreDefaults(self):
        self.logic.restoreDefaults(self._parameterNode)

    def onInstall(self):
        with self.guarded(_("Failed to install dependencies."), waitCursor=True):
            if self.logic.ensureDependencies(askConfirmation=True):
                slicer.util.infoDisplay(_("All dependencies are installed."))

    # -- hand-over from FewShotSeg ---------------------------------------------------------------
    def startRefinementOf(self, volumeNode, segmentationNode, segmentId):
        """FewShotSeg's 'Refine in InteractiveRefine': select the volume and the segment and take the
        segment over as it is (Refine this segment), ready for scribbles."""
        with self.guarded(_("Could not select the segment for refinement."), waitCursor=False):
            self.initializeParameterNode()
            self.logic.selectForRefinement(self._parameterNode, volumeNode, segmentationNode, segmentId)
        self.onAdopt()


#
# InteractiveRefineTest
#


class InteractiveRefineTest(ScriptedLoadableModuleTest):
    """The panel's workflow on the embedded MR patient (run by ctest and by Reload and Test):
    sample data -> box ROI -> segment -> scribble -> refine -> undo -> accept."""

    RIGHT_KIDNEY = "right kidney"

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        # Reload and Test calls runTest outside unittest's machinery: nothing below uses skipTest or
        # addCleanup; each test cleans up after itself in a finally block.
        self.setUp()
        self.test_InteractiveRefine_sample_data()
        self.setUp()
        self.test_InteractiveRefine_roi_to_box()
        self.setUp()
        self.test_InteractiveRefine_workflow()
        self.setUp()
        self.test_InteractiveRefine_refine_existing_segment()

    def _loadSample(self):
        import SampleData

        registerSampleData()
        nodes = SampleData.SampleDataLogic().downloadSamples("AdaptiveSegMR1")
        volume = next(n for n in nodes if n.IsA("vtkMRMLScalarVolumeNode"))
        reference = next(n for n in nodes if n.IsA("vtkMRMLSegmentationNode"))
        return volume, reference

    def test_InteractiveRefine_sample_data(self):
        self.delayDisplay("Sample data: volume and named organ segments")
        volume, reference = self._loadSample()
        self.assertEqual(tuple(reversed(volume.GetImageData().GetDimensions())), (34, 256, 256))
        names = {reference.GetSegmentation().GetNthSegment(i).GetName()
                 for i in range(reference.GetSegmentation().GetNumberOfSegments())}
        self.assertEqual(names, {"liver", "right kidney", "left kidney", "spleen"})

    def test_InteractiveRefine_roi_to_box(self):
        self.delayDisplay("ROI (RAS) -> voxel box, 3D and 2D")
        import numpy as np

        from InteractiveRefineLib.core.prompts import Box
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.ras_geometry import box_to_roi

        volume, _reference = self._loadSample()
        logic = InteractiveRefineLogic()
        box = Box((10, 80, 40), (14, 126, 90))
        centre, size = box_to_roi(box, slicer_bridge.ijk_to_ras_array(volume))
        roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
        roi.SetCenter(*centre)
        roi.SetSize(*size)
        self.assertEqual(logic.boxFromRoi(roi, volume), box)
        roi.SetSize(size[0], size[1], 0.0)  # thin along S: a 2D box on the nearest axial slice
        box2d = logic.boxFromRoi(roi, volume)
        self.assertEqual(box2d.axis, 0)
        self.assertEqual(box2d.slice_index, int(np.floor((10 + 13) / 2 + 0.5)))

    def _logicWithDependencies(self):
        """A logic whose dependencies are installed, or None (said in the log and the display): a test run
        never installs packages and never asks."""
        logic = InteractiveRefineLogic()
        missing = logic.missingDependencies()
        if missing:
            message = "InteractiveRefine self-test: not run, missing {}".format(", ".join(missing))
            logging.warning(message)
            self.delayDisplay(message)
            return None
        return logic

    def _scribble(self, logic, p, stroke, shape, volume):
        """Paint a robot stroke into its scribble segment (in the scribble node, as the Paint effect would)."""
        import numpy as np

        from InteractiveRefineLib.panel import slicer_bridge

        helper = np.zeros(shape, np.uint8)
        helper[tuple(np.asarray(stroke.voxels).T)] = 1
        helperId = logic.helperSegmentId(p, stroke.label)
        slicer_bridge.labelmap_to_segment(logic.scribbleNode(p), helperId, helper, volume)

    def test_InteractiveRefine_workflow(self):
        import numpy as np

        from InteractiveRefineLib.core.prompts import box_from_mask, main_object
        from InteractiveRefineLib.evaluation.robot import next_scribble
        from InteractiveRefineLib.panel import slicer_bridge
        from InteractiveRefineLib.panel.ras_geometry import box_to_roi

        self.delayDisplay("Box -> segment -> scribble -> refine -> undo")
        volume, reference = self._loadSample()
        refId = slicer_bridge.segment_id_by_name(reference, self.RIGHT_KIDNEY)
        ref = slicer_bridge.segment_to_labelmap(reference, refId, volume) > 0
        k = int(np.argmax(ref.sum(axis=(1, 2))))
        box = box_from_mask(main_object(ref), 0, k)

        logic = self._logicWithDependencies()
        if logic is None:
            return
        try:
            p = logic.getParameterNode()
            p.inputVolume = volume
            p.segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            p.segmentName = "kidney"
            p.device = "cpu"
            p.referenceSegmentation = reference
            p.referenceSegmentName = self.RIGHT_KIDNEY
            centre, size = box_to_roi(box, slicer_bridge.ijk_to_ras_array(volume))
            roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
            roi.SetCenter(*centre)
            roi.SetSize(size[0], size[1], 0.0)
            p.roi = roi
            self.assertEqual(logic.boxFromRoi(roi, volume), box)

            logic.startSegment(p)
            status = logic.wait(120)
            self.assertEqual(status.job.state, "done", status.job.error)
            first = status.update
            logic.applyUpdate(p, first)
            segmentId = slicer_bridge.segment_id_by_name(p.segmentation, "kidney")
            written = slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, volume) > 0
            np.testing.assert_array_equal(written, first.mask)
            self.assertGreater(first.dice, 0.7)

            self.delayDisplay("Scribble (in the scribble node, not the user's segmentation), refine")
            stroke = next_scribble(first.mask, ref, box, logic._controller.image.spacing_kji,
                                   np.random.default_rng(0))
            self._scribble(logic, p, stroke, ref.shape, volume)
            self.assertEqual(p.segmentation.GetSegmentation().GetNumberOfSegments(), 1)
            self.assertFalse(logic.scribbleNode(p).GetSaveWithScene())
            changed, _message = logic.syncScribbles(p)
            self.assertTrue(changed)
            logic.startRefine(p, "supervised")
            status = logic.wait(300)
            self.assertEqual(status.job.state, "done", status.job.error)
            refined = status.update
            logic.applyUpdate(p, refined)
            self.assertGreaterEqual(refined.dice, first.dice)
            written = slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, volume) > 0
            np.testing.assert_array_equal(written, refined.mask)

            self.delayDisplay("Undo restores the box result exactly")
            logic.history(p, "undo")
            status = logic.wait(60)
            self.assertEqual(status.job.state, "done", status.job.error)
            logic.applyUpdate(p, status.update)
            written = slicer_bridge.segment_to_labelmap(p.segmentation, segmentId, volume) > 0
            np.testing.assert_array_equal(written, first.mask)

            logic.accept(p)
            self.assertEqual(logic.helperSegmentIds(p), [])
            self.assertIsNone(logic.scribbleNode(p, create=False))
            self.assertIsNotNone(p.segmentation.GetSegmentation().GetSegment(segmentId))
        finally:
            logic.shutdown()
        self.delayDisplay("Workflow test passed")

    def test_InteractiveRefine_refine_existing_segment(self):
        """Refine this segment (as after FewShotSeg): an under-segmented kidney is taken over unchanged,
        then one scribble and a refinement improve it."""
        import numpy as np
        from scipy import ndimage

        from InteractiveRefineLib.evaluation.robot import next_scribble
        from InteractiveRefineLib.panel import slicer_bridge

        volume, reference = self._loadSample()
        refId = slicer_bridge.segment_id_by_name(reference, "left kidney")
        ref = slicer_bridge.segment_to_labelmap(reference, refId, volume) > 0
        start = ndimage.binary_erosion(ref, structure=np.ones((1, 3, 3)), iterations=3)
        logic = self._logicWithDependencies()
        if logic is None:
            return
        try:
            p = logic.getParameterNode()
            p.device = "cpu"
            segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            segmentId = slicer_bridge.labelmap_to_segment(segmentation, None, start, volume)
            segmentation.GetSegmentation().GetSegment(segmentId).SetName("left kidney")
            p.referenceSegmentation = reference
            p.referenceSegmentName = "left kidney"
            logic.selectForRefinement(p, volume, segmentation, segmentId)
            logic.startAdopt(p)
            status = logic.wait(120)
            self.assertEqual(status.job.state, "done", status.job.error)
            adopted = status.update
            self.assertIsNone(adopted.extent)  # taken over as it is: nothing rewritten
            logic.applyUpdate(p, adopted)
            np.testing.assert_array_equal(slicer_bridge.segment_to_labelmap(segmentation, segmentId, volume) > 0,
                                          start)
            stroke = next_scribble(start, ref, logic._controller.box, logic._controller.image.spacing_kji,
                                   np.random.default_rng(0))
            self._scribble(logic, p, stroke, ref.shape, volume)
            logic.syncScribbles(p)
            logic.startRefine(p)
            status = logic.wait(300)
            self.assertEqual(status.job.state, "done", status.job.error)
            self.assertGreater(status.update.dice, adopted.dice)
            logic.applyUpdate(p, status.update)
        finally:
            logic.shutdown()
        self.delayDisplay("Refine-existing-segment test passed")
