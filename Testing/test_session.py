"""The interactive session on the embedded held-out patient chaos_8: refine, undo/redo, the log, bad input."""
import numpy as np
import pytest
import torch

from InteractiveRefineLib.core.errors import CancelledError, ModelError, PromptError
from InteractiveRefineLib.core.log import read_log
from InteractiveRefineLib.core.prompts import box_from_mask, main_object
from InteractiveRefineLib.engine import finetune
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.evaluation.robot import next_scribble

RIGHT_KIDNEY = 2
SLICE = 12


@pytest.fixture
def kidney2d(chaos8, segmenter, tmp_path):
    """A session with a 2D box on the right kidney of slice 12, logging to tmp_path/log.jsonl."""
    image, label = chaos8
    ref = label == RIGHT_KIDNEY
    box = box_from_mask(main_object(ref), 0, SLICE)
    s = InteractiveSession(image, segmenter, log=tmp_path / "log.jsonl")
    s.set_box(box, object_id="kidney", reference=ref)
    yield s, ref, box
    s.close()


def _robot(s, ref, box, seed=0):
    return next_scribble(s.mask(), ref, box, s.image.spacing_kji, np.random.default_rng(seed))


def test_box_result_lies_in_the_box(kidney2d):
    s, ref, box = kidney2d
    m = s.mask()
    outside = np.ones_like(m)
    outside[box.slices] = False
    assert m.any() and not m[outside].any()
    assert s.dice() > 0.7  # measured 0.781 (the CNN alone: 0.786)


def test_scribbles_are_hard_constraints_and_undo_redo_restore_exactly(kidney2d):
    s, ref, box = kidney2d
    before = s.mask().copy()
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    assert np.array_equal(s.mask(), before), "a scribble alone does not change the result"
    after = s.refine().copy()
    expected = sc.label == "fg"
    assert (after[tuple(sc.voxels.T)] == expected).all()
    s.undo()  # the refine
    assert np.array_equal(s.mask(), before)
    s.undo()  # the scribble
    assert s.state().scribbles.empty
    with pytest.raises(PromptError, match="nothing to undo"):
        s.undo()
    s.redo()
    s.redo()
    assert np.array_equal(s.mask(), after)
    with pytest.raises(PromptError, match="nothing to redo"):
        s.redo()


def test_reset_returns_to_the_box_result_and_shipped_weights(kidney2d):
    s, ref, box = kidney2d
    first = s.mask().copy()
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    s.refine()
    assert s.state().params is not None
    s.reset()
    assert np.array_equal(s.mask(), first) and s.state().params is None and s.state().scribbles.empty
    s.undo()
    assert s.state().params is not None, "reset is undoable"


def test_log_has_every_event_in_order_with_monotonic_times(kidney2d, tmp_path):
    s, ref, box = kidney2d
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    s.refine()
    s.undo()
    s.redo()
    s.reset()
    events = read_log(tmp_path / "log.jsonl")
    assert [e["event"] for e in events] == ["session_start", "box", "scribble", "refine", "undo", "redo", "reset"]
    times = [e["t"] for e in events]
    assert times == sorted(times)
    scr = events[2]
    assert scr["voxels"] == len(sc.voxels) and scr["label"] == sc.label and scr["object"] == "kidney"
    ref_event = events[3]
    assert ref_event["compute_seconds"] > 0 and 0 < ref_event["dice"] <= 1 and ref_event["mode"] == "supervised"
    assert events[1]["dice"] == pytest.approx(events[2]["dice"]), "Dice against the reference on every event"


def test_refine_before_prediction_and_unknown_mode(chaos8, segmenter):
    s = InteractiveSession(chaos8[0], segmenter)
    with pytest.raises(PromptError, match="box"):
        s.refine()
    with pytest.raises(PromptError, match="nothing to undo"):
        s.undo()
    with pytest.raises(PromptError, match="box"):
        s.add_scribble([[12, 100, 100]], "fg")


def test_supervised_refine_needs_a_scribble(kidney2d):
    s, _, _ = kidney2d
    with pytest.raises(PromptError, match="scribble"):
        s.refine()
    with pytest.raises(PromptError, match="mode"):
        s.refine("magic")


@pytest.mark.parametrize("voxels,message", [
    ([], "empty"),
    ([[SLICE, 500, 10]], "outside the image"),
    ([[SLICE + 1, 150, 100]], "outside the box"),
    ([[SLICE, 1, 1]], "outside the box"),
    ([[SLICE, 150.5, 100]], "whole numbers"),
    ([[SLICE, 150]], "shape"),
])
def test_bad_scribbles_are_refused_and_change_nothing(kidney2d, voxels, message):
    s, _, _ = kidney2d
    n = len(s._history["kidney"])
    with pytest.raises(PromptError, match=message):
        s.add_scribble(voxels, "fg")
    assert len(s._history["kidney"]) == n
    with pytest.raises(PromptError, match="'fg' or 'bg'"):
        s.add_scribble([[SLICE, 150, 100]], "object")


