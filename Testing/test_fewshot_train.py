"""Episodes, superpixels and the train command on the embedded sample (a few steps: behaviour, not quality)."""
import json

import numpy as np
import pytest
import torch

from FewShotSegLib.cli import main
from FewShotSegLib.engine.models import load_rpnet
from FewShotSegLib.engine.protocol import CHAOS_GROUPS
from FewShotSegLib.training.episodes import EpisodeSampler, prepare_case_volumes
from FewShotSegLib.training.superpixels import body_mask, superpixels
from InteractiveRefineLib.core.errors import ModelError
from InteractiveRefineLib.core.sample import sample_dataset


@pytest.fixture(scope="module")
def volumes_s2(chaos_sample):
    return prepare_case_volumes(chaos_sample, ["chaos_8", "chaos_36"], 2, CHAOS_GROUPS["lower"])


def test_superpixels_are_organ_sized_regions_inside_the_body(volumes_s2):
    v = volumes_s2[0]
    k = next(iter(v.superpixels))
    img = v.images[k, 0].numpy()
    sp = superpixels(img)
    body = body_mask(img)
    assert sp.max() >= 5
    assert not sp[~body].any()
    sizes = np.bincount(sp.ravel())[1:]
    assert sizes.min() >= 60 and sizes.max() <= 0.25 * body.sum()


def test_setting_two_sampler_never_shows_the_test_organs(volumes_s2):
    for v in volumes_s2:
        kidney = np.isin(v.labels.numpy(), [2, 3]).any((1, 2))
        assert not (kidney & v.allowed).any()
        assert not set(v.superpixels) - set(np.flatnonzero(v.allowed))
    sampler = EpisodeSampler(volumes_s2, base=(1, 4), p_superpixel=0.5, seed=3)
    assert set(sampler.organ_slices) == {1, 4}
    for lab, per_vol in sampler.organ_slices.items():
        for vi, z in per_vol:
            assert volumes_s2[vi].allowed[z].all()
    ep = sampler.sample(6)
    assert ep["support_img"].shape == ep["query_img"].shape == (6, 1, 128, 128)
    assert set(torch.unique(ep["query_mask"]).tolist()) <= {0.0, 1.0}
    assert (ep["support_mask"].sum((1, 2, 3)) > 0).all()


def test_train_command_writes_a_checked_model(tmp_path):
    data = sample_dataset("chaos")
    rc = main(["train", "--dataset", str(data), "--default", "--exclude", "chaos_36", "--steps", "3", "--batch", "2",
               "--out", str(tmp_path), "--device", "cpu"])
    assert rc == 0
    net, manifest = load_rpnet(tmp_path / "default.json")
    t = manifest["training"]
    assert t["cases"] == ["chaos_8"] and t["supervised_labels"] == [1, 2, 3, 4] and t["config"]["steps"] == 3
    assert manifest["architecture"] == "rpnet2d" and "train --dataset" in manifest["command"]
    w = tmp_path / "default.safetensors"
    data_bytes = bytearray(w.read_bytes())
    data_bytes[-5] ^= 0xFF
    w.write_bytes(bytes(data_bytes))
    with pytest.raises(ModelError, match="corrupted"):
        load_rpnet(tmp_path / "default.json")
    assert json.loads((tmp_path / "default.json").read_text())["name"] == "default"
