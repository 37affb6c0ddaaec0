"""Slicer <-> numpy conversions for FewShotSeg.

Together with InteractiveRefineLib.slicer_bridge this is the only FewShotSegLib module that
imports slicer; it can only be imported inside 3D Slicer. The conversions themselves
(RAS <-> LPS geometry, segment <-> mask) live in InteractiveRefineLib.slicer_bridge and are
re-exported here; the InteractiveRefine module folder is on sys.path because FewShotSeg
declares it as a dependency.
"""
from typing import List, Sequence, Tuple

import numpy as np
import slicer  # noqa: F401  (documents that this module needs Slicer)

from InteractiveRefineLib.errors import PromptError
from InteractiveRefineLib.slicer_bridge import (  # noqa: F401  (re-exported)
    ensure_segment,
    image_to_volume,
    labelmap_to_segment,
    probability_to_segment,
    segment_to_labelmap,
    volume_to_image,
)


def support_set(pairs: Sequence[Tuple[object, object, str]]) -> List[Tuple[tuple, np.ndarray]]:
    """Convert annotated examples to core inputs.

    pairs: (volumeNode, segmentationNode, segmentId) triples.
    Returns [(image, mask_kji)], image being volume_to_image(volumeNode) and mask_kji the
    segment as a uint8 0/1 array on that volume's grid.
    """
    out = []
    for volumeNode, segmentationNode, segmentId in pairs:
        image = volume_to_image(volumeNode)
        mask = segment_to_labelmap(segmentationNode, segmentId, volumeNode)
        if not mask.any():
            raise PromptError(f"segment {segmentId!r} of {segmentationNode.GetName()} is empty on "
                             f"{volumeNode.GetName()}; each support example needs a non-empty mask")
        out.append((image, mask))
    return out
