"""Boxes from masks, clipping, jitter, and stray fragments in reference labels."""
import numpy as np
import pytest

from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.core.prompts import box_from_mask, jitter_box, main_object, make_box, validate_box


def test_stray_fragments_do_not_stretch_the_box(chaos_sample):
    """chaos_36's left kidney label has a few 1-2 voxel specks far from the kidney."""
    _, label = chaos_sample.load("chaos_36")
    raw = label == 3
    clean = main_object(raw)
    assert 0 < raw.sum() - clean.sum() < 20
    assert box_from_mask(clean).size[2] < box_from_mask(raw).size[2] - 20


def test_box_from_mask_2d_and_3d():
    m = np.zeros((5, 20, 30), bool)
    m[1:4, 5:9, 10:20] = True
    assert box_from_mask(m) == make_box((1, 5, 10), (4, 9, 20))
    b = box_from_mask(m, axis=0, slice_index=2)
    assert (b.lo, b.hi, b.axis, b.dim) == ((2, 5, 10), (3, 9, 20), 0, 2)
    with pytest.raises(PromptError, match="empty on slice"):
        box_from_mask(m, axis=0, slice_index=4)


def test_jitter_stays_valid_and_is_seeded():
    box = make_box((3, 10, 10), (4, 14, 13), axis=0)
    boxes = [jitter_box(box, 5, (8, 32, 32), np.random.default_rng(s)) for s in range(50)]
    for b in boxes:
        validate_box(b, (8, 32, 32))
        assert b.lo[0] == 3 and b.hi[0] == 4
    assert len({(b.lo, b.hi) for b in boxes}) > 10
    assert jitter_box(box, 5, (8, 32, 32), np.random.default_rng(1)) == boxes[1]


def test_2d_box_must_name_a_valid_axis():
    with pytest.raises(PromptError, match="axis"):
        make_box((0, 0, 0), (1, 5, 5), axis=3)



def test_2d_box_thicker_than_one_slice_is_refused():
    from InteractiveRefineLib.core.prompts import Box
    with pytest.raises(PromptError, match="one slice"):
        validate_box(Box((3, 10, 10), (6, 40, 40), axis=0), (10, 50, 50))
    with pytest.raises(PromptError, match="axis"):
        validate_box(Box((3, 10, 10), (4, 40, 40), axis=5), (10, 50, 50))
