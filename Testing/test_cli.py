"""The commands end to end on the embedded sample: demo and benchmark outputs, and bad input."""
import json
import shutil

import numpy as np
import pytest

from InteractiveRefineLib.cli import main
from InteractiveRefineLib.core.device import cpu_bf16_supported
from InteractiveRefineLib.core.image_io import read_image
from InteractiveRefineLib.core.sample import sample_dataset
from InteractiveRefineLib.engine.models import models_dir

RECORD_KEYS = {"case", "label", "label_name", "dim", "method", "round", "dice", "jitter", "seconds",
               "scribbled_voxels"}


def test_demo_writes_nifti_png_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = metrics["structures"]
    assert {(r["case"], r["dim"]) for r in rows} >= {("chaos_8", "2d"), ("chaos_8", "3d"), ("totalseg_ct", "3d")}
    kidneys = [r["dice"] for r in rows if r["case"] == "chaos_8" and "kidney" in r["label_name"]]
    assert len(kidneys) == 4 and min(kidneys) > 0.7
    seg = read_image(out / "chaos_8_cnn3d.nii.gz")
    img = read_image(sample_dataset("chaos") / "imagesTr" / "chaos_8.nii.gz")
    assert seg.shape == img.shape and np.allclose(seg.origin, img.origin) and np.allclose(seg.direction, img.direction)
    assert set(np.unique(seg.array)) == {0, 1, 2, 3, 4}
    assert (out / "chaos_8_cnn2d.png").stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no staging leftovers"
    assert "right kidney" in capsys.readouterr().out


def test_benchmark_records_and_summary(tmp_path):
    out = tmp_path / "bench"
    args = ["benchmark", "--dataset", str(sample_dataset("chaos")), "--cases", "chaos_8", "--labels", "2",
            "--slice-step", "6", "--jitter", "2", "--rounds", "2", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    records = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    methods = {"bifseg", "cnn+crf", "cnn", "graphcut", "random_walker", "filled_box"}
    expected = {(d, m, r) for d in ("2d", "3d") for m in methods for r in (0, 1, 2)}
    expected |= {("2d", "bifseg_unsup", 0), ("3d", "bifseg_unsup", 0)}
    assert {(r["dim"], r["method"], r["round"]) for r in records} == expected
    for r in records:
        assert RECORD_KEYS <= set(r) and r["label"] == 2 and r["jitter"] == 2 and 0 <= r["dice"] <= 1
    cnn2d = next(r for r in records if r["dim"] == "2d" and r["method"] == "cnn" and r["round"] == 0)
    assert len(cnn2d["slice_dice"]) == len(cnn2d["slices"]) >= 3 and cnn2d["dice"] > 0.7
    bif3d = {r["round"]: r for r in records if r["dim"] == "3d" and r["method"] == "bifseg"}
    assert 0 == bif3d[0]["scribbled_voxels"] < bif3d[1]["scribbled_voxels"] < bif3d[2]["scribbled_voxels"]
    same = [r["scribbled_voxels"] for r in records if r["dim"] == "3d" and r["round"] == 2
            and r["method"] != "bifseg_unsup"]
    assert len(set(same)) == 1, "every method gets the same scribbles"
    # the trivial baseline is the box itself: its round-0 Dice is the filled box's, measured here
    box_rec = next(r for r in records if r["dim"] == "3d" and r["method"] == "filled_box" and r["round"] == 0)
    assert 0.2 < box_rec["dice"] < 0.8
    summary = (out / "summary.md").read_text()
    assert "filled_box" in summary
    assert "right kidney" in summary and "Rounds to reach Dice 0.90" in summary
    assert (out / "dice.png").stat().st_size > 1000 and (out / "dice_rounds.png").stat().st_size > 1000
    # the views and precision the networks ran with are recorded, so a run of another kind refuses the folder
    saved = json.loads((out / "progress.json").read_text())["config"]
    assert saved["views3d"] == 3 and saved["precision"] == ("bfloat16" if cpu_bf16_supported() else "float32")
    assert main(args + ["--views3d", "1"]) != 0
    assert main(args + ["--precision", "fp32"]) != 0 or not cpu_bf16_supported()


@pytest.mark.parametrize("extra,message", [
    (["--labels", "9"], "unknown label"),
    (["--cases", "chaos_99"], "not in"),
    (["--methods", "cnn,unet"], "unknown method"),
    (["--rounds", "-1"], "--rounds"),
    (["--methods", "cnn,graphcut", "--driver", "bifseg"], "driver"),
])
def test_benchmark_bad_input_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "bench"
    try:
        code = main(["benchmark", "--dataset", str(sample_dataset("chaos")), "--out", str(out)] + extra)
    except SystemExit as exc:  # argparse's own types (usage + message, exit 2)
        code = exc.code
    assert code == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_demo_with_corrupted_model_writes_nothing(tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    shutil.copytree(models_dir(), models)
    w = models / "box3d.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    monkeypatch.setenv("ADAPTIVESEG_MODELS", str(models))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 2
    assert "corrupted" in capsys.readouterr().err
    assert not out.exists()


def test_benchmark_on_a_dataset_never_seen_in_training(tmp_path):
    """Any Decathlon folder works: the TotalSegmentator CT sample (CT, other label ids)."""
    out = tmp_path / "ct"
    assert main(["benchmark", "--dataset", str(sample_dataset("totalseg_ct")), "--labels", "2,3", "--dims", "3d",
                 "--methods", "cnn", "--rounds", "0", "--device", "cpu", "--out", str(out)]) == 0
    records = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["label_name"] for r in records] == ["kidney_right", "kidney_left"]
    assert all(r["dice"] > 0.5 for r in records)


def test_structure_on_one_slice_is_skipped_in_3d_only(chaos8):
    from InteractiveRefineLib.engine.inference import BoxSegmenter
    from InteractiveRefineLib.evaluation.benchmark import benchmark_case
    image, label = chaos8
    one_slice = np.zeros_like(label)
    one_slice[12][label[12] == 2] = 2  # right kidney kept on slice 12 only
    seg = BoxSegmenter(device="cpu")
    records = benchmark_case(image, one_slice, "chaos_8", [2], {2: "right kidney"}, ["cnn"], seg, ["2d", "3d"],
                             rounds=0)
    assert [(r["dim"], r["slices"]) for r in records] == [("2d", [12])]
