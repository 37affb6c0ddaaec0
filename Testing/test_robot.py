"""The simulated user: largest error region, scribble label, stroke inside the region and the box."""
import numpy as np

from InteractiveRefineLib.core.prompts import Box
from InteractiveRefineLib.evaluation.robot import largest_error, next_scribble

BOX = Box((0, 0, 0), (4, 40, 40))


def _case():
    ref = np.zeros((4, 40, 40), bool)
    ref[:, 5:35, 5:35] = True
    pred = ref.copy()
    pred[1:3, 8:14, 8:14] = False  # small hole: 72 voxels under-segmented
    pred[:, 20:34, 20:34] = False  # large hole: 784 voxels under-segmented
    pred[:, 36:39, 5:35] = True  # leak: 360 voxels over-segmented
    return pred, ref


def test_picks_the_largest_error_region():
    pred, ref = _case()
    region, label = largest_error(pred, ref, BOX)
    assert label == "fg" and region.sum() == 4 * 14 * 14
    assert region[:, 20:34, 20:34].all()


def test_background_scribble_for_the_largest_leak():
    pred, ref = _case()
    pred[:, 20:34, 20:34] = True  # close the large hole; the leak is now the largest error
    s = next_scribble(pred, ref, BOX, (5.0, 1.0, 1.0), np.random.default_rng(0))
    assert s.label == "bg" and s.region_voxels == 360
    assert (s.voxels[:, 1] >= 36).all() and (s.voxels[:, 1] < 39).all()


def test_stroke_is_inside_the_region_on_one_slice_and_bounded():
    pred, ref = _case()
    s = next_scribble(pred, ref, BOX, (5.0, 1.0, 1.0), np.random.default_rng(0), max_length_mm=8.0)
    region, _ = largest_error(pred, ref, BOX)
    assert s.slice_axis == 0, "drawn on the thick-slice axis"
    assert len(np.unique(s.voxels[:, 0])) == 1
    assert region[tuple(s.voxels.T)].all(), "every scribbled voxel lies in the error region"
    assert 1 <= len(s.voxels) <= 8
    depth = np.minimum.reduce([s.voxels[:, 1] - 20, 33 - s.voxels[:, 1], s.voxels[:, 2] - 20, 33 - s.voxels[:, 2]])
    assert depth.min() >= 3, "the stroke keeps away from the region's border"


def test_errors_outside_the_box_are_ignored_and_perfect_gives_none():
    pred, ref = _case()
    small_box = Box((0, 0, 0), (4, 20, 20))  # holds only the small hole
    s = next_scribble(pred, ref, small_box, (5.0, 1.0, 1.0), np.random.default_rng(0))
    assert s.label == "fg" and s.region_voxels == 72
    assert next_scribble(ref, ref, BOX, (5.0, 1.0, 1.0), np.random.default_rng(0)) is None


def test_seeded():
    pred, ref = _case()
    a = next_scribble(pred, ref, BOX, (5.0, 1.0, 1.0), np.random.default_rng(3))
    b = next_scribble(pred, ref, BOX, (5.0, 1.0, 1.0), np.random.default_rng(3))
    assert np.array_equal(a.voxels, b.voxels)


def test_2d_box_draws_on_its_slice():
    pred, ref = _case()
    box = Box((2, 0, 0), (3, 40, 40), axis=0)
    s = next_scribble(pred, ref, box, (5.0, 1.0, 1.0), np.random.default_rng(0))
    assert (s.voxels[:, 0] == 2).all() and s.region_voxels == 14 * 14


def test_robot_rounds_drive_a_session(chaos8, segmenter):
    from InteractiveRefineLib.core.prompts import box_from_mask, main_object
    from InteractiveRefineLib.engine.session import InteractiveSession
    from InteractiveRefineLib.evaluation.robot import robot_rounds

    image, label = chaos8
    ref = label == 2
    session = InteractiveSession(image, segmenter)
    session.set_box(box_from_mask(main_object(ref), 0, 12), reference=ref)
    dices = robot_rounds(session, ref, 2, np.random.default_rng(0))
    assert len(dices) == 3 and dices[-1] > dices[0]
    assert session.state().scribbles.count[0] + session.state().scribbles.count[1] > 0
