"""Pure parts behind the Slicer panels: panel defaults vs the core, dependency list, Slicer sample files,
segment naming, changed-extent writes, view/ROI helpers."""
from pathlib import Path

import numpy as np
import pytest

from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.core.prompts import Box
from InteractiveRefineLib.panel.dependencies import import_name, missing, read_requirements
from InteractiveRefineLib.panel.mask_update import changed_extent, crop
from InteractiveRefineLib.panel.ras_geometry import box_to_roi, flatten_roi, ijk_to_ras, nearest_view, roi_to_box
from InteractiveRefineLib.panel.segment_names import (
    is_helper_name,
    output_segment_names,
    scribble_segment_names,
    unique_name,
)
from InteractiveRefineLib.panel.settings import DEFAULTS, refine_config_kwargs

ROOT = Path(__file__).resolve().parent.parent


def test_panel_defaults_are_the_core_defaults():
    from InteractiveRefineLib.engine.finetune import RefineConfig
    from InteractiveRefineLib.engine.inference import DEFAULT_INPUT

    cfg = RefineConfig(**refine_config_kwargs(**DEFAULTS))
    core = RefineConfig()
    assert cfg.margin_mm == DEFAULT_INPUT["margin_mm"]
    assert {k: v for k, v in vars(cfg).items() if k != "margin_mm"} == \
        {k: v for k, v in vars(core).items() if k != "margin_mm"}
    tuned = RefineConfig(**refine_config_kwargs(5, 10.0, 0.9, 1.0, 20.0, 5.0, True, 30.0, False))
    assert (tuned.iterations, tuned.sigma, tuned.head_only, tuned.time_budget, tuned.views3d) == \
        (5, 20.0, False, 30.0, 1)


def test_requirements_cover_the_core_imports():
    reqs = read_requirements()
    names = {import_name(r) for r in reqs}
    assert names == {"scipy", "SimpleITK", "safetensors", "tqdm", "skimage", "maxflow"}
    assert not any("==" in r for r in reqs), "no exact pins inside Slicer"
    root_reqs = {import_name(r) for r in read_requirements(ROOT / "requirements.txt")}
    assert names <= root_reqs
    assert missing(reqs) == []  # all installed here
    assert missing(["surely-not-a-package-xyz>=1"]) == ["surely-not-a-package-xyz>=1"]


def test_slicer_sample_segmentations_match_the_labels_and_carry_names(tmp_path):
    import SimpleITK as sitk

    from InteractiveRefineLib.core.sample import sample_dataset
    from InteractiveRefineLib.panel.slicer_samples import organ_names, samples, seg_nrrd_metadata, write_seg_nrrd

    chaos = sample_dataset("chaos")
    found = samples()
    assert [s.case for s in found] == ["chaos_8", "chaos_36"]
    for s in found:
        volume, seg = s.files
        assert s.thumbnail.is_file() and all(u.startswith("file://") for u in s.uris())
        assert len(set(s.file_names())) == 2 and all(c.startswith("SHA256:") for c in s.checksums())
        shipped = sitk.ReadImage(str(seg))
        label = sitk.ReadImage(str(chaos / "labelsTr" / f"{s.case}.nii.gz"))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(shipped), sitk.GetArrayFromImage(label))
        np.testing.assert_allclose(shipped.GetOrigin(), sitk.ReadImage(str(volume)).GetOrigin(), atol=1e-4)
        expected = seg_nrrd_metadata(sitk.GetArrayFromImage(label), organ_names(chaos), {})
        names = {shipped.GetMetaData(f"Segment{i}_Name") for i in range(4)}
        assert names == {"liver", "right kidney", "left kidney", "spleen"}
        assert {k for k in expected} <= set(shipped.GetMetaDataKeys())
    # regenerating gives the shipped content
    again = sitk.ReadImage(str(write_seg_nrrd(chaos / "labelsTr" / "chaos_8.nii.gz", tmp_path / "c.seg.nrrd",
                                              organ_names(chaos))))
    assert again.GetMetaData("Segment1_Name") == "right kidney" and again.GetMetaData("Segment1_LabelValue") == "2"


