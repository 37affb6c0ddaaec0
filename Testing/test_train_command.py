"""The train command's plumbing (not a training run): two steps on the embedded sample write a
loadable model whose manifest records data, split, labels, command and validation."""
import json

from InteractiveRefineLib.cli import main
from InteractiveRefineLib.core.sample import sample_dataset
from InteractiveRefineLib.engine.models import load_model


def test_train_two_steps_writes_a_loadable_model(tmp_path):
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["chaos_8"], "val": ["chaos_36"], "test": []}))
    out = tmp_path / "m" / "tiny.json"
    code = main(["train", "--dataset", str(sample_dataset("chaos")), "--split", str(split), "--dim", "2",
                 "--out", str(out), "--max-iters", "2", "--val-every", "1", "--batch", "2", "--device", "cpu"])
    assert code == 0
    net, manifest = load_model(out)
    assert manifest["architecture"] == "pnet2d" and manifest["training"]["iterations"] == 2
    assert manifest["training"]["labels"] == {"1": "liver", "4": "spleen"}
    assert manifest["training"]["train_cases"] == ["chaos_8"] and manifest["training"]["val_cases"] == ["chaos_36"]
    assert manifest["command"].startswith("python -m InteractiveRefineLib train --dataset")
    assert 0.0 <= manifest["validation"]["dice_mean"] <= 1.0
    assert len(manifest["training"]["history"]) == 2


def test_train_refuses_a_dataset_without_split(tmp_path, capsys):
    code = main(["train", "--dataset", str(sample_dataset("chaos")), "--out", str(tmp_path / "m.json")])
    assert code == 2 and "split" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
