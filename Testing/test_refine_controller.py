"""The InteractiveRefine panel's logic without Slicer, on the embedded CHAOS patient and the shipped
models, through the compute protocol (messages and .npy files; here the request loop runs in a thread of
the test process so the tests can reach the session; Testing/test_compute.py runs a real child process):
box -> segment -> scribble -> refine -> undo/redo/reset -> accept, changed-extent writes, re-entry, cancel,
bad input, the study log and its analysis."""
import json
import threading

import numpy as np
import pytest

from InteractiveRefineLib.compute.client import ComputeClient
from InteractiveRefineLib.compute.service import ComputeService
from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.core.log import read_log
from InteractiveRefineLib.core.prompts import box_from_mask, main_object
from InteractiveRefineLib.core.worker import BusyError
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.evaluation.analyze_logs import analyze_logs
from InteractiveRefineLib.evaluation.robot import next_scribble
from InteractiveRefineLib.panel.mask_update import changed_extent, crop
from InteractiveRefineLib.panel.refine_controller import RefineController

RIGHT_KIDNEY, SLICE = 2, 12


@pytest.fixture
def controller(chaos8, segmenter, tmp_path):
    image, label = chaos8
    ref = label == RIGHT_KIDNEY
    client = in_thread_client(segmenter)
    c = RefineController(image, device="cpu", log_folder=tmp_path / "logs", participant="p01", case="chaos_8 RK",
                         reference=ref, client=client)
    yield c, ref, box_from_mask(main_object(ref), 0, SLICE)
    c.close()
    client.stop()


def in_thread_client(segmenter):
    """The compute protocol with its loop in a thread of this process (shares the loaded models)."""
    return ComputeClient(service_factory=lambda: ComputeService(
        session_factory=lambda *a, **k: InteractiveSession(*a, segmenter=segmenter, **k)))


def session_of(c):
    """The controller's InteractiveSession inside the (in-thread) compute loop."""
    return c.client.service.sessions[c.session_id].session


def step(c, start, timeout=60):
    start()
    status = c.wait(timeout)
    assert status.job.state == "done", status.job.error
    return status.update


def segment(c, box):
    c.start_box(box)
    status = c.wait(60)
    assert status.job.state == "done", status.job.error
    return status.update


def robot_scribbles(c, ref, update, box, seed=0):
    stroke = next_scribble(update.mask, ref, box, c.image.spacing_kji, np.random.default_rng(seed))
    fg, bg = (np.zeros(ref.shape, bool) for _ in range(2))
    (fg if stroke.label == "fg" else bg)[tuple(np.asarray(stroke.voxels).T)] = True
    return fg, bg


def test_whole_workflow_with_exact_undo_redo(controller):
    c, ref, box = controller
    first = segment(c, box)
    assert first.action == "box" and first.dice > 0.7
    assert not first.mask[:SLICE].any() and not first.mask[SLICE + 1:].any()  # a 2D box: one slice
    lo, hi = first.extent
    assert lo[0] == SLICE and hi[0] == SLICE + 1 and crop(first.mask, first.extent).sum() == first.mask.sum()
    assert not first.scribbles[0].any() and not first.scribbles[1].any()  # helper segments are cleared

    fg, bg = robot_scribbles(c, ref, first, box)
    ignored, _ = c.set_scribbles(fg, bg)
    assert ignored == 0 and c.can_undo()
    c.start_refine("supervised")
    refined = c.wait(120).update
    assert refined.action == "refine_supervised" and refined.dice > first.dice
    assert refined.extent == changed_extent(first.mask, refined.mask)  # only what changed is written
    assert (refined.mask[fg]).all() and not refined.mask[bg].any()  # scribbles are hard constraints

    undone = step(c, c.undo)  # back to the scribble state: the box result, scribbles kept
    np.testing.assert_array_equal(undone.mask, first.mask)
    np.testing.assert_array_equal(undone.scribbles[0], fg)
    np.testing.assert_array_equal(undone.scribbles[1], bg)
    assert undone.extent == changed_extent(refined.mask, first.mask)
    redone = step(c, c.redo)
    np.testing.assert_array_equal(redone.mask, refined.mask)
    reset = step(c, c.reset)
    np.testing.assert_array_equal(reset.mask, first.mask)
    assert not reset.scribbles[0].any() and not reset.scribbles[1].any()

    times = c.times()
    assert times["interactions"] == 6 and times["compute_seconds"] > 0 and times["user_seconds"] >= 0
    c.accept()
    events = read_log(c.log.path)
    names = [e["event"] for e in events]
    assert names == ["study", "session_start", "box", "scribble", "refine", "undo", "redo", "reset", "accept"]
    assert events[0]["participant"] == "p01" and events[0]["case"] == "chaos_8 RK"
    assert all(b["t"] >= a["t"] for a, b in zip(events, events[1:]))
    assert c.log.path.name.startswith("p01_chaos_8_RK_")


