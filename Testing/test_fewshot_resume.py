"""Resumable training: N steps in one go equal N/2 steps + checkpoint + resume for N/2, bit for bit (CPU)."""
import json

import numpy as np
import pytest
import torch

from FewShotSegLib.training.checkpoint import read_checkpoint
from FewShotSegLib.training.episodes import Volume
from FewShotSegLib.training.train import TrainConfig, train_rpnet
from InteractiveRefineLib.core.errors import ModelError

TINY = dict(widths=(4, 8, 8), features=8, cre_features=8, radius=1)
S = 32


def tiny_volumes():
    rng = np.random.default_rng(0)
    vols = []
    for i in range(2):
        img = torch.from_numpy(rng.normal(size=(6, 1, S, S)).astype(np.float32))
        lab = torch.zeros(6, S, S, dtype=torch.long)
        lab[1:5, 8 + i:20, 6:18 + i] = 1
        img[:, 0][lab == 1] += 2.0
        sp = {k: np.zeros((S, S), int) for k in range(6)}
        for k in sp:
            sp[k][4:14, 4:14] = 1
            sp[k][16:28, 10:26] = 2
        vols.append(Volume(f"v{i}", img, lab, np.ones(6, bool), sp))
    return vols


def weights(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_resume_is_bit_identical_and_checked(tmp_path):
    cfg = TrainConfig(steps=6, batch=2, seed=5, iterations=2)
    vols = tiny_volumes()
    full = train_rpnet(vols, [1], cfg, arch_params=TINY, show_progress=False)
    ck = tmp_path / "checkpoints" / "run.json"
    half = train_rpnet(vols, [1], cfg, arch_params=TINY, show_progress=False, checkpoint=ck, stop_after=3)
    assert half["step"] == 3 and ck.is_file() and ck.with_suffix(".safetensors").is_file()
    meta = json.loads(ck.read_text())
    assert meta["step"] == 3 and len(meta["history"]) == 3 and "sampler_numpy" in meta["rng"]
    # the RNG draws after the checkpoint would differ if any state were lost: disturb the global ones
    torch.manual_seed(123)
    np.random.seed(123)
    rest = train_rpnet(vols, [1], cfg, arch_params=TINY, show_progress=False, resume=ck)
    assert rest["step"] == 6 and rest["history"][:3] == half["history"]
    a, b = weights(full["net"]), weights(rest["net"])
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert rest["history"] == full["history"]
    # a half-trained network is not the full one (the test would pass vacuously otherwise)
    assert not all(torch.equal(a[k], v) for k, v in weights(half["net"]).items())
    # a different config or a corrupted file is refused
    with pytest.raises(ModelError, match="different config"):
        train_rpnet(vols, [1], TrainConfig(steps=6, batch=2, seed=6, iterations=2), arch_params=TINY,
                    show_progress=False, resume=ck)
    blob = bytearray(ck.with_suffix(".safetensors").read_bytes())
    blob[-3] ^= 0xFF
    ck.with_suffix(".safetensors").write_bytes(bytes(blob))
    with pytest.raises(ModelError, match="corrupted"):
        read_checkpoint(ck)


def test_checkpoints_are_written_periodically(tmp_path, monkeypatch):
    from FewShotSegLib.training import train as train_module
    steps = []
    real = train_module.save_checkpoint

    def spy(path, net, opt, sched, sampler, step, history, info):
        steps.append(step)
        return real(path, net, opt, sched, sampler, step, history, info)
    monkeypatch.setattr(train_module, "save_checkpoint", spy)
    cfg = TrainConfig(steps=3, batch=1, iterations=1)
    train_rpnet(tiny_volumes(), [1], cfg, arch_params=TINY, show_progress=False, checkpoint=tmp_path / "c.json",
                checkpoint_seconds=0.0)
    assert steps == [1, 2, 3, 3]          # after every step (interval 0 s here) and once at the end
    steps.clear()
    train_rpnet(tiny_volumes(), [1], cfg, arch_params=TINY, show_progress=False, checkpoint=tmp_path / "c.json")
    assert steps == [3]                   # default interval: minutes, so only the final one in a short run
