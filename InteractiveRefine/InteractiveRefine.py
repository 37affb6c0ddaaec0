"""InteractiveRefine: deep-learning segmentation refined by a bounding box and scribbles.

The work is done by the headless package InteractiveRefineLib (also usable from the command
line with `python -m InteractiveRefineLib`). This file only adapts it to Slicer; heavy
packages (torch, ...) are imported lazily, inside the methods that need them, so that Slicer
starts quickly and the module loads even before its dependencies are installed.
"""
import importlib.util
import logging
import os

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

#: Python packages the core needs besides torch: import name -> pip requirement.
#: torch itself is installed through the PyTorch extension (PyTorchUtils module), which
#: picks a CUDA build matching the installed NVIDIA driver when there is one.
PIP_REQUIREMENTS = {
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "skimage": "scikit-image",
    "maxflow": "PyMaxflow",
}

#: Version requirement passed to PyTorchUtils (e.g. ">=2.0"), or None for any version.
TORCH_VERSION_REQUIREMENT = None

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
        self.parent.dependencies = []
        self.parent.contributors = ["AdaptiveSeg developers"]
        self.parent.helpText = _("""
Segment an organ from a bounding box with a deep-learning model, then refine the result with
foreground/background scribbles; the model is fine-tuned on the image being segmented.
The interactive panel comes in a later version; for now the processing is available from the
module logic (Python console) and from the command line (<code>python -m InteractiveRefineLib</code>).
See the <a href="https://github.com/adaptiveseg/AdaptiveSeg">AdaptiveSeg documentation</a>.
""")
        self.parent.acknowledgementText = _("""
Part of the AdaptiveSeg extension. The methods follow these publications:
""") + CITATIONS


#
# InteractiveRefineWidget
#