def test_reentry_blocked_and_cancel_mid_refinement(controller):
    c, ref, box = controller
    first = segment(c, box)
    c.set_scribbles(*robot_scribbles(c, ref, first, box))
    c.wait(10)  # the scribbles have reached the session
    session = session_of(c)
    before = session.state()
    started, cancel_pressed = threading.Event(), threading.Event()
    real_refine = session.refine

    def held_refine(*args, **kwargs):  # the real refinement, held at its first cancel check until Cancel
        cancel = kwargs["cancel"]

        def waiting_cancel():
            started.set()
            cancel_pressed.wait(30)
            return cancel()
        kwargs["cancel"] = waiting_cancel
        return real_refine(*args, **kwargs)

    session.refine = held_refine
    c.start_refine("supervised")
    assert started.wait(60)
    with pytest.raises(BusyError):
        c.start_refine("unsupervised")
    with pytest.raises(BusyError):
        c.undo()
    with pytest.raises(BusyError):
        c.set_scribbles(np.zeros(ref.shape, bool), np.zeros(ref.shape, bool))
    assert c.cancel()
    cancel_pressed.set()
    status = c.wait(60)
    assert status.job.state == "cancelled" and status.update is None
    assert session.state() is before  # cancel leaves the session exactly as it was
    assert [e["event"] for e in c.log.events][-1] == "cancelled"


def test_scribbles_outside_the_box_or_both_labels_are_ignored(controller):
    c, ref, box = controller
    segment(c, box)
    fg, bg = (np.zeros(ref.shape, bool) for _ in range(2))
    k, j, i = SLICE, (box.lo[1] + box.hi[1]) // 2, (box.lo[2] + box.hi[2]) // 2
    fg[k, j, i - 1: i + 2] = True
    bg[k, j, i + 1: i + 3] = True  # overlaps fg at i + 1: that voxel is ignored
    fg[SLICE + 1, j, i] = True  # off the slice of the 2D box
    fg[k, 0, 0] = True  # outside the box
    ignored, message = c.set_scribbles(fg, bg)
    assert ignored == 3 and "ignored" in message
    c.wait(10)  # the scribbles reach the session before the next step
    scr = session_of(c).state().scribbles
    assert scr.count == (2, 1)


def test_out_of_order_and_bad_input(controller, chaos8):
    c, ref, box = controller
    with pytest.raises(PromptError, match="segmentation first"):
        c.start_refine()
    with pytest.raises(PromptError, match="segmentation first"):
        c.set_scribbles(np.zeros(ref.shape, bool), np.zeros(ref.shape, bool))
    with pytest.raises(PromptError, match="nothing to undo"):
        c.undo()  # no session yet
    with pytest.raises(PromptError, match="nothing to reset"):
        c.reset()
    first = segment(c, box)
    with pytest.raises(PromptError, match="do not match"):
        c.set_scribbles(np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool))
    with pytest.raises(PromptError, match="needs at least one scribble"):
        c.start_refine("supervised")
        status = c.wait(60)
        raise status.job.error
    with pytest.raises(PromptError, match="nothing to redo"):
        c.redo()
        raise c.wait(10).job.error
    assert session_of(c).state().mask is not None and first.dice is not None
    assert c.device_text == "cpu"


