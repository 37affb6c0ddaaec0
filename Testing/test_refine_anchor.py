"""RefineConfig.anchor: a box object's refinement leans on the shipped network's probability by a weight, in
every label update and in the result (the tuned head's drift on a structure it cannot learn is tempered)."""
import numpy as np
import pytest

from InteractiveRefineLib.core.prompts import box_from_mask, main_object
from InteractiveRefineLib.engine import finetune
from InteractiveRefineLib.engine.finetune import RefineConfig
from InteractiveRefineLib.engine.session import InteractiveSession
from InteractiveRefineLib.evaluation.robot import next_scribble


def _refined(chaos8, segmenter, **fields):
    """(session, network probability, tuned head's own probability) after one robot scribble on chaos_8's
    right kidney, slice 12 (2D box)."""
    image, label = chaos8
    ref = label == 2
    box = box_from_mask(main_object(ref), 0, 12)
    s = InteractiveSession(image, segmenter, config=RefineConfig(steps_2d=5, **fields))
    s.set_box(box, reference=ref)
    network = s.state().probability
    sc = next_scribble(s.mask(), ref, box, image.spacing_kji, np.random.default_rng(0))
    s.add_scribble(sc.voxels, sc.label)
    s.refine()
    ctx, st = s._ctx[s.active], s.state()
    own = finetune.model_probability(ctx.model(st.params), ctx.inputs)
    return s, network, own


def test_the_refined_probability_is_the_blend_of_network_and_tuned_head(chaos8, segmenter):
    s, network, own = _refined(chaos8, segmenter, anchor_2d=0.4)
    np.testing.assert_allclose(s.state().probability, 0.4 * network + 0.6 * own, atol=1e-6)
    assert np.abs(own - network).max() > 0.05  # the head did move: the blend is not the network alone
    s0, network0, own0 = _refined(chaos8, segmenter, anchor=0.9, anchor_2d=0.0)  # 3D's weight: not a 2D box's
    np.testing.assert_allclose(s0.state().probability, own0, atol=1e-6)
    s1, network1, _ = _refined(chaos8, segmenter, anchor_2d=1.0)  # the network alone: the head changes nothing
    np.testing.assert_allclose(s1.state().probability, network1, atol=1e-6)


@pytest.mark.parametrize("field", ["anchor", "anchor_2d"])
def test_an_anchor_outside_0_1_is_refused(field):
    with pytest.raises(ValueError, match=field):
        RefineConfig(**{field: 1.5})
