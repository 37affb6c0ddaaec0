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


@pytest.fixture(scope="session")
def propagation_box():
    """The box network as FewShotSeg's propagation and follow use it (cut at its own 0.5)."""
    from FewShotSegLib.engine.propagate import box_network
    return box_network("cpu")


@pytest.fixture
def tiny_box_config(tmp_path):
    """make(name, **fields): a BoxTrainConfig of a tiny box network (8 channels, 32 x 32 input, 1 CPU thread)
    writing under tmp_path/name, for training behaviour tests."""
    from InteractiveRefineLib.engine.inference import DEFAULT_INPUT
    from InteractiveRefineLib.training.train_box import BoxTrainConfig

    def make(name, **fields):
        fields = dict(dict(batch=2, max_iters=4, val_every=1000, warmup=1, threads=1, device="cpu",
                           input=dict(DEFAULT_INPUT, box_channel=True, size2d=[32, 32]),
                           arch_overrides=dict(channels=(8, 8, 8, 8, 8))), **fields)
        return BoxTrainConfig(out=str(tmp_path / name / "m.json"), run_dir=str(tmp_path / name / "ck"), **fields)
    return make
