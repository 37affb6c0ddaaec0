"""Encoder pretraining on external data only, and per-fold training started from it (a few steps: behaviour)."""
import json
from pathlib import Path

import pytest
import torch

from FewShotSegLib.cli import main
from FewShotSegLib.engine.models import load_rpnet
from FewShotSegLib.training.pretrain import SOURCES, Source, external_volumes
from InteractiveRefineLib.core.errors import DatasetError
from InteractiveRefineLib.core.sample import sample_dataset

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "msd-hippocampus").is_dir(), reason="../shared/data not present")


def test_benchmark_and_evaluation_only_data_are_refused(tmp_path):
    assert not any("chaos" in s.folder or "tcia" in s.folder for s in SOURCES)
    for bad in ("chaos-t2spir", "tcia-brain-tumor-progression"):
        (tmp_path / bad).mkdir()
        with pytest.raises(DatasetError, match="never used"):
            external_volumes(tmp_path, [Source(bad)])
        assert main(["pretrain", "--data", str(tmp_path), "--sources", bad, "--steps", "1",
                     "--out", str(tmp_path / "x.json")]) == 2


@needs_data
def test_pretrain_then_train_from_it(tmp_path):
    vols, base = external_volumes(DATA, [s for s in SOURCES if s.folder in ("msd-hippocampus", "totalseg-small")],
                                  max_cases=1, slice_step=8)
    # labels of different datasets never share an id; the CHAOS test organs are never supervised classes
    assert {b // 1000 for b in base} == {1, 2} and not {2001, 2002, 2003, 2005} & set(base)
    assert {v.case_id.split("/")[-1] for v in vols if v.case_id.startswith("msd")} == {"axis0", "axis1", "axis2"}
    out = tmp_path / "pre.json"
    rc = main(["pretrain", "--data", str(DATA), "--sources", "msd-hippocampus,sct-spinalcord", "--max-cases", "1",
               "--slice-step", "8", "--steps", "2", "--batch", "2", "--out", str(out), "--checkpoint-dir",
               str(tmp_path / "ck"), "--device", "cpu"])
    assert rc == 0 and (tmp_path / "ck" / "pre.json").is_file()
    pre, manifest = load_rpnet(out)
    assert manifest["pretraining"]["datasets"] == ["msd-hippocampus", "sct-spinalcord"]
    assert manifest["pretraining"]["supervised_classes"] == 4
    # a further pretraining stage (pretrain --init) starts from those weights, with its own schedule
    rc = main(["pretrain", "--data", str(DATA), "--sources", "msd-hippocampus", "--max-cases", "1", "--slice-step",
               "8", "--steps", "2", "--batch", "2", "--init", str(out), "--stop-after", "0", "--out",
               str(tmp_path / "pre2.json"), "--checkpoint-dir", str(tmp_path / "ck3"), "--device", "cpu"])
    from FewShotSegLib.training.checkpoint import read_checkpoint
    meta, tensors = read_checkpoint(tmp_path / "ck3" / "pre2.json")
    assert rc == 0 and meta["step"] == 0 and meta["init"]["sha256"] == manifest["sha256"]
    assert all(torch.equal(tensors[f"net.{k}"], v) for k, v in pre.state_dict().items())
    # train --init starts from the pretrained weights: after 0 of 1 steps (stopped) the checkpoint holds them
    data = sample_dataset("chaos")
    rc = main(["train", "--dataset", str(data), "--default", "--exclude", "chaos_36", "--steps", "1", "--batch", "1",
               "--init", str(out), "--stop-after", "0", "--checkpoint-dir", str(tmp_path / "ck2"), "--out",
               str(tmp_path / "m"), "--device", "cpu"])
    assert rc == 0 and not (tmp_path / "m" / "default.json").exists()
    meta, tensors = read_checkpoint(tmp_path / "ck2" / "default.json")
    assert meta["step"] == 0 and meta["init"]["sha256"] == manifest["sha256"]
    sd = pre.state_dict()
    assert all(torch.equal(tensors[f"net.{k}"], v) for k, v in sd.items())
    # ... and the finished model records where it started
    rc = main(["train", "--dataset", str(data), "--default", "--exclude", "chaos_36", "--steps", "1", "--batch", "1",
               "--resume", str(tmp_path / "ck2" / "default.json"), "--checkpoint-dir", str(tmp_path / "ck2"),
               "--out", str(tmp_path / "m"), "--device", "cpu"])
    assert rc == 0
    t = json.loads((tmp_path / "m" / "default.json").read_text())["training"]
    assert t["init"]["sha256"] == manifest["sha256"] and t["resumed_from"].endswith("default.json")