class InteractiveRefineWidget(ScriptedLoadableModuleWidget):
    """Placeholder panel; the interactive GUI is planned for a later version."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        self.logic = InteractiveRefineLogic()

        collapsible = ctk.ctkCollapsibleButton()
        collapsible.text = _("Interactive Refine")
        self.layout.addWidget(collapsible)
        formLayout = qt.QFormLayout(collapsible)

        label = qt.QLabel(_(
            "The interactive panel comes in a later version. Meanwhile, use "
            "InteractiveRefineLogic from the Python console or the command line "
            "(python -m InteractiveRefineLib)."))
        label.wordWrap = True
        formLayout.addRow(label)

        self.installButton = qt.QPushButton(_("Install dependencies"))
        self.installButton.toolTip = _("Install PyTorch (with the PyTorch extension) and the other "
                                       "Python packages this module needs.")
        self.installButton.connect("clicked(bool)", self.onInstallButton)
        formLayout.addRow(self.installButton)

        self.layout.addStretch(1)

    def onInstallButton(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to install dependencies.")):
            if self.logic.installDependencies(askConfirmation=True):
                slicer.util.infoDisplay(_("All dependencies are installed."))


#
# InteractiveRefineLogic
#


class InteractiveRefineLogic(ScriptedLoadableModuleLogic):
    """Thin adapter between MRML nodes and InteractiveRefineLib.

    Usable without the widget (Python console, other modules, tests).
    """

    @staticmethod
    def modelsPath():
        """Folder of the bundled model weights (Resources/Models)."""
        return os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Models")

    @staticmethod
    def missingDependencies():
        """Import names of the required packages that are not installed (nothing is imported)."""
        names = ["torch"] + list(PIP_REQUIREMENTS)
        return [name for name in names if importlib.util.find_spec(name) is None]

    def installDependencies(self, askConfirmation=True):
        """Install missing packages; return True when all are available.

        torch comes from the PyTorch extension (PyTorchUtils), the rest from pip.
        """
        missing = self.missingDependencies()
        if not missing:
            return True
        if askConfirmation and not slicer.app.commandOptions().testingEnabled:
            if not slicer.util.confirmOkCancelDisplay(
                    _("InteractiveRefine needs these Python packages: {packages}. Download and "
                      "install them now? This can take several minutes.").format(packages=", ".join(missing))):
                logging.info("InteractiveRefine: installation of dependencies cancelled by the user")
                return False
        if "torch" in missing:
            try:
                import PyTorchUtils
            except ImportError:
                raise RuntimeError(_("InteractiveRefine needs the PyTorch extension. "
                                     "Install it with the Extensions Manager and restart Slicer.")) from None
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=TORCH_VERSION_REQUIREMENT)
            if torch is None:
                return False
        others = [PIP_REQUIREMENTS[name] for name in missing if name in PIP_REQUIREMENTS]
        if others:
            slicer.util.pip_install(others)
        importlib.invalidate_caches()
        return not self.missingDependencies()

    @staticmethod
    def volumeToImage(volumeNode):
        """(array_kji, spacing, origin_lps, direction_lps) of a scalar volume node."""
        from InteractiveRefineLib import slicer_bridge

        return slicer_bridge.volume_to_image(volumeNode)

    @staticmethod
    def writeResult(result_kji, segmentationNode, segmentId, referenceVolumeNode, threshold=0.5):
        """Write a mask (bool/integer) or a probability map (float, > threshold) into a segment.

        Returns the segment ID (the segment is created if needed).
        """
        import numpy as np

        from InteractiveRefineLib import slicer_bridge

        result = np.asarray(result_kji)
        if np.issubdtype(result.dtype, np.floating):
            return slicer_bridge.probability_to_segment(
                segmentationNode, segmentId, result, referenceVolumeNode, threshold)
        return slicer_bridge.labelmap_to_segment(segmentationNode, segmentId, result, referenceVolumeNode)

    def run(self, volumeNode, segmentationNode, segmentId, predict, threshold=0.5):
        """Run `predict(array_kji, spacing, origin_lps, direction_lps)` on the volume.

        `predict` is a core function returning a (K, J, I) mask or foreground probability on
        the volume's grid; its result is written into the segment. Returns the segment ID.
        """
        image = self.volumeToImage(volumeNode)
        result = predict(*image)
        return self.writeResult(result, segmentationNode, segmentId, volumeNode, threshold)

    def segmentBox(self, volumeNode, boxLo, boxHi, sliceAxis, segmentationNode, segmentId=None, device="auto"):
        """Segment the object in a box with the shipped CNN and write it into a segment.

        boxLo/boxHi: voxel indices in (K, J, I) order, hi exclusive; sliceAxis: None for a 3D box, or
        the array axis of a 2D box (0 = axial for an axial acquisition). Returns the segment ID.
        """
        from InteractiveRefineLib.image_io import Image
        from InteractiveRefineLib.inference import BoxSegmenter
        from InteractiveRefineLib.prompts import make_box

        if getattr(self, "_segmenter", None) is None or self._segmenterDevice != device:
            self._segmenter, self._segmenterDevice = BoxSegmenter(device=device), device
        array, spacing, origin, direction = self.volumeToImage(volumeNode)
        prediction = self._segmenter.predict(Image(array, spacing, origin, direction),
                                             make_box(boxLo, boxHi, sliceAxis))
        return self.writeResult(prediction.mask.astype("uint8"), segmentationNode, segmentId, volumeNode)


#
# InteractiveRefineTest
#


class InteractiveRefineTest(ScriptedLoadableModuleTest):
    """Smoke tests of the Slicer adapter (no network, no torch needed)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_InteractiveRefine_geometry()
        self.setUp()
        self.test_InteractiveRefine_segment_roundtrip()
        self.setUp()
        self.test_InteractiveRefine_logic()

    def _makeVolume(self):
        """A small volume with anisotropic spacing and a rotated orientation."""
        import numpy as np

        array = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)  # (K, J, I)
        spacing = np.array([0.5, 0.75, 2.0])
        direction_ras = np.array([[0.0, -1.0, 0.0],
                                  [1.0, 0.0, 0.0],
                                  [0.0, 0.0, 1.0]])  # columns: I, J, K axes in RAS (rotated 90 deg)
        origin_ras = np.array([10.0, -20.0, 30.0])
        ijkToRas = np.eye(4)
        ijkToRas[:3, :3] = direction_ras @ np.diag(spacing)
        ijkToRas[:3, 3] = origin_ras
        volumeNode = slicer.util.addVolumeFromArray(array, ijkToRas, "InteractiveRefineTestVolume")
        return volumeNode, array, spacing, direction_ras, origin_ras, ijkToRas

    def test_InteractiveRefine_geometry(self):
        import numpy as np

        from InteractiveRefineLib import slicer_bridge

        self.delayDisplay("Volume to image (RAS -> LPS)")
        volumeNode, array, spacing, direction_ras, origin_ras, ijkToRas = self._makeVolume()
        image, imageSpacing, origin_lps, direction_lps = slicer_bridge.volume_to_image(volumeNode)
        flip = np.diag([-1.0, -1.0, 1.0])
        np.testing.assert_array_equal(image, array)
        np.testing.assert_allclose(imageSpacing, spacing)
        np.testing.assert_allclose(origin_lps, flip @ origin_ras)
        np.testing.assert_allclose(direction_lps, flip @ direction_ras, atol=1e-12)

        self.delayDisplay("Image to volume round trip")
        copyNode = slicer_bridge.image_to_volume(image, imageSpacing, origin_lps, direction_lps, "copy")
        np.testing.assert_array_equal(slicer.util.arrayFromVolume(copyNode), array)
        np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(_ijkToRasMatrix(copyNode)), ijkToRas, atol=1e-9)
        self.delayDisplay("Geometry test passed")

    def test_InteractiveRefine_segment_roundtrip(self):
        import numpy as np

        self.delayDisplay("Mask and probability to segment")
        volumeNode = self._makeVolume()[0]
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        mask = np.zeros((4, 5, 6), np.uint8)
        mask[1:3, 2:4, 1:5] = 1

        logic = InteractiveRefineLogic()
        segmentId = logic.writeResult(mask, segmentationNode, "organ", volumeNode)
        self.assertEqual(segmentId, "organ")
        from InteractiveRefineLib import slicer_bridge

        np.testing.assert_array_equal(slicer_bridge.segment_to_labelmap(segmentationNode, segmentId, volumeNode), mask)

        probability = np.where(mask > 0, 0.9, 0.1).astype(np.float32)
        probability[1, 2, 1] = 0.2  # below threshold: removed from the segment
        logic.writeResult(probability, segmentationNode, segmentId, volumeNode)
        expected = mask.copy()
        expected[1, 2, 1] = 0
        actual = slicer_bridge.segment_to_labelmap(segmentationNode, segmentId, volumeNode)
        np.testing.assert_array_equal(actual, expected)

        with self.assertRaises(ValueError):
            logic.writeResult(np.zeros((2, 2, 2), np.uint8), segmentationNode, segmentId, volumeNode)
        self.delayDisplay("Segment round trip passed")

    def test_InteractiveRefine_logic(self):
        import numpy as np

        self.delayDisplay("Logic with a stand-in predictor")
        volumeNode = self._makeVolume()[0]
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = InteractiveRefineLogic()
        self.assertIsInstance(logic.missingDependencies(), list)
        self.assertTrue(os.path.isdir(logic.modelsPath()))

        def predict(array, spacing, origin, direction):
            return (array > array.mean()).astype(np.float32)

        segmentId = logic.run(volumeNode, segmentationNode, None, predict)
        self.assertTrue(segmentationNode.GetSegmentation().GetSegment(segmentId) is not None)
        array = slicer.util.arrayFromVolume(volumeNode)
        from InteractiveRefineLib import slicer_bridge

        np.testing.assert_array_equal(slicer_bridge.segment_to_labelmap(segmentationNode, segmentId, volumeNode),
                                      (array > array.mean()).astype(np.uint8))
        self.delayDisplay("Logic test passed")


def _ijkToRasMatrix(volumeNode):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return matrix