def test_segment_names():
    assert scribble_segment_names("liver") == ("liver_fg", "liver_bg")
    assert is_helper_name("liver_fg") and not is_helper_name("_fg") and not is_helper_name("liver")
    with pytest.raises(PromptError):
        scribble_segment_names("liver_bg")
    with pytest.raises(PromptError):
        scribble_segment_names("  ")
    assert unique_name("kidney", ["kidney", "kidney 2"]) == "kidney 3"
    assert output_segment_names(["liver", "spleen"], ["liver"]) == ["liver", "spleen"]
    assert output_segment_names(["liver", "spleen"], ["liver"], replace=False) == ["liver 2", "spleen"]
    with pytest.raises(PromptError, match="both named"):
        output_segment_names(["liver", "liver"], [])


def test_changed_extent():
    old = np.zeros((5, 6, 7), bool)
    new = old.copy()
    assert changed_extent(old, new) is None
    new[1:3, 2, 4:6] = True
    assert changed_extent(old, new) == ((1, 2, 4), (3, 3, 6))
    assert changed_extent(None, new) == ((1, 2, 4), (3, 3, 6))
    old[4, 5, 0] = True  # a removed voxel widens the extent
    ext = changed_extent(old, new)
    assert ext == ((1, 2, 0), (5, 6, 6)) and crop(new, ext).shape == (4, 4, 6)
    with pytest.raises(PromptError):
        changed_extent(old, new[:2])


AXIAL = np.array([[-0.7, 0, 0, 100.0], [0, -0.7, 0, 120.0], [0, 0, 3.0, -50.0], [0, 0, 0, 1]])


def test_box_to_roi_round_trip_and_flatten_for_the_drawing_view():
    box = Box((3, 20, 10), (9, 41, 31))
    centre, size = box_to_roi(box, AXIAL)
    obj = np.eye(4)
    obj[:3, 3] = centre
    assert roi_to_box(obj, size, AXIAL, (20, 64, 48)) == box
    red, yellow = np.eye(4), np.array([[0, 0, 1.0, 0], [-1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 1]])
    red[:3, 3] = ijk_to_ras([[20, 30, 6]], AXIAL)[0]
    yellow[:3, 3] = ijk_to_ras([[25, 30, 6]], AXIAL)[0]
    centre6 = ijk_to_ras([[20, 30, 6]], AXIAL)[0]
    assert nearest_view(centre6, [yellow, red]) == 1
    flat = flatten_roi(obj, size, red[:3, 2])
    assert flat[2] == 0 and flat[0] == size[0]
    obj[:3, 3] = centre6
    box2d = roi_to_box(obj, flat, AXIAL, (20, 64, 48), view_normal_ras=red[:3, 2])
    assert box2d.axis == 0 and box2d.slice_index == 6


def test_panel_fields_cover_the_settings_and_the_parameter_node():
    import ast

    from InteractiveRefineLib.panel.settings import PANEL_FIELDS
    assert set(PANEL_FIELDS.values()) == set(DEFAULTS)
    tree = ast.parse((ROOT / "InteractiveRefine" / "InteractiveRefineSlicer" / "parameters.py").read_text())
    node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "InteractiveRefineParameterNode")
    fields = {s.target.id: s for s in node.body if isinstance(s, ast.AnnAssign)}
    for field, key in PANEL_FIELDS.items():
        assert field in fields and ast.unparse(fields[field].value) == f"DEFAULTS['{key}']"


def test_live_times_count_a_running_step_as_compute():
    from InteractiveRefineLib.core.study import live_times
    events = [{"event": "study", "t": 100.0}, {"event": "box", "t": 101.0, "compute_seconds": 1.0}]
    assert live_times(events, 110.0) == {"user_seconds": 9.0, "compute_seconds": 1.0, "interactions": 1}
    running = live_times(events, 110.0, running_since=106.0)
    assert running["compute_seconds"] == 5.0 and running["user_seconds"] == 5.0
