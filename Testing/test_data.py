"""Decathlon reader, recorded split, and bad images / labels / datasets."""
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from InteractiveRefineLib.core.data import DecathlonDataset, load_split, split_for
from InteractiveRefineLib.core.errors import DatasetError, ImageError
from InteractiveRefineLib.core.image_io import read_image, read_label


def test_reader_keeps_geometry_and_casts_labels(chaos_sample, chaos8):
    image, label = chaos8
    assert chaos_sample.labels == {0: "background", 1: "liver", 2: "right kidney", 3: "left kidney", 4: "spleen"}
    assert chaos_sample.case_ids == ["chaos_8", "chaos_36"]
    assert image.shape == label.shape == (34, 256, 256)
    np.testing.assert_allclose(image.spacing, (1.25, 1.25, 7.7), atol=1e-4)
    assert image.direction[1, 1] == pytest.approx(-1.0)
    assert np.issubdtype(label.dtype, np.integer)
    assert set(np.unique(label)) == {0, 1, 2, 3, 4}


def test_shared_dataset_label_floats_become_integers():
    """The shared CHAOS labels are stored as float64; the reader must return integers."""
    from pathlib import Path
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "chaos-t2spir"
    if not root.is_dir():
        pytest.skip("../shared/data not present")
    ds = DecathlonDataset(root)
    assert len(ds.cases) == 20
    assert sitk.ReadImage(str(ds.case("chaos_1").label)).GetPixelID() == sitk.sitkFloat64
    image, label = ds.load("chaos_1")
    assert label.dtype.kind == "i" and label.max() == 4
    # The benchmark evaluates the recorded split's held-out patients by default.
    from InteractiveRefineLib.evaluation.benchmark import resolve_cases
    assert resolve_cases(ds, None) == load_split("chaos_t2spir")["test"]
    assert len(resolve_cases(ds, "all")) == 20


def test_split_is_patient_level_and_recorded(chaos_sample):
    split = load_split("chaos_t2spir")
    assert len(split["train"]) + len(split["val"]) == 12 and len(split["test"]) == 8
    assert not (set(split["train"]) | set(split["val"])) & set(split["test"])
    # The embedded sample holds held-out test patients only.
    assert set(chaos_sample.case_ids) <= set(split["test"])
    assert split_for(chaos_sample) is None  # the sample is not the full dataset


def test_unknown_label_and_case(chaos_sample):
    with pytest.raises(DatasetError, match="unknown label"):
        chaos_sample.check_labels([2, 7])
    with pytest.raises(DatasetError, match="not in"):
        chaos_sample.case("chaos_99")


def test_missing_dataset_json(tmp_path):
    with pytest.raises(DatasetError, match="dataset.json"):
        DecathlonDataset(tmp_path)
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        DecathlonDataset(tmp_path)


def _write(path, array, spacing=(1.0, 1.0, 1.0), vector=False):
    img = sitk.GetImageFromArray(array, isVector=vector)
    img.SetSpacing(spacing[: img.GetDimension()])
    sitk.WriteImage(img, str(path))
    return path


def test_label_of_other_shape_is_refused(tmp_path, chaos_sample):
    image_path = chaos_sample.case("chaos_8").image
    bad = _write(tmp_path / "lab.nii.gz", np.zeros((10, 20, 20), np.uint8))
    with pytest.raises(ImageError, match="shape"):
        read_label(bad, read_image(image_path))


@pytest.mark.parametrize("make,match", [
    (lambda p: _write(p, np.zeros((2, 4, 5, 6), np.float32), (1, 1, 1, 1)), "4D"),
    (lambda p: _write(p, np.zeros((4, 5, 6, 2), np.float32), vector=True), "channels"),
    (lambda p: _write(p, np.where(np.arange(120).reshape(4, 5, 6) == 7, np.nan, 1.0).astype(np.float32)), "NaN"),
    (lambda p: _write(p, np.where(np.arange(120).reshape(4, 5, 6) == 7, np.inf, 1.0).astype(np.float32)), "NaN or Inf"),
    (lambda p: p.write_bytes(b"not an image"), "cannot read"),
])
def test_bad_images_are_refused(tmp_path, make, match):
    path = tmp_path / "img.mha"  # MetaImage keeps NaN (the NIfTI writer does not)
    make(path)
    with pytest.raises(ImageError, match=match):
        read_image(path)


def test_missing_image_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nothing.nii.gz")


def test_2d_image_becomes_one_slice_volume(tmp_path):
    path = _write(tmp_path / "slice.nii.gz", np.ones((5, 6), np.float32), (0.5, 0.7))
    image = read_image(path)
    assert image.shape == (1, 5, 6)
    np.testing.assert_allclose(image.spacing[:2], (0.5, 0.7))


def test_non_integer_label_refused(tmp_path):
    path = _write(tmp_path / "lab.nii.gz", np.full((3, 4, 5), 1.5, np.float32))
    with pytest.raises(ImageError, match="non-integer"):
        read_label(path)


def test_dataset_case_paths_resolve(tmp_path, chaos_sample):
    dst = tmp_path / "copy"
    shutil.copytree(chaos_sample.root, dst)
    meta = json.loads((dst / "dataset.json").read_text())
    meta["training"] = meta["training"][:1]
    (dst / "dataset.json").write_text(json.dumps(meta))
    ds = DecathlonDataset(dst)
    assert ds.case_ids == ["chaos_8"] and ds.case("chaos_8").image.is_file()


def test_label_with_flipped_direction_is_refused(tmp_path, chaos_sample):
    image = read_image(chaos_sample.case("chaos_8").image)
    lab = sitk.ReadImage(str(chaos_sample.case("chaos_8").label))
    lab.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))  # the image has -1 on y
    sitk.WriteImage(lab, str(tmp_path / "flipped.nii.gz"))
    with pytest.raises(ImageError, match="direction"):
        read_label(tmp_path / "flipped.nii.gz", image)


@pytest.mark.parametrize("text", ["{broken", "[1, 2]", '{"train": [], "val": []}'])
def test_bad_split_files(tmp_path, text):
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(DatasetError):
        load_split(path)