def test_device_note_when_cuda_is_asked_for_but_missing(chaos8, segmenter, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    image, _ = chaos8
    client = in_thread_client(segmenter)
    c = RefineController(image, device="cuda", config=RefineConfig(), client=client)
    assert c.device_text == ""  # no session yet
    c.start_box(box_from_mask(main_object(chaos8[1] == RIGHT_KIDNEY), 0, SLICE))
    assert c.wait(60).job.state == "done"
    assert c.device_text == "cpu (fell back to the CPU: no CUDA GPU)"
    c.close()
    client.stop()


def test_analyze_logs_table_csv_and_plot(controller, tmp_path, capsys):
    c, ref, box = controller
    first = segment(c, box)
    c.set_scribbles(*robot_scribbles(c, ref, first, box))
    c.start_refine("supervised")
    c.wait(120)
    c.accept()
    # a second session of another case, without reference
    other = tmp_path / "logs" / "p02_case2.jsonl"
    other.write_text("\n".join(json.dumps(e) for e in [
        {"event": "study", "t": 10.0, "participant": "p02", "case": "case2"},
        {"event": "box", "t": 12.0, "compute_seconds": 1.5},
        {"event": "scribble", "t": 20.0},
        {"event": "refine", "t": 25.0, "compute_seconds": 3.0},
        {"event": "accept", "t": 30.0}]) + "\n{\"event\": \"torn")
    from InteractiveRefineLib.cli import main
    # a target between the box result and the refined one: reached only by the refinement
    target = round(first.dice + 0.005, 3)
    assert main(["analyze-logs", str(tmp_path / "logs"), "--dice", str(target)]) == 0
    out = capsys.readouterr().out
    assert "| case2 | 1 | 4.0 | 15.5 | 4.5 |" in out
    rows, table = analyze_logs(tmp_path / "logs", target_dice=target)
    mine = next(r for r in rows if r["participant"] == "p01")
    assert mine["interactions"] == 4 and mine["refines"] == 1 and mine["final_dice"] > target
    assert mine["user_seconds_to_target"] is not None and mine["interactions_to_target"] <= 3
    for name in ("sessions.csv", "cases.md", "timing.png"):
        assert (tmp_path / "logs" / name).stat().st_size > 0
    assert (tmp_path / "logs" / "sessions.csv").read_text().startswith("participant,case,interactions")
    assert main(["analyze-logs", str(tmp_path / "nowhere")]) == 2


def test_panel_timing_command(tmp_path, capsys):
    """The emulated Slicer main loop (GIL held between polls): every step finishes and no poll freezes the
    GUI for more than 0.1 s (the compute speed against free-running: Testing/test_compute.py)."""
    from InteractiveRefineLib.cli import main
    assert main(["panel-timing", "--out", str(tmp_path), "--rounds", "1", "--gui", "gil"]) == 0
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {(r["dim"], r["step"]) for r in records} == {("2d", "box"), ("2d", "refine"), ("3d", "box"),
                                                        ("3d", "refine")}
    assert all(r["loop"] == "gil" for r in records)
    assert all(r["compute_seconds"] > 0 and r["ticks"] >= 1 and 0 < r["dice"] <= 1 for r in records)
    assert all(0 < r["max_gui_stall_seconds"] <= 0.1 for r in records), [r["max_gui_stall_seconds"] for r in records]
    assert "| gil | 3d | refine |" in capsys.readouterr().out


def test_segment_replaces_the_segment_inside_the_box_only(controller):
    """What the segment already holds outside the box (e.g. a FewShotSeg result on other slices, or an
    earlier box's result) stays, through later steps too; inside the box the result replaces it."""
    from InteractiveRefineLib.core.prompts import Box

    c, ref, box = controller
    current = np.zeros(ref.shape, bool)
    current[SLICE - 3:SLICE + 4, box.lo[1]:box.hi[1], box.lo[2]:box.hi[2]] = True  # slab over the box
    c.start_box(box, current)
    first = c.wait(60).update
    lo, hi = first.extent
    assert lo[0] == SLICE and hi[0] == SLICE + 1  # only the box's slice is rewritten
    np.testing.assert_array_equal(np.delete(first.mask, SLICE, axis=0), np.delete(current, SLICE, axis=0))
    assert not first.mask[SLICE].all() and first.dice > 0.7  # inside the box: the network's result
    # a second box two slices up, on what the segment now holds: the first box's result is kept
    box2 = Box((SLICE + 2, box.lo[1], box.lo[2]), (SLICE + 3, box.hi[1], box.hi[2]), 0)
    c.start_box(box2, first.mask)
    second = c.wait(60).update
    assert second.extent[0][0] == SLICE + 2 and second.extent[1][0] == SLICE + 3
    np.testing.assert_array_equal(second.mask[SLICE], first.mask[SLICE])
    np.testing.assert_array_equal(second.mask[SLICE - 3:SLICE], current[SLICE - 3:SLICE])
    fg = np.zeros(ref.shape, bool)
    fg[SLICE + 2, (box.lo[1] + box.hi[1]) // 2, (box.lo[2] + box.hi[2]) // 2] = True
    c.set_scribbles(fg, np.zeros_like(fg))
    c.start_refine()
    refined = c.wait(120).update  # later steps keep the outside too
    np.testing.assert_array_equal(np.delete(refined.mask, SLICE + 2, axis=0), np.delete(second.mask, SLICE + 2, axis=0))
    with pytest.raises(PromptError, match="does not match"):
        c.start_box(box, np.zeros((2, 2, 2), bool))


def test_erased_scribbles_are_removed_and_logged(controller):
    """The user may erase part of a helper segment (Erase effect, or the Segment Editor's undo)."""
    c, ref, box = controller
    segment(c, box)
    fg = np.zeros(ref.shape, bool)
    k, j, i = SLICE, (box.lo[1] + box.hi[1]) // 2, (box.lo[2] + box.hi[2]) // 2
    fg[k, j, i - 3:i + 3] = True
    c.set_scribbles(fg, np.zeros_like(fg))
    fg[k, j, i:i + 3] = False  # erase half
    c.set_scribbles(fg, np.zeros_like(fg))
    c.wait(10)
    assert session_of(c).state().scribbles.count == (3, 0)
    last = c.log.events[-1]
    assert last["event"] == "scribble" and last["removed_fg"] == 3 and last["added_fg"] == 0
    n = len(c.log.events)
    c.set_scribbles(fg, np.zeros_like(fg))  # nothing changed: no request, no new state, no event
    assert not c.scribbles_changed
    c.wait(10)
    assert len(c.log.events) == n
    undone = step(c, c.undo)
    assert undone.scribbles[0].sum() == 6


def test_adopt_an_existing_segmentation_and_correct_it(controller):
    """Refine a segmentation made elsewhere (FewShotSeg, another tool): it is the starting result, the
    first refinement teaches it to the network, reset returns to it."""
    from scipy import ndimage

    c, ref, box = controller
    current = np.zeros(ref.shape, bool)
    current[SLICE] = ndimage.binary_erosion(main_object(ref)[SLICE], iterations=3)  # an under-segmentation
    c.start_adopt(current)
    first = c.wait(60).update
    assert first.action == "adopt" and first.extent is None  # nothing to rewrite: it is the segment
    np.testing.assert_array_equal(first.mask, current)
    assert session_of(c).state().box.axis == 0  # one slice -> a 2D object
    dices = [first.dice]
    rng = np.random.default_rng(0)
    fg, bg = np.zeros(ref.shape, bool), np.zeros(ref.shape, bool)
    for _ in range(2):
        stroke = next_scribble(session_of(c).mask(), ref, session_of(c).state().box, c.image.spacing_kji, rng)
        (fg if stroke.label == "fg" else bg)[tuple(np.asarray(stroke.voxels).T)] = True
        c.set_scribbles(fg, bg)
        c.start_refine()
        dices.append(c.wait(120).update.dice)
    assert dices[-1] > dices[0] + 0.05, dices
    np.testing.assert_array_equal(step(c, c.reset).mask, current)
    assert [e["event"] for e in c.log.events].count("adopt") == 1
    with pytest.raises(PromptError, match="empty"):
        c.start_adopt(np.zeros(ref.shape, bool))
        raise c.wait(60).job.error


def test_hand_edits_are_read_back_before_a_write(controller):
    """The user edits the result segment by hand (Segment Editor module) between two steps: the next write
    covers every voxel that differs from what the segment holds, keeps the edits outside the object's box and
    lets the session's result decide inside it; nothing stale is left."""
    c, ref, box = controller
    first = segment(c, box)
    segment_now = first.mask.copy()
    segment_now[SLICE, box.lo[1]:box.hi[1], box.lo[2]] = True  # painted inside the box
    segment_now[SLICE, 0:3, 0:3] = True  # painted outside the box
    segment_now[SLICE + 5, 10, 10] = True  # and on another slice
    k, j, i = SLICE, (box.lo[1] + box.hi[1]) // 2, (box.lo[2] + box.hi[2]) // 2
    fg = np.zeros(ref.shape, bool)
    fg[k, j, i] = True
    c.set_scribbles(fg, np.zeros_like(fg))
    refined = step(c, lambda: c.start_refine(), 120)
    stale = c.rebase(refined, segment_now)
    written = segment_now.copy()
    lo, hi = stale.extent
    region = tuple(slice(a, b) for a, b in zip(lo, hi))
    written[region] = stale.mask[region]  # what write_mask_extent does
    np.testing.assert_array_equal(written, stale.mask)  # the extent covered every difference
    inside = box.mask(ref.shape)
    np.testing.assert_array_equal(written[inside], refined.mask[inside])  # the session decides inside the box
    np.testing.assert_array_equal(written[~inside], segment_now[~inside])  # hand edits outside are kept
    undone = c.rebase(step(c, c.undo), written)  # and later steps keep them too
    np.testing.assert_array_equal(undone.mask[~inside], segment_now[~inside])
    np.testing.assert_array_equal(undone.mask[inside], first.mask[inside])
