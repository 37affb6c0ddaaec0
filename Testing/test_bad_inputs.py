"""The catalogue of bad inputs (issue 14): each is refused with a project error naming the problem, before any
computing; from a command line with exit code 2, no traceback, and no file written or changed.

Read the two tables: CLI_CASES (command lines) and API_CASES (library calls). Each row is
(case name, what is run, expected fragment of the message).
"""
import json
import os
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from FewShotSegLib import cli as fs_cli
from InteractiveRefineLib import cli as ir_cli
from InteractiveRefineLib.core.errors import AdaptiveSegError, ResourceError
from InteractiveRefineLib.core.image_io import Image, read_image, write_image
from InteractiveRefineLib.core.prompts import Box, make_box
from InteractiveRefineLib.core.sample import sample_dataset

CHAOS = sample_dataset("chaos")


@pytest.fixture
def files(tmp_path):
    """Copies of the inputs in tmp_path (so that 'nothing changed' covers them) and broken variants."""
    f = {"support": tmp_path / "s.nii.gz", "label": tmp_path / "s_lab.nii.gz", "query": tmp_path / "q.nii.gz"}
    shutil.copy(CHAOS / "imagesTr/chaos_36.nii.gz", f["support"])
    shutil.copy(CHAOS / "labelsTr/chaos_36.nii.gz", f["label"])
    shutil.copy(CHAOS / "imagesTr/chaos_8.nii.gz", f["query"])
    data = f["query"].read_bytes()
    (tmp_path / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    img = sitk.ReadImage(str(f["query"]))
    sitk.WriteImage(img, str(tmp_path / "plain.nii"))
    raw = (tmp_path / "plain.nii").read_bytes()
    (tmp_path / "trunc.nii").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "plain.nii").unlink()
    a = sitk.GetArrayFromImage(img).astype(np.float32)
    a[3, 4, 5], a[6, 7, 8] = np.nan, np.inf
    sitk.WriteImage(sitk.GetImageFromArray(a), str(tmp_path / "nan.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.full((8, 32, 32), 7, np.int16)), str(tmp_path / "const.nii.gz"))
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    (tmp_path / "ro").mkdir()
    os.chmod(tmp_path / "ro", 0o555)
    yield {k: str(v) for k, v in f.items()} | {"tmp": tmp_path}
    os.chmod(tmp_path / "ro", 0o755)


def seg(**kw):
    """A FewShotSeg `segment` command line over the fixture files; keywords replace arguments."""
    args = {"--support-image": "{support}", "--support-label": "{label}", "--slice": "18", "--query": "{query}",
            "--out": "{tmp}/out.nii.gz", "--device": "cpu"}
    args.update({"--" + k.replace("_", "-"): v for k, v in kw.items()})
    return ["fs", "segment"] + [x for kv in args.items() for x in kv]


CLI_CASES = [
    # 1. truncated images, 2. NaN / Inf as stored, 3. constant image
    ("truncated .nii.gz", seg(query="{tmp}/trunc.nii.gz"), "truncated"),
    ("truncated .nii", seg(query="{tmp}/trunc.nii"), "truncated"),
    ("NaN/Inf in a float NIfTI", seg(query="{tmp}/nan.nii.gz"), "NaN or Inf values (2 voxels"),
    ("constant query image", seg(query="{tmp}/const.nii.gz"), "query image is constant"),
    # 5. outputs validated first, 6. never an input
    ("--out parent is a file", seg(out="{tmp}/afile/out.nii.gz"), "is a file, not a folder"),
    ("--out is a folder", seg(out="{tmp}/adir"), "is a folder"),
    ("--out unsupported extension", seg(out="{tmp}/out.png"), "unsupported file type"),
    ("--out .mhd (a detached data file)", seg(out="{tmp}/out.mhd"), "unsupported file type"),
    ("--out in a read-only folder", seg(out="{tmp}/ro/out.nii.gz"), "not writable"),
    ("--out equal to the query", seg(out="{query}"), "is also an input"),
    ("benchmark --out an existing file", ["ir", "benchmark", "--dataset", str(CHAOS), "--out", "{tmp}/afile"],
     "is an existing file"),
    ("demo --out an existing file", ["ir", "demo", "--out", "{tmp}/afile"], "is an existing file"),
    ("few-shot demo --out an existing file", ["fs", "demo", "--out", "{tmp}/afile"], "is an existing file"),
    ("evaluate --out an existing file", ["fs", "evaluate", "--dataset", str(CHAOS), "--out", "{tmp}/afile"],
     "is an existing file"),
    ("analyze-logs --out a read-only folder", ["ir", "analyze-logs", "{tmp}", "--out", "{tmp}/ro"], "not writable"),
    # 7. budgets and other numbers
    ("--adapt-seconds -5", seg(adapt_seconds="-5"), "time budget in seconds > 0"),
    ("--adapt-seconds 0", seg(adapt_seconds="0"), "time budget in seconds > 0"),
    ("--threads -1", seg(threads="-1"), "threads >= 0"),
    ("train --max-minutes -5", ["ir", "train", "--dataset", str(CHAOS), "--out", "{tmp}/m.json", "--max-minutes",
                                "-5"], "expected a number > 0"),
    ("panel-timing --tick 0", ["ir", "panel-timing", "--tick", "0", "--out", "{tmp}/pt"], "expected a number > 0"),
    ("analyze-logs --dice 1.5", ["ir", "analyze-logs", "{tmp}", "--dice", "1.5"], "lies in (0, 1]"),
    # 8. prompts: one rule (whole numbers)
    ("--slice 11.5", seg(slice="11.5"), "invalid int value"),
    ("--label liver", seg(label="liver"), "invalid int value"),
    ("benchmark --labels liver", ["ir", "benchmark", "--dataset", str(CHAOS), "--labels", "liver", "--out",
                                  "{tmp}/b"], "comma-separated integers"),
    # 11. ranges
    ("reversed --range", seg(range="10:5"), "0 <= FIRST <= LAST"),
    ("--range past the volume", seg(range="2:99"), "query slice range 2..99 is outside the query volume (0..33)"),
    ("large-volume --shape with a negative size", ["ir", "large-volume", "--shape=-1,4,4", "--out", "{tmp}/lv"],
     "three whole numbers >= 1"),
    ("train-box --out not a manifest", ["ir", "train-box", "--out", "{tmp}/m.pt", "--run-dir", "{tmp}/ck"],
     "m.pt: unsupported file type; use one of .json"),
    ("train-box --run-dir a file", ["ir", "train-box", "--out", "{tmp}/m.json", "--run-dir", "{tmp}/afile"],
     "--run-dir"),
    ("train-box --val-every 0", ["ir", "train-box", "--val-every", "0", "--out", "{tmp}/m.json"],
     "expected a whole number > 0"),
    ("train --batch 0", ["ir", "train", "--dataset", str(CHAOS), "--out", "{tmp}/m.json", "--batch", "0"],
     "expected a whole number > 0"),
    ("few-shot train --steps 0", ["fs", "train", "--dataset", str(CHAOS), "--steps", "0", "--out", "{tmp}/m"],
     "expected a whole number > 0"),
    ("few-shot pretrain --batch -2", ["fs", "pretrain", "--batch", "-2", "--out", "{tmp}/p.json"],
     "expected a whole number > 0"),
    ("few-shot time --repeats 0", ["fs", "time", "--dataset", str(CHAOS), "--support", "chaos_36", "--query",
                                   "chaos_8", "--repeats", "0"], "expected a whole number > 0"),
    ("--adapt-steps -1", seg(adapt_steps="-1"), "expected a whole number >= 0"),
    ("train-box --threads -1", ["ir", "train-box", "--threads", "-1", "--out", "{tmp}/m.json"], "threads >= 0"),
    # propagation flags where nothing propagates, and a propagation range without the annotated slice
    ("--no-box-network without --propagate or --follow", seg() + ["--no-box-network"],
     "--no-box-network: only same-scan propagation reads this"),
    ("--propagate-mode without --propagate or --follow", seg(propagate_mode="chain"), "only same-scan propagation"),
    ("--follow --no-dark-stop with a given range", seg(range="4:20") + ["--follow", "--no-dark-stop"],
     "concerns the automatic range"),
    # evaluate: counts, and options the chosen branch (here pair evaluation: the sample is not the protocol) ignores
    ("evaluate --pairs -1", ["fs", "evaluate", "--dataset", str(CHAOS), "--pairs", "-1", "--out", "{tmp}/e"],
     "expected a whole number >= 0"),
    ("evaluate --validate -1", ["fs", "evaluate", "--dataset", str(CHAOS), "--validate", "-1", "--out", "{tmp}/e"],
     "expected a whole number >= 0"),
    ("evaluate --train in pair evaluation", ["fs", "evaluate", "--dataset", str(CHAOS), "--train", "--out",
                                             "{tmp}/e"], "--train: read by the CHAOS protocol only"),
    ("evaluate --setting in pair evaluation", ["fs", "evaluate", "--dataset", str(CHAOS), "--setting", "1",
                                               "--out", "{tmp}/e"], "--setting: read by the CHAOS protocol only"),
    ("evaluate --steps without --train", ["fs", "evaluate", "--dataset", str(CHAOS), "--steps", "5", "--out",
                                          "{tmp}/e"], "nothing is trained"),
    ("--follow --no-box3d with the automatic range", seg() + ["--follow", "--no-box3d"],
     "--follow's automatic range has no 3D pass"),
    ("--follow --no-regrow-stop --no-box-network", seg() + ["--follow", "--no-regrow-stop", "--no-box-network"],
     "which --no-box-network turns off"),
    ("--box-precision without --propagate or --follow", seg() + ["--box-precision", "fp32"],
     "--box-precision: only same-scan propagation reads this"),
    ("--follow --box-precision --no-box-network", seg() + ["--follow", "--box-precision", "fp32", "--no-box-network"],
     "--box-precision concerns the box network"),
    ("--adapt-steps without --adapt", seg(adapt_steps="3"), "--adapt-steps: settings of the exemplar adaptation"),
    ("evaluate --adapt-seconds without --adapt", ["fs", "evaluate", "--dataset", str(CHAOS), "--adapt-seconds", "5",
                                                  "--out", "{tmp}/e"], "which runs only with --adapt"),
    ("--propagate --range all", seg(query="{support}", range="all") + ["--propagate"], "not all"),
    ("evaluate --follow-box in pair evaluation", ["fs", "evaluate", "--dataset", str(CHAOS), "--pairs", "2",
                                                  "--follow-box", "--out", "{tmp}/e"], "--follow-box is measured on"),
    ("evaluate --follow --follow-box", ["fs", "evaluate", "--dataset", str(CHAOS), "--follow", "--follow-box",
                                        "--out", "{tmp}/e"], "give one of them"),
    ("evaluate --box-precision without --follow-box", ["fs", "evaluate", "--dataset", str(CHAOS), "--box-precision",
                                                       "fp32", "--out", "{tmp}/e"], "only --follow-box uses"),
    ("train-box --init-from a missing model", ["ir", "train-box", "--init-from", "{tmp}/none.json", "--out",
                                               "{tmp}/m.json", "--run-dir", "{tmp}/ck"], "model manifest not found"),
    ("train-box --union-fraction 1.5", ["ir", "train-box", "--union-fraction", "1.5", "--out", "{tmp}/m.json"],
     "expected a number in [0, 1]"),
    ("train-box --ring-share 2", ["ir", "train-box", "--ring-share", "2", "--out", "{tmp}/m.json"],
     "expected a number in [0, 1]"),
    ("train-box --group-weights of an unknown group", ["ir", "train-box", "--group-weights", "kidney=1", "--out",
                                                       "{tmp}/m.json"], "GROUP one of chaos"),
    ("train-box --group-weights all 0", ["ir", "train-box", "--group-weights",
                                         "chaos=0,totalseg=0,pseudo=0,hippocampus=0,fetal=0,adult_brain=0,cord=0,"
                                         "spleen_ct=0", "--out", "{tmp}/m.json"], "every group weight is 0"),
    ("train-box --sample-workers -1", ["ir", "train-box", "--sample-workers", "-1", "--out", "{tmp}/m.json"],
     "expected a whole number >= 0"),
    ("train-box --stop-after-minutes -1", ["ir", "train-box", "--stop-after-minutes", "-1", "--out", "{tmp}/m.json"],
     "expected a number >= 0"),
    ("train-box --install-cut3d 1", ["ir", "train-box", "--install", "--install-cut3d", "1", "--out", "{tmp}/m.json"],
     "expected a number in (0, 1)"),
    ("train-box --install-cut2d 0", ["ir", "train-box", "--install", "--install-cut2d", "0", "--out", "{tmp}/m.json"],
     "expected a number in (0, 1)"),
    ("train-box --precision fp16", ["ir", "train-box", "--precision", "fp16", "--out", "{tmp}/m.json"],
     "invalid choice: 'fp16'"),
    ("train-box --install-cut2d without --install", ["ir", "train-box", "--install-cut2d", "0.3", "--out",
                                                     "{tmp}/m.json"], "they need --install"),
    ("--propagate through a range without the slice", seg(query="{support}", range="0:3") + ["--propagate"],
     "propagation range 0..3 must hold the annotated slice 18"),
]


def _snapshot(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def no_compute(monkeypatch):
    """Model loading is where computing starts: any case that reaches it fails the test."""
    def refuse(*a, **k):
        raise AssertionError("computing started before the bad input was refused")
    monkeypatch.setattr("FewShotSegLib.engine.segment.FewShotSegmenter.__init__", refuse)
    monkeypatch.setattr("InteractiveRefineLib.engine.inference.BoxSegmenter.__init__", refuse)


def _as_root_emulate_permissions(monkeypatch):
    """Root may write anywhere; judge folders by their permission bits, as for any user."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m, **k: real(p, m, **k) and not (
            m & os.W_OK and not os.stat(p).st_mode & 0o222))


@pytest.mark.parametrize("name,argv,fragment", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_refuses(name, argv, fragment, files, no_compute, monkeypatch, capsys):
    _as_root_emulate_permissions(monkeypatch)
    tool, args = argv[0], [a.format(**files) for a in argv[1:]]
    before = _snapshot(files["tmp"])
    try:
        code = (fs_cli.main if tool == "fs" else ir_cli.main)(args)
    except SystemExit as exc:  # argparse: usage + message, exit 2
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and fragment in err, err
    assert "Traceback" not in err
    assert _snapshot(files["tmp"]) == before, "a file was written or changed"


def test_train_box_install_before_any_validation_says_so(tmp_path, monkeypatch, capsys):
    """A run stopped before its first validation has no model yet (train_box gives None): --install says so."""
    monkeypatch.setattr("InteractiveRefineLib.training.train_box.train_box", lambda cfg, resume=False: None)
    code = ir_cli.main(["train-box", "--out", str(tmp_path / "m.json"), "--run-dir", str(tmp_path / "ck"),
                        "--val-every", "500", "--install"])
    err = capsys.readouterr().err
    assert code == 2 and "no model to install yet" in err and "--val-every 500" in err, err


def test_train_box_passes_the_precision_and_installs_the_given_cuts(tmp_path, monkeypatch):
    """--precision reaches the training; --install-cut2d / --install-cut3d reach install_models (the shipped
    manifests' cuts: train_box_models.sh)."""
    seen = []
    monkeypatch.setattr("InteractiveRefineLib.training.train_box.train_box",
                        lambda cfg, resume=False: seen.append(cfg.precision) or tmp_path / "b")
    monkeypatch.setattr("InteractiveRefineLib.training.train_box.install_models",
                        lambda best, **kw: seen.append((best, kw)) or [])
    assert ir_cli.main(["train-box", "--out", str(tmp_path / "m.json"), "--run-dir", str(tmp_path / "ck"), "--install",
                        "--install-cut2d", "0.3", "--install-cut3d", "0.6", "--precision", "bf16"]) == 0
    assert seen == ["bf16", (tmp_path / "b", dict(foreground_threshold=0.3, foreground_threshold_3d=0.6))]


def test_cross_modality_is_warned(files, no_compute, capsys):
    """4. A CT query for an MR support: a clear warning (the segmentation itself is not stopped)."""
    ct = sample_dataset("totalseg_ct") / "imagesTr" / "totalseg_ct.nii.gz"
    fs_cli.main([a.format(**files) for a in seg(query=str(ct), slice="999")[1:]])
    err = capsys.readouterr().err
    assert "warning: the support looks like MR" in err and "query like CT" in err


def test_same_modality_is_not_warned():
    from FewShotSegLib.engine.intensity_check import modality_warning
    mr = read_image(CHAOS / "imagesTr/chaos_8.nii.gz")
    assert modality_warning(read_image(CHAOS / "imagesTr/chaos_36.nii.gz"), mr) is None


# --- library calls --------------------------------------------------------------------------------------------
def _session(image, segmenter):
    from InteractiveRefineLib.engine.session import InteractiveSession
    return InteractiveSession(image, segmenter, device="cpu")


def _chaos8_session(chaos8, segmenter, box=Box((10, 100, 60), (20, 160, 120))):
    s = _session(chaos8[0], segmenter)
    s.set_box(box)
    return s


def _aniso(chaos8, spacing):
    img = chaos8[0]
    return Image(img.array, spacing, img.origin, img.direction)


def _constant_under_box(chaos8):
    a = chaos8[0].array.copy()
    a[10:20, 100:160, 60:120] = 5
    return chaos8[0].with_array(a)


API_CASES = [
    ("float box bound", lambda c, s: make_box((10, 100, 60.7), (20, 160, 120)), "whole numbers"),
    ("NaN box bound", lambda c, s: make_box((10, float("nan"), 60), (20, 160, 120)), "finite whole numbers"),
    ("float bound in a Box", lambda c, s: _session(c[0], s).set_box(Box((10, 100, 60.5), (20, 160, 120))),
     "whole numbers"),
    ("string label id", lambda c, s: _support(c, ["liver"]), "support label id must be whole numbers"),
    ("support slice 11.5", lambda c, s: _support(c, [1], 11.5), "support slice must be whole numbers"),
    ("dataset label 'liver'", lambda c, s: _chaos().check_labels(["liver"]), "label id must be whole numbers"),
    ("refine time_budget -1", lambda c, s: _chaos8_session(c, s).refine("unsupervised", time_budget=-1),
     "time budget must be a positive"),
    ("refine time_budget 0", lambda c, s: _chaos8_session(c, s).refine("unsupervised", time_budget=0),
     "time budget must be a positive"),
    ("constant image", lambda c, s: _session(c[0].with_array(np.zeros_like(c[0].array)), s).set_box(
        Box((10, 100, 60), (20, 160, 120))), "constant (0) inside the box"),
    ("constant region under the box", lambda c, s: _session(_constant_under_box(c), s).set_box(
        Box((10, 100, 60), (20, 160, 120))), "constant (5) inside the box"),
    ("0.05 x 0.05 x 80 mm, 3D box", lambda c, s: _session(_aniso(c, (0.05, 0.05, 80.0)), s).set_box(
        Box((10, 100, 60), (20, 160, 120))), "too anisotropic for a 3D box"),
    ("0.05 x 0.05 x 80 mm, coronal 2D box", lambda c, s: _session(_aniso(c, (0.05, 0.05, 80.0)), s).set_box(
        make_box((10, 130, 60), (20, 131, 120), axis=1)), "too anisotropic for a 2D box"),
    ("1e-4 mm slices, 3D box", lambda c, s: _session(_aniso(c, (1.5, 1.5, 1e-4)), s).set_box(
        Box((10, 100, 60), (20, 160, 120))), "too anisotropic"),
    ("save_mask to a folder", lambda c, s: _chaos8_session(c, s).save_mask(c[2]), "is a folder"),
    ("save_mask under a file", lambda c, s: _chaos8_session(c, s).save_mask(c[2] / "f" / "m.nii.gz"),
     "is a file, not a folder"),
    ("save_mask .png", lambda c, s: _chaos8_session(c, s).save_mask(c[2] / "m.png"), "unsupported file type"),
    ("write_image, writer failure", lambda c, s: _failing_write(c), "cannot write"),
    ("query range reversed (API)", lambda c, s: _segment_range(c, (10, 6)), "empty or reversed"),
    ("constant support image", lambda c, s: _constant_support(), "support image is constant"),
]


def _constant_support():
    from FewShotSegLib.engine.segment import make_supports
    img, lab = _chaos().load("chaos_36")
    return make_supports(img.with_array(np.full(img.shape, 3.0, np.float32)), lab, 18, [1])


def _chaos():
    from InteractiveRefineLib.core.data import DecathlonDataset
    return DecathlonDataset(CHAOS)


def _support(c, labels, slice_index=18):
    from FewShotSegLib.engine.segment import make_supports
    img, lab = _chaos().load("chaos_36")
    return make_supports(img, lab, slice_index, labels)


def _segment_range(c, slices):
    from FewShotSegLib.engine.segment import FewShotSegmenter
    seg = FewShotSegmenter.__new__(FewShotSegmenter)  # the range is checked before any network use
    return seg.segment(_support(c, [1]), c[0], slices=slices)


def _failing_write(c):
    """SimpleITK cannot write a .mhd with this detached header name: the message names the target only."""
    import unittest.mock as mock
    with mock.patch("SimpleITK.WriteImage", side_effect=RuntimeError("ITK ERROR: /x/.tmp-abc.nii.gz")):
        write_image(c[0], c[2] / "m.nii.gz")


@pytest.mark.parametrize("name,call,fragment", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_refuses(name, call, fragment, chaos8, segmenter, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(AdaptiveSegError) as exc:
        call((chaos8[0], chaos8[1], tmp_path), segmenter)
    assert fragment in str(exc.value)
    assert ".tmp-" not in str(exc.value)  # never the hidden staging file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"], "nothing written"


def test_support_slice_given_as_float_whole_number_is_that_slice(chaos8):
    """11.0 is slice 11 (it used to be reported as outside the volume)."""
    assert _support(chaos8, [1], 18.0)[0].slice_index == 18


def test_range_is_reported_back_inclusive(files, monkeypatch, capsys):
    """`--range 2:31` is reported as [2, 31] (it was [2, 32]), as the user gave it."""
    from FewShotSegLib.engine import segment

    class Stub:
        def __init__(self, *a, **k):
            pass

        def segment(self, supports, q_img, slices=None, **kw):
            labels = np.zeros(q_img.shape, np.int16)
            return segment.Segmentation(labels, {1: labels.astype(np.float32)}, slices)
    monkeypatch.setattr(segment, "FewShotSegmenter", Stub)
    assert fs_cli.main([a.format(**files) for a in seg(range="2:31", label="1")[1:]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["slices"] == [2, 31] and report["warnings"] == []


def test_memory_guard_refuses_before_computing(chaos8, segmenter, monkeypatch):
    """A box whose estimated peak exceeds the limit is refused, naming the estimate; the session is unchanged.
    The same box passes under the default limit."""
    from InteractiveRefineLib.engine import memory
    box = Box((0, 0, 0), chaos8[0].shape)
    s = _session(chaos8[0], segmenter)
    from InteractiveRefineLib.engine.inference import plan_for
    net, manifest = segmenter.model(3, box=box, image=chaos8[0])
    grid = plan_for(box, chaos8[0], manifest["input"]).out_shape  # the frozen features count too
    channels = 160 * (net.views + (net.views == 3))  # per view, and one view's buffer across W with three
    size = 2 if net.net.bf16_cpu else 4  # bfloat16 features where the CPU has it natively
    need = memory.box_step_bytes(chaos8[0].shape, chaos8[0].shape, grid, channels, size)
    assert need == memory.box_step_bytes(chaos8[0].shape, chaos8[0].shape) + size * channels * np.prod(grid)
    monkeypatch.setenv(memory.ENV, str(0.9 * need / 2 ** 30))
    calls = []

    class Built(Exception):
        pass

    def context(*a, **k):
        calls.append(1)
        raise Built
    monkeypatch.setattr("InteractiveRefineLib.engine.session._Context.__init__", context)
    with pytest.raises(ResourceError, match="would need about"):
        s.set_box(box)
    assert not calls and s.objects == []
    monkeypatch.setenv(memory.ENV, str(1.1 * need / 2 ** 30))
    with pytest.raises(Built):  # past the guard: computing starts
        s.set_box(box)
    assert calls == [1]


# --- 12. an interrupted benchmark resumes -------------------------------------------------------------------
def test_interrupted_benchmark_computes_only_the_missing_cases(tmp_path, monkeypatch):
    """Killed during the second case (and mid-write: a torn last line), a rerun keeps the first case's
    records, computes only the second case, and ends with the records of an uninterrupted run."""
    from InteractiveRefineLib.evaluation import benchmark
    computed = []

    def fake_case(image, label, case_id, *a, **k):
        computed.append(case_id)
        if case_id == "chaos_36" and crash:
            raise KeyboardInterrupt
        return [{"case": case_id, "label": 2, "label_name": "k", "dim": "3d", "method": "cnn", "round": 0,
                 "dice": 0.5, "seconds": 0.1, "scribbled_voxels": 0, "jitter": 0}]
    monkeypatch.setattr(benchmark, "benchmark_case", fake_case)
    monkeypatch.setattr("InteractiveRefineLib.engine.inference.BoxSegmenter.__init__", lambda *a, **k: None)
    kw = dict(labels=[2], cases="chaos_8,chaos_36", dims=["3d"], methods=["cnn"], rounds=0, device="cpu",
              show_progress=False)
    crash = True
    with pytest.raises(KeyboardInterrupt):
        benchmark.run_benchmark(CHAOS, tmp_path / "b", **kw)
    with open(tmp_path / "b" / "results.jsonl", "a") as f:
        f.write('{"case": "chaos_36", "label": 2, "di')  # torn by the kill
    crash = False
    computed.clear()
    benchmark.run_benchmark(CHAOS, tmp_path / "b", **kw)
    assert computed == ["chaos_36"]
    records = [json.loads(l) for l in (tmp_path / "b" / "results.jsonl").read_text().splitlines()]
    assert [r["case"] for r in records] == ["chaos_8", "chaos_36"]
    assert (tmp_path / "b" / "summary.md").is_file()
    with pytest.raises(AdaptiveSegError, match="other settings \\(rounds\\)"):  # not another run's folder
        benchmark.run_benchmark(CHAOS, tmp_path / "b", **dict(kw, rounds=1))


def test_fewshot_memory_guard_refuses_before_loading_the_model(files, no_compute, monkeypatch, capsys):
    from InteractiveRefineLib.engine import memory
    monkeypatch.setenv(memory.ENV, "0.01")
    assert fs_cli.main([a.format(**files) for a in seg(label="1")[1:]]) == 2
    assert "would need about" in capsys.readouterr().err


def test_memory_limit_respects_a_containers_cgroup(tmp_path, monkeypatch):
    """In a container MemAvailable is the host's; the kernel kills at the cgroup's limit. The guard's limit is
    the cgroup's room (limit - usage + reclaimable file cache) when that is smaller."""
    from InteractiveRefineLib.engine import memory
    monkeypatch.delenv(memory.ENV, raising=False)
    (tmp_path / "max").write_text(str(4 << 30) + "\n")
    (tmp_path / "current").write_text(str(3 << 30) + "\n")
    (tmp_path / "stat").write_text(f"anon 123\ninactive_file {1 << 30}\n")
    files = (str(tmp_path / "max"), str(tmp_path / "current"), str(tmp_path / "stat"))
    monkeypatch.setattr(memory, "CGROUP_FILES", (files,))
    assert memory.cgroup_available_bytes() == 2 << 30
    assert memory.available_bytes() <= 2 << 30
    with pytest.raises(ResourceError, match="would need about 3.0 GB"):
        memory.check_memory(3 << 30, "a step")
    (tmp_path / "max").write_text("max\n")
    assert memory.cgroup_available_bytes() is None
    monkeypatch.setattr(memory, "CGROUP_FILES", ((str(tmp_path / "none"),) * 3,))
    assert memory.cgroup_available_bytes() is None


@pytest.mark.parametrize("text", ["{broken", "[]", '{"config": 3}', '{"config": {}, "done": "chaos_8"}'])
def test_an_unreadable_progress_file_is_named(tmp_path, text):
    """A damaged progress.json is refused with the project's error (not an AttributeError), before computing."""
    from InteractiveRefineLib.evaluation.resume import ResumableResults
    (tmp_path / "progress.json").write_text(text)
    with pytest.raises(AdaptiveSegError, match="progress.json is unreadable"):
        ResumableResults(tmp_path, {"rounds": 1}).check()


def test_an_output_linked_to_an_input_is_refused(tmp_path):
    """A hard link (or symbolic link) to an input is that input: writing there would overwrite it."""
    from InteractiveRefineLib.core.outputs import check_output_file
    src = tmp_path / "in.nii.gz"
    src.write_bytes(b"x")
    os.link(src, tmp_path / "hard.nii.gz")
    (tmp_path / "soft.nii.gz").symlink_to(src)
    for name in ("hard.nii.gz", "soft.nii.gz", "in.nii.gz"):
        with pytest.raises(AdaptiveSegError, match="is also an input"):
            check_output_file(tmp_path / name, inputs=[src])
    assert check_output_file(tmp_path / "new.nii.gz", inputs=[src, None]) == tmp_path / "new.nii.gz"


@pytest.mark.parametrize("offset", [float("nan"), -100.0, 1e30])
def test_a_corrupted_nifti_header_is_named(tmp_path, offset):
    """A NaN, negative or absurd voxel data offset is the project's ImageError (was a raw ValueError)."""
    import struct

    from InteractiveRefineLib.core.errors import ImageError
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(tmp_path / "a.nii"))
    data = bytearray((tmp_path / "a.nii").read_bytes())
    data[108:112] = struct.pack("<f", offset)
    (tmp_path / "bad.nii").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="corrupted NIfTI header"):
        read_image(tmp_path / "bad.nii")
    assert read_image(tmp_path / "a.nii").shape == (4, 5, 6)
