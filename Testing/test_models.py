"""Weights: safetensors + manifest + sha256; corrupted or missing files give ModelError."""
import json

import pytest
import torch

from InteractiveRefineLib.core.data import load_split
from InteractiveRefineLib.core.errors import ModelError
from InteractiveRefineLib.engine.models import ARCHITECTURES, default_model_path, load_model, save_model, sha256_of
from InteractiveRefineLib.engine.networks import build_network


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = build_network("pnet2d")
    path = save_model(net, "pnet2d", tmp_path / "m.json", dict(ARCHITECTURES["pnet2d"]),
                      {"input": {"size2d": [96, 96]}})
    return net, path


def test_roundtrip_is_exact(saved):
    net, path = saved
    loaded, manifest = load_model(path)
    assert manifest["sha256"] == sha256_of(path.with_suffix(".safetensors"))
    assert manifest["parameters"] == 121730
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not loaded.training


def test_corrupted_weights_fail_checksum(saved):
    _, path = saved
    w = path.with_suffix(".safetensors")
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupted"):
        load_model(path)


def test_missing_files(saved, tmp_path):
    _, path = saved
    with pytest.raises(ModelError, match="manifest not found"):
        load_model(tmp_path / "absent.json")
    path.with_suffix(".safetensors").unlink()
    with pytest.raises(ModelError, match="weights not found"):
        load_model(path)


def test_manifest_that_does_not_fit_the_weights(saved):
    _, path = saved
    m = json.loads(path.read_text())
    m["arch_params"]["channels"] = [16, 16, 16, 16, 16]
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(path)
    m["architecture"] = "resnet"
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError, match="unknown architecture"):
        load_model(path)


def test_weights_that_are_not_safetensors(saved):
    _, path = saved
    w = path.with_suffix(".safetensors")
    w.write_bytes(b"\x80\x04pickle-not-allowed")
    m = json.loads(path.read_text())
    m["sha256"] = sha256_of(w)
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError, match="cannot read safetensors"):
        load_model(path)


@pytest.mark.parametrize("dim", [2, 3])
def test_shipped_models_have_complete_manifests(dim):
    path = default_model_path(dim)
    net, manifest = load_model(path)  # verifies the checksum
    for key in ("architecture", "arch_params", "input", "training", "command", "validation", "sha256", "parameters"):
        assert key in manifest, key
    assert manifest["command"].startswith("python -m InteractiveRefineLib train-box")
    assert manifest["input"]["box_channel"] and manifest["input"].get("slicewise", False) == (dim == 3)
    data = manifest["training"]["data"]
    chaos_test = set(load_split("chaos_t2spir")["test"])
    for entry in data["train"]:  # kidneys never seen: CHAOS liver/spleen only, TotalSegmentator less kidneys
        assert not set(entry["cases"]) & chaos_test
        assert entry["dataset"] != "tcia-brain-tumor-progression"
        if entry["dataset"] == "chaos-t2spir":
            assert entry["labels"] == [1, 4]
        if entry["dataset"] == "totalseg-small":
            assert entry["excluded_labels"] == [2, 3]
    train_hip = next(e for e in data["train"] if e["dataset"] == "msd-hippocampus")["cases"]
    eval_hip = next(e for e in data["eval"] if e["dataset"] == "msd-hippocampus")["cases"]
    assert not set(train_hip) & set(eval_hip)
    assert manifest["validation"]["score"] > 0.5


def test_unusable_arch_params_and_bad_manifest_name(saved, tmp_path):
    _, path = saved
    m = json.loads(path.read_text())
    m["arch_params"]["colour"] = "blue"
    path.write_text(json.dumps(m))
    with pytest.raises(ModelError, match="arch_params"):
        load_model(path)
    with pytest.raises(ModelError, match="NAME.json"):
        save_model(build_network("pnet2d"), "pnet2d", tmp_path / "x.safetensors", dict(ARCHITECTURES["pnet2d"]))
