"""`python -m InteractiveRefineLib segment`: your own image + a box (voxels, RAS or LPS mm) + scribble files ->
a label map, through the panel's controller: same result as the panel's steps, same checks, the same log."""
import json

import numpy as np
import pytest

from InteractiveRefineLib.cli import main
from InteractiveRefineLib.core.geometry import ijk_to_ras_matrix
from InteractiveRefineLib.core.image_io import read_image, write_image
from InteractiveRefineLib.core.log import read_log
from InteractiveRefineLib.core.prompts import Box, box_from_mask, main_object
from InteractiveRefineLib.core.sample import sample_dataset
from InteractiveRefineLib.panel.ras_geometry import ijk_to_kji, ijk_to_ras
from InteractiveRefineLib.segment_command import box_from_args, read_scribbles

RIGHT_KIDNEY, SLICE = 2, 12
CHAOS = sample_dataset("chaos")
IMAGE = CHAOS / "imagesTr" / "chaos_8.nii.gz"
LABEL = CHAOS / "labelsTr" / "chaos_8.nii.gz"


@pytest.fixture(scope="module")
def image():
    return read_image(IMAGE)


def corners_mm(box, image, space):
    """The mm corners (voxel centres of the box's corner voxels) a user would type for `box`."""
    m = ijk_to_ras_matrix(image.spacing, image.origin, np.asarray(image.direction).reshape(3, 3))
    lo, hi = np.asarray(box.lo, float), np.asarray(box.hi, float) - 1
    kji = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    ras = ijk_to_ras(ijk_to_kji(kji), m)
    a, b = ras.min(0), ras.max(0)
    if space == "lps":
        a, b = a * [-1, -1, 1], b * [-1, -1, 1]
    return list(a) + list(b)


@pytest.mark.parametrize("space", ["ras", "lps"])
def test_a_box_in_mm_is_the_voxel_box(image, space):
    box = Box((10, 80, 40), (15, 126, 90))
    assert box_from_args(corners_mm(box, image, space), space, image) == box
    flat = Box((SLICE, 80, 40), (SLICE + 1, 126, 90), 0)
    assert box_from_args(corners_mm(flat, image, space), space, image) == flat  # flat in mm -> 2D box
    assert box_from_args([12, 80, 40, 0, 126, 90], "voxel", image, slice_axis=0) == flat


