"""RefineConfig.fallback_margin: when the shipped network gives the label of the user's new correction a higher
mean probability than the tuned head (by more than the margin), the object goes back to the shipped network + CRF,
and stays there."""
from dataclasses import replace

import numpy as np
import pytest

from InteractiveRefineLib.core.prompts import box_from_mask, main_object
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.evaluation.robot import next_scribble


def _tuned_once(chaos8, segmenter, margin):
    """A session on chaos_8's right kidney (2D box, slice 12) after one robot scribble and one refinement."""
    image, label = chaos8
    ref = label == 2
    box = box_from_mask(main_object(ref), 0, 12)
    s = InteractiveSession(image, segmenter, config=RefineConfig(steps_2d=2, fallback_margin=margin))
    first = s.set_box(box, reference=ref)
    sc = next_scribble(first, ref, box, image.spacing_kji, np.random.default_rng(0))
    s.add_scribble(sc.voxels, sc.label)
    s.refine()
    return s, first


def _as_if_the_head_had(s, probability):
    """The current state with the tuned head's probability replaced (e.g. 0 everywhere: it 'forgot' the kidney)."""
    oid = s.active
    s._history[oid][s._pos[oid]] = replace(s.state(), probability=np.asarray(probability, np.float32))


@pytest.mark.parametrize("margin", [None, 0.3])
def test_a_correction_of_what_the_network_had_right_falls_back_to_it(chaos8, segmenter, margin):
    s, first = _tuned_once(chaos8, segmenter, margin)
    assert s.state().params is not None and not s.state().fallback
    _as_if_the_head_had(s, np.zeros_like(s.state().probability))
    inner = np.argwhere(first)[::7]  # the network's own kidney: it gives these voxels foreground
    s.add_scribble(inner, "fg")
    s.refine()
    st, ctx = s.state(), s._ctx[s.active]
    if margin is None:  # off: the head keeps being tuned
        assert st.params is not None and not st.fallback
        return
    assert st.fallback and st.params is None
    np.testing.assert_array_equal(st.probability, ctx.network)
    # and it stays there: a CRF-only refinement and the next correction keep the network, without tuning
    s.refine("crf")
    assert s.state().fallback and s.state().params is None
    out = np.argwhere(st.box.mask(first.shape) & ~first & (chaos8[1] == 0))[:3]
    s.add_scribble(out, "bg")
    s.refine()
    assert s.state().fallback and s.state().params is None


@pytest.mark.parametrize("margin, falls", [(0.3, False), (0.0, True)])
def test_the_margin_decides(chaos8, segmenter, margin, falls):
    """The tuned head 0.1 below the network everywhere: a fallback with margin 0, none with margin 0.3."""
    s, first = _tuned_once(chaos8, segmenter, margin)
    network = s._ctx[s.active].network
    _as_if_the_head_had(s, np.clip(network - 0.1, 0.0, 1.0))
    inner = np.argwhere(first)[::7]  # the network gives these voxels foreground (well above 0.1)
    s.add_scribble(inner, "fg")
    s.refine()
    assert s.state().fallback == falls and (s.state().params is None) == falls


def test_a_correction_where_the_tuned_head_agrees_with_the_network_keeps_tuning(chaos8, segmenter):
    s, first = _tuned_once(chaos8, segmenter, 0.0)
    inner = np.argwhere(first)[::7]  # both give these voxels foreground: no evidence against the tuned head
    s.add_scribble(inner, "fg")
    s.refine()
    assert not s.state().fallback and s.state().params is not None


def test_a_fallback_margin_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="fallback_margin"):
        RefineConfig(fallback_margin=1.0)


def test_on_a_real_3d_kidney_the_fallback_undoes_the_tuned_heads_damage(chaos8, session15_segmenter):
    """chaos_8's left kidney in a 3D box, 3 robot rounds (a test patient of the sample, looked at after the choice
    on validation structures): the network gives the round-3 scribble's label a higher mean probability than the
    tuned head; without the fallback round 3 loses Dice (measured 0.895 -> 0.876 with the session-15 3D weights;
    0.886 -> 0.862 before), with it round 3 gains (0.901; 0.894 before).
    The session-15 networks (conftest.session15_models): with the session-16 network the tuned head does not damage
    this case, so the fallback never engages there. A pinned regression of one case: a later refinement change
    may move these numbers."""
    segmenter = session15_segmenter
    from InteractiveRefineLib.engine.scribbles import Scribbles
    from InteractiveRefineLib.evaluation.benchmark import _robot_step
    from InteractiveRefineLib.evaluation.methods import _add_new

    image, label = chaos8
    ref = label == 3
    box = box_from_mask(main_object(ref))
    dices, fell = {}, {}
    for margin in (None, 0.0):
        s = InteractiveSession(image, segmenter, config=RefineConfig(fallback_margin=margin))
        mask, scr, rng = s.set_box(box, reference=ref), Scribbles(), np.random.default_rng(0)
        dices[margin] = []
        for _ in range(3):
            scr = _robot_step(mask, ref, box, image, scr, rng, 30.0)
            _add_new(s, scr)
            mask = s.refine()
            dices[margin].append(s.dice())
        fell[margin] = s.state().fallback
    assert fell == {None: False, 0.0: True}
    assert dices[0.0][:2] == dices[None][:2]  # the same until the correction that showed the damage
    assert dices[None][2] < dices[None][1]  # the tuned head's round 3 loses
    assert dices[0.0][2] > dices[None][2] + 0.02 and dices[0.0][2] >= dices[0.0][1]
