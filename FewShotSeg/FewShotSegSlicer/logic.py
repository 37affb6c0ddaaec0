"""FewShotSegLogic: MRML nodes -> a FewShotRequest -> the shared compute process -> result segments. Usable from
the Python console and the self-tests; the widget (FewShotSeg.py) only wires the GUI to it."""
import slicer
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from .parameters import DEFAULT_ADAPT_SECONDS, RANGE_MODES, FewShotSegParameterNode


class FewShotSegLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between MRML nodes and FewShotSegLib.panel.controller; usable without the widget.

    Script use (blocking)::

        logic = FewShotSegLogic()
        request = logic.buildRequest(supportVolume, supportSegmentation, [segmentId], queryVolume,
                                     rangeMode="slices", firstSlice=2, lastSlice=19)
        writtenIds, result = logic.segment(request, outputSegmentation, queryVolume, supportSegmentation)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._controller = None

    def getParameterNode(self):
        return FewShotSegParameterNode(super().getParameterNode())

    @staticmethod
    def missingDependencies():
        from InteractiveRefine import InteractiveRefineLogic

        return InteractiveRefineLogic.missingDependencies()

    @staticmethod
    def installDependencies(askConfirmation=True):
        from InteractiveRefine import InteractiveRefineLogic

        return InteractiveRefineLogic().installDependencies(askConfirmation=askConfirmation)

    # -- the compute process ------------------------------------------------------------------------------
    @property
    def controller(self):
        """The panel's controller, on the compute process InteractiveRefine shares (one per Slicer session)."""
        if self._controller is None:
            from FewShotSegLib.panel.controller import FewShotController
            from InteractiveRefine import InteractiveRefineLogic

            self._controller = FewShotController(client=InteractiveRefineLogic.computeClient())
        return self._controller

    @property
    def busy(self) -> bool:
        return self._controller is not None and self._controller.busy

    @property
    def deviceText(self) -> str:
        return self._controller.device_text if self._controller is not None else ""

    def start(self, request):
        """Send `request` to the compute process (BusyError while one runs)."""
        return self.controller.start(request)

    def poll(self):
        return self._controller.poll() if self._controller is not None else None

    def cancel(self) -> bool:
        return self._controller is not None and self._controller.cancel()

    def shutdown(self, stopCompute=False) -> None:
        """Cancel a running segmentation; stopCompute: also end the shared compute process (frees its memory)."""
        if self._controller is not None:
            self._controller.shutdown()
        if stopCompute:
            from InteractiveRefine import InteractiveRefineLogic

            client = InteractiveRefineLogic.computeClient()
            client.stop(timeout=client.GUI_STOP_WAIT)

    # -- nodes -> request -> segments ----------------------------------------------------------------------
    def buildRequest(self, supportVolume, supportSegmentation, segmentIds, queryVolume, supportSlice=-1, supportAxis=0,
                     rangeMode="auto", queryRoi=None, firstSlice=0, lastSlice=0, adapt=False,
                     adaptSeconds=DEFAULT_ADAPT_SECONDS, device="auto", viewName="Red", propagate=False,
                     follow=False):
        """A validated FewShotRequest from nodes (GUI thread). supportSlice -1: automatic, along the Red view's
        axis when it is not oblique (`viewName` None: along supportAxis), preferring the slice it shows.
        propagate: "Propagate through this scan" (the support volume is the query; `queryVolume` is ignored).
        follow: "Follow through the query" (ignored when propagating: its checkbox is greyed out then)."""
        from FewShotSegLib.panel import controller as panel
        from FewShotSegLib.panel import slicer_bridge as bridge
        from InteractiveRefineLib.core.errors import PromptError

        if supportVolume is None:
            raise PromptError(_("select the support volume"))
        if propagate:  # the support volume is the query; the adaptation and follow checkboxes are greyed out then
            queryVolume, adapt, follow = supportVolume, False, False
        if queryVolume is None:
            raise PromptError(_("select the query volume"))
        segmentIds = [str(s) for s in segmentIds or []]
        support = bridge.volume_image(supportVolume, "support volume")
        masks, names = bridge.support_segments(supportSegmentation, segmentIds, supportVolume)
        view = None
        if int(supportSlice) < 0 and viewName:
            try:
                view = bridge.view_slice(supportVolume, viewName)
            except PromptError:
                view = None  # the view does not cut the support volume
        axis, index = panel.resolve_support_slice(list(masks.values()), int(supportSlice), int(supportAxis), view,
                                                  [names[s] for s in segmentIds])
        query = support if propagate else bridge.volume_image(queryVolume, "query volume")
        if rangeMode == "auto":
            queryRange = panel.auto_range()
        elif rangeMode == "slices":
            queryRange = panel.slice_range(firstSlice, lastSlice)
        elif rangeMode == "roi":
            objectToWorld, size = bridge.query_roi_geometry(queryRoi)
            queryRange = panel.roi_range(objectToWorld, size, bridge.ijk_to_ras_array(queryVolume), query.shape)
        else:
            raise PromptError(f"unknown range mode {rangeMode!r}; use one of {', '.join(RANGE_MODES)}")
        request = panel.FewShotRequest(support, masks, index, query, axis, queryRange, bool(adapt),
                                       float(adaptSeconds), str(device), names, propagate=bool(propagate),
                                       follow=bool(follow))
        return request.validate()

    def requestFromParameterNode(self, p):
        return self.buildRequest(p.supportVolume, p.supportSegmentation, list(p.supportSegmentIds), p.queryVolume,
                                 p.supportSlice, p.supportAxis, p.rangeMode, p.queryRoi, p.firstSlice, p.lastSlice,
                                 p.adapt, p.adaptSeconds, p.device, propagate=p.propagate,
                                 follow=p.follow)

    @staticmethod
    def fitRoiToVolume(roiNode, volumeNode) -> None:
        """Make `roiNode` the bounding box of `volumeNode` in RAS (a new query ROI starts there)."""
        bounds = [0.0] * 6
        volumeNode.GetRASBounds(bounds)
        roiNode.SetSize([bounds[1] - bounds[0], bounds[3] - bounds[2], bounds[5] - bounds[4]])
        roiNode.SetCenter([(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2])

    @staticmethod
    def outputSegmentation(p, queryVolume):
        """The parameter node's output segmentation; without one, a new segmentation named after the volume
        segmented (`queryVolume`: "<query> few-shot") on its geometry, set as the output."""
        output = p.outputSegmentation
        if output is None:
            output = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
            output.SetName(slicer.mrmlScene.GenerateUniqueName(queryVolume.GetName() + " few-shot"))
            output.CreateDefaultDisplayNodes()
            output.SetReferenceImageGeometryParameterFromVolumeNode(queryVolume)
            p.outputSegmentation = output
        return output

    @staticmethod
    def writeResult(result, outputSegmentation, queryVolume, supportSegmentation):
        """Write a FewShotResult into the output segmentation (names and colours of the support segments);
        return the written segment IDs."""
        from FewShotSegLib.panel import slicer_bridge

        return slicer_bridge.write_results(outputSegmentation, queryVolume, result.masks, supportSegmentation)

    def segment(self, request, outputSegmentation, queryVolume, supportSegmentation, timeout=None):
        """Run `request` and write its result, blocking (scripts, self-tests). Returns (segment IDs, result)."""
        from InteractiveRefineLib.core.errors import CancelledError

        self.start(request)
        status = self.controller.wait(timeout)
        job = status.job
        if job.state == "cancelled":
            raise CancelledError(str(job.error))
        if job.state != "done":
            raise job.error
        return self.writeResult(status.result, outputSegmentation, queryVolume, supportSegmentation), status.result