def test_scribble_files(image, tmp_path):
    (tmp_path / "a.txt").write_text("# k j i label\n12 100 60 fg\n12, 101, 60, 2\n")
    fg, bg = read_scribbles(tmp_path / "a.txt", image)
    assert np.argwhere(fg).tolist() == [[12, 100, 60]] and np.argwhere(bg).tolist() == [[12, 101, 60]]
    (tmp_path / "a.json").write_text(json.dumps({"fg": [[12, 100, 60]], "bg": []}))
    fg, bg = read_scribbles(tmp_path / "a.json", image)
    assert fg.sum() == 1 and not bg.any()
    lab = np.zeros(image.shape, np.uint8)
    lab[12, 100, 60], lab[12, 90, 50] = 1, 2
    write_image(image, tmp_path / "s.nii.gz", lab)
    fg, bg = read_scribbles(tmp_path / "s.nii.gz", image)
    assert fg[12, 100, 60] and bg[12, 90, 50] and fg.sum() == bg.sum() == 1
    for text, error in (("12 100 fg\n", "expected 'k j i fg|bg'"), ("12 100 60.5 fg\n", "must be whole numbers"),
                        ("12 100 999 fg\n", "outside the image"), ("12 100 60 maybe\n", "expected"),
                        ("12 nan 60 fg\n", "finite whole numbers"), ("12 inf 60 fg\n", "finite whole numbers")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(Exception, match=error):
            read_scribbles(tmp_path / "bad.txt", image)
    (tmp_path / "bad.json").write_text(json.dumps({"fg": [[12, 100, 60]], "bg": None}))
    with pytest.raises(Exception, match='"bg" must be a list'):
        read_scribbles(tmp_path / "bad.json", image)
    lab[0, 0, 0] = 3
    write_image(image, tmp_path / "bad.nii.gz", lab)
    with pytest.raises(Exception, match=r"values \[3\]"):
        read_scribbles(tmp_path / "bad.nii.gz", image)


def test_box_only_equals_the_panels_box_step(image, tmp_path, capsys, segmenter):
    from InteractiveRefineLib.compute.client import ComputeClient
    from InteractiveRefineLib.compute.service import ComputeService
    from InteractiveRefineLib.engine.session import InteractiveSession
    from InteractiveRefineLib.panel.refine_controller import RefineController

    label = read_image(LABEL).array
    box = box_from_mask(main_object(label == RIGHT_KIDNEY), 0, SLICE)
    out = tmp_path / "box.nii.gz"
    assert main(["segment", str(IMAGE), "--box", *map(str, box.lo), *map(str, box.hi), "--slice-axis", "0",
                 "--out", str(out), "--device", "cpu"]) == 0
    result = read_image(out)
    assert result.array.dtype == np.uint8 and np.allclose(result.spacing, image.spacing)
    np.testing.assert_allclose(result.direction, image.direction)
    client = ComputeClient(service_factory=lambda: ComputeService(
        session_factory=lambda *a, **k: InteractiveSession(*a, segmenter=segmenter, **k)))
    c = RefineController(image, device="cpu", client=client)
    try:
        c.start_box(box)
        panel = c.wait(60).update.mask
    finally:
        c.close()
        client.stop()
    np.testing.assert_array_equal(result.array > 0, panel)
    assert "segment (2D box on slice 12 of axis K" in capsys.readouterr().out


def test_rounds_of_scribbles_with_the_panels_log(image, tmp_path, capsys):
    label = read_image(LABEL).array
    ref = main_object(label == RIGHT_KIDNEY)
    box = box_from_mask(ref, 0, SLICE)
    k, j, i = SLICE, (box.lo[1] + box.hi[1]) // 2, (box.lo[2] + box.hi[2]) // 2
    (tmp_path / "r1.txt").write_text(f"{k} {j} {i} fg\n{k} {box.lo[1] + 1} {box.lo[2] + 1} bg\n"
                                     f"{k + 3} {j} {i} fg\n")  # the last one is off the 2D box's slice
    lab = np.zeros(image.shape, np.uint8)
    lab[k, j + 1, i - 2:i + 2] = 1
    write_image(image, tmp_path / "r2.nii.gz", lab)
    argv = ["segment", str(IMAGE), *["--box", *corners_mm(box, image, "ras")], "--box-space", "ras",
            "--scribbles", str(tmp_path / "r1.txt"), "--scribbles", str(tmp_path / "r2.nii.gz"),
            "--out", str(tmp_path / "out.nii.gz"), "--device", "cpu", "--log-folder", str(tmp_path / "logs"),
            "--participant", "p07", "--case", "chaos_8", "--reference", str(LABEL), "--reference-label", "2"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    assert "round 1: 1 scribbled voxel(s) outside slice 12 of the 2D box" in out
    assert "round 2: refine (supervised)" in out and "Dice" in out and "device: cpu" in out
    result = read_image(tmp_path / "out.nii.gz").array > 0
    assert result[k, j, i] and result[k, j + 1, i - 2:i + 2].all() and not result[k, box.lo[1] + 1, box.lo[2] + 1]
    [log] = list((tmp_path / "logs").glob("p07_chaos_8_*.jsonl"))
    events = read_log(log)
    assert [e["event"] for e in events] == ["study", "session_start", "box", "scribble", "refine", "scribble",
                                            "refine", "accept"]
    assert events[0]["participant"] == "p07" and events[-2]["dice"] > 0.7


@pytest.mark.parametrize("argv, text", [
    (["--box", "40", "0", "0", "45", "20", "20"], "outside"),
    (["--box", "0", "0", "0", "34", "2", "2"], "constant"),
    (["--box", "1", "2", "3", "4", "5", "6", "--box-space", "ras", "--slice-axis", "0"], "--slice-axis is for voxel"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--rounds", "2"], "needs scribbles"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--scribbles", "missing.txt"], "not found"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--out", "."], "is a folder"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--mode", "unsupervised", "--rounds", "1",
      "--time-budget", "-1"], "expected a number > 0"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--out", str(LABEL)], "is also an input"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--scribbles", "{tmp}/r.txt", "--rounds", "0"],
     "fewer than the 1 --scribbles files"),
    (["--box", "12", "82", "40", "13", "126", "90", "--slice-axis", "0", "--scribbles", "{tmp}/r.txt", "--mode",
      "unsupervised"], "refines without scribbles"),
    (["--box", "14", "82", "40", "15", "126", "90", "--slice-axis", "0", "--scribbles", "{tmp}/r.txt"],
     "r.txt: no scribbled voxel lies inside slice 14 of the 2D box"),
])
def test_bad_input_is_named_before_anything_runs(tmp_path, capsys, argv, text, monkeypatch):
    import re

    from InteractiveRefineLib.compute.client import ComputeClient

    def refuse(*a, **k):
        raise AssertionError("the compute process started before the bad input was refused")
    monkeypatch.setattr(ComputeClient, "start", refuse)
    (tmp_path / "r.txt").write_text("12 100 60 fg\n")
    args = ["segment", str(IMAGE), "--out", str(tmp_path / "o.nii.gz"), "--device", "cpu",
            "--reference", str(LABEL)] + [a.format(tmp=tmp_path) for a in argv]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse: usage + message, exit 2
        code = exc.code
    assert code == 2
    assert re.search(text, capsys.readouterr().err)
    assert not (tmp_path / "o.nii.gz").exists()
