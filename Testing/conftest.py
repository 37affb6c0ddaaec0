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
def session15_models(tmp_path_factory):
    """{2: pnet2d.json, 3: box3d.json} of the box networks shipped until session 15 (2D: session 11's network,
    cut 0.3; 3D: session 15's snapshot 2700), rebuilt from the committed checkpoints (the same weights and input
    settings). For refinement-guard tests whose real case needs that network's mistakes: the session-16 network
    does not make them on those cases, and a guard must still be shown to work on a real one."""
    from InteractiveRefineLib.training.train_box import install_models
    root = Path(__file__).resolve().parents[1] / "checkpoints"
    p2, _ = install_models(root / "box2d_s11" / "pnet2d_box.json", tmp_path_factory.mktemp("s11"),
                           foreground_threshold=0.3)
    _, p3 = install_models(root / "box2d_s15" / "pnet2d_box.json", tmp_path_factory.mktemp("s15"))
    return {2: p2, 3: p3}


@pytest.fixture(scope="session")
def session15_segmenter(session15_models):
    from InteractiveRefineLib.engine.inference import BoxSegmenter
    return BoxSegmenter(session15_models[2], session15_models[3], device="cpu")


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
