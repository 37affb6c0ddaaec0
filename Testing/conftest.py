"""Puts the module folders on sys.path (as Slicer does) and provides the embedded sample data."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for module in ("InteractiveRefine", "FewShotSeg"):
    path = str(ROOT / module)
    if path not in sys.path:
        sys.path.insert(0, path)

# Two torch threads: the machines that run this suite have 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def chaos_sample():
    from InteractiveRefineLib.core.data import DecathlonDataset
    from InteractiveRefineLib.core.sample import sample_dataset
    return DecathlonDataset(sample_dataset("chaos"))


@pytest.fixture(scope="session")
def chaos8(chaos_sample):
    """(image, label) of chaos_8, a held-out test patient of the CHAOS split."""
    return chaos_sample.load("chaos_8")


@pytest.fixture(scope="session")
def segmenter():
    from InteractiveRefineLib.engine.inference import BoxSegmenter
    return BoxSegmenter(device="cpu")