def test_a_voxel_cannot_be_both_foreground_and_background(kidney2d):
    s, _, box = kidney2d
    v = [[SLICE, (box.lo[1] + box.hi[1]) // 2, (box.lo[2] + box.hi[2]) // 2]]
    s.add_scribble(v, "fg")
    with pytest.raises(PromptError, match="already scribbled fg"):
        s.add_scribble(v, "bg")


def test_only_background_scribbles(kidney2d):
    s, ref, box = kidney2d
    inside_bg = np.argwhere(s.mask()[box.slices] & ~ref[box.slices])
    if not len(inside_bg):  # no over-segmentation: scribble the box corner, which is background
        inside_bg = np.array([[0, 0, 0]])
    vox = inside_bg[:5] + np.asarray(box.lo)
    s.add_scribble(vox, "bg")
    out = s.refine()
    assert not out[tuple(vox.T)].any() and out.any()


def test_cancel_mid_refinement_leaves_everything_as_before(kidney2d, tmp_path):
    s, ref, box = kidney2d
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    state = s.state()
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 3  # cancel after a few polls, in the middle of the gradient steps

    with pytest.raises(CancelledError):
        s.refine(cancel=cancel)
    assert s.state() is state and s.state().params is None
    assert read_log(tmp_path / "log.jsonl")[-1]["event"] == "cancelled"
    s.refine()  # still usable


def test_time_budget_and_progress(kidney2d, tmp_path):
    s, ref, box = kidney2d
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    seen = []
    s.refine(time_budget=1e-6, progress=lambda f, msg: seen.append(f))
    last = read_log(tmp_path / "log.jsonl")[-1]
    assert last["event"] == "refine" and last["stopped_early"] and last["steps"] == 1
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_out_of_gpu_memory_falls_back_to_cpu(kidney2d, monkeypatch, caplog, tmp_path):
    s, ref, box = kidney2d
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    s.device = torch.device("cuda")  # pretend the session runs on a GPU
    real = finetune.fine_tune
    calls = []

    def oom_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(finetune, "fine_tune", oom_once)
    out = s.refine()
    assert len(calls) == 2 and s.device.type == "cpu" and out.any()
    assert "continuing on the CPU" in caplog.text
    assert [e["event"] for e in read_log(tmp_path / "log.jsonl")][-2:] == ["device_fallback", "refine"]


def test_out_of_memory_on_cpu_is_a_clear_error_and_keeps_the_result(kidney2d, monkeypatch):
    s, ref, box = kidney2d
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    before = s.mask().copy()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("out of memory")

    monkeypatch.setattr(finetune, "fine_tune", oom)
    with pytest.raises(ModelError, match="out of memory"):
        s.refine()
    assert np.array_equal(s.mask(), before)


def test_a_new_object_starts_from_the_shipped_weights(kidney2d, chaos8):
    s, ref, box = kidney2d
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    s.refine()
    liver = main_object(chaos8[1] == 1)
    s.set_box(box_from_mask(liver, 0, 20), object_id="liver")
    assert s.state("liver").params is None and s.state("kidney").params is not None
    assert s.objects == ["kidney", "liver"] and s.active == "liver"


def test_save_mask_is_a_label_map_on_the_image_grid(kidney2d, tmp_path):
    from InteractiveRefineLib.core.image_io import read_image
    s, _, _ = kidney2d
    out = s.save_mask(tmp_path / "seg.nii.gz")
    img = read_image(out)
    assert img.shape == s.image.shape and np.array_equal(img.array.astype(bool), s.mask())


def test_whole_network_fine_tuning_option(chaos8, segmenter):
    from InteractiveRefineLib.engine.finetune import RefineConfig
    image, label = chaos8
    ref = label == RIGHT_KIDNEY
    box = box_from_mask(main_object(ref), 0, SLICE)
    s = InteractiveSession(image, segmenter, config=RefineConfig(head_only=False, iterations=1, steps_2d=2))
    s.set_box(box, reference=ref)
    shipped = segmenter.model(2)[0].blocks[0][0].weight.detach().cpu().clone()
    sc = _robot(s, ref, box)
    s.add_scribble(sc.voxels, sc.label)
    s.refine()
    params = s.state().params
    assert not torch.equal(params["blocks.0.0.weight"], shipped), "every layer was tuned, the first one too"
    assert torch.equal(segmenter.model(2)[0].blocks[0][0].weight.detach().cpu(), shipped), \
        "on a copy: the shipped network is unchanged"
