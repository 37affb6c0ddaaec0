"""FewShotSeg: segment an organ in a new image from a few annotated example images.

A thin Slicer adapter over FewShotSegLib and the shared core in InteractiveRefineLib
(provided by the InteractiveRefine module, declared as a dependency). Heavy packages are
imported lazily, inside the methods that need them.
"""
import ctk
import qt
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)

# InteractiveRefine is a declared dependency, so Slicer has loaded it (and its folder is on sys.path).
from InteractiveRefine import CITATIONS

#
# FewShotSeg
#


class FewShotSeg(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Few-Shot Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["InteractiveRefine"]
        self.parent.contributors = ["AdaptiveSeg developers"]
        self.parent.helpText = _("""
Segment an organ in a new (query) image from a few example (support) images in which the
organ is already segmented, without retraining a model.
The interactive panel comes in a later version; for now the processing is available from the
module logic (Python console) and from the command line (<code>python -m FewShotSegLib</code>).
See the <a href="https://github.com/adaptiveseg/AdaptiveSeg">AdaptiveSeg documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Part of the AdaptiveSeg extension. The methods follow these publications:
""") + CITATIONS


#
# FewShotSegWidget
#


class FewShotSegWidget(ScriptedLoadableModuleWidget):
    """Placeholder panel; the interactive GUI is planned for a later version."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)

        collapsible = ctk.ctkCollapsibleButton()
        collapsible.text = _("Few-Shot Segmentation")
        self.layout.addWidget(collapsible)
        formLayout = qt.QFormLayout(collapsible)

        label = qt.QLabel(_(
            "The interactive panel comes in a later version. Meanwhile, use FewShotSegLogic "
            "from the Python console or the command line (python -m FewShotSegLib). "
            "Dependencies are installed from the Interactive Refine module."))
        label.wordWrap = True
        formLayout.addRow(label)

        self.layout.addStretch(1)


#
# FewShotSegLogic
#


class FewShotSegLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between MRML nodes and the few-shot core; usable without the widget."""

    @staticmethod
    def missingDependencies():
        from InteractiveRefine import InteractiveRefineLogic

        return InteractiveRefineLogic.missingDependencies()

    @staticmethod
    def installDependencies(askConfirmation=True):
        from InteractiveRefine import InteractiveRefineLogic

        return InteractiveRefineLogic().installDependencies(askConfirmation=askConfirmation)

    @staticmethod
    def supportSet(pairs):
        """[(image, mask_kji)] from (volumeNode, segmentationNode, segmentId) triples."""
        from FewShotSegLib import slicer_bridge

        return slicer_bridge.support_set(pairs)

    def run(self, queryVolumeNode, supportPairs, segmentationNode, segmentId, predict, threshold=0.5):
        """Run `predict(query_image, support)` and write its result into a segment.

        query_image is (array_kji, spacing, origin_lps, direction_lps) of the query volume,
        support the output of supportSet(supportPairs). `predict` returns a (K, J, I) mask or
        foreground probability on the query grid. Returns the segment ID.
        """
        from FewShotSegLib import slicer_bridge
        from InteractiveRefine import InteractiveRefineLogic

        query = slicer_bridge.volume_to_image(queryVolumeNode)
        support = self.supportSet(supportPairs)
        result = predict(query, support)
        return InteractiveRefineLogic.writeResult(result, segmentationNode, segmentId, queryVolumeNode, threshold)


#
# FewShotSegTest
#


class FewShotSegTest(ScriptedLoadableModuleTest):
    """Smoke tests of the Slicer adapter (no network, no torch needed)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_FewShotSeg_support_and_run()

    def test_FewShotSeg_support_and_run(self):
        import numpy as np

        self.delayDisplay("Support set and few-shot run with a stand-in predictor")
        ijkToRas = np.diag([0.8, 0.8, 2.5, 1.0])
        supportArray = np.zeros((6, 8, 8), np.int16)
        supportArray[2:4, 3:6, 2:5] = 100
        supportVolume = slicer.util.addVolumeFromArray(supportArray, ijkToRas, "FewShotSegSupport")
        queryVolume = slicer.util.addVolumeFromArray(np.roll(supportArray, 1, axis=2), ijkToRas, "FewShotSegQuery")

        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        from FewShotSegLib import slicer_bridge

        mask = (supportArray > 0).astype(np.uint8)
        segmentId = slicer_bridge.labelmap_to_segment(segmentationNode, "organ", mask, supportVolume)

        logic = FewShotSegLogic()
        self.assertIsInstance(logic.missingDependencies(), list)
        support = logic.supportSet([(supportVolume, segmentationNode, segmentId)])
        self.assertEqual(len(support), 1)
        (image, spacing, origin, direction), supportMask = support[0]
        np.testing.assert_array_equal(image, supportArray)
        np.testing.assert_array_equal(supportMask, mask)

        emptyId = slicer_bridge.ensure_segment(segmentationNode, "empty")
        with self.assertRaises(ValueError):
            logic.supportSet([(supportVolume, segmentationNode, emptyId)])

        def predict(query, support):
            return (query[0] > 0).astype(np.uint8)

        resultNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        resultId = logic.run(queryVolume, [(supportVolume, segmentationNode, segmentId)], resultNode, None, predict)
        np.testing.assert_array_equal(slicer_bridge.segment_to_labelmap(resultNode, resultId, queryVolume),
                                      (np.roll(supportArray, 1, axis=2) > 0).astype(np.uint8))
        self.delayDisplay("Test passed")
