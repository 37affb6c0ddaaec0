"""Same-scan propagation: one annotated slice segments the rest of the organ in the same scan."""
import json

import numpy as np
import pytest

from FewShotSegLib.cli import main
from FewShotSegLib.engine.propagate import CARRIED_REGROW, RegrowthStop, check_regrow, propagate, propagate_mask
from FewShotSegLib.engine.protocol import organ_slices
from FewShotSegLib.engine.segment import FewShotSegmenter, make_supports
from FewShotSegLib.evaluation.evaluate import support_copy
from FewShotSegLib.options import BOX_PRECISIONS
from InteractiveRefineLib.core.device import PRECISIONS, cpu_bf16_supported
from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.core.image_io import read_label
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask
from InteractiveRefineLib.core.sample import sample_dataset


def largest_slice(lab, organ):
    z = organ_slices(lab, organ)
    return int(z[np.argmax([(lab[i] == organ).sum() for i in z])]), int(z[0]), int(z[-1]) + 1


@pytest.fixture(scope="module")
def default_segmenter():
    return FewShotSegmenter(device="cpu")


def test_propagation_beats_support_copy_on_the_sample(default_segmenter, chaos8, propagation_box):
    """chaos_8 was never seen by the default model; support = the organ's largest slice of chaos_8 itself."""
    img, lab = chaos8
    for organ in (2, 4):                 # right kidney, spleen (measured: 0.87 vs 0.74, 0.88 vs 0.65)
        k, z0, z1 = largest_slice(lab, organ)
        ref = lab == organ
        copy = np.zeros_like(ref)
        copy[z0:z1] = support_copy(make_supports(img, lab, k, [organ]), img, z0, z1, np.zeros(z1 - z0, int))
        given = propagate(default_segmenter, img, lab, k, organ, slices=(z0, z1))
        assert given.slices == (z0, z1)
        d_prop, d_copy = dice(given.labels == organ, ref), dice(copy, ref)
        assert d_prop > d_copy + 0.08, (organ, d_prop, d_copy)
        # InteractiveRefine's box network over each slice (segment --propagate's default) changes the result
        boxed = propagate(default_segmenter, img, lab, k, organ, slices=(z0, z1), box_segmenter=propagation_box)
        assert boxed.info["box_network"] and (boxed.labels != given.labels).any()
        # by default the box network is first tuned on the annotated slice (exemplar.py): it changes the slices'
        # result (the final 3D pass runs the shipped network in that result's box: compared without it)
        assert boxed.info["box_exemplar"]["steps"] > 0
        kw = dict(slices=(z0, z1), box_segmenter=propagation_box, box3d_views=None)
        tuned = propagate(default_segmenter, img, lab, k, organ, **kw)
        untuned = propagate(default_segmenter, img, lab, k, organ, box_exemplar=None, **kw)
        assert tuned.info["box_exemplar"]["steps"] > 0 and untuned.info["box_exemplar"] is None
        assert (untuned.labels != tuned.labels).any()
        assert dice(boxed.labels == organ, ref) > d_copy + 0.08
        # automatic range: stops where the organ ends (within 2 slices), about as good as the given range
        auto = propagate(default_segmenter, img, lab, k, organ)
        assert abs(auto.slices[0] - z0) <= 2 and abs(auto.slices[1] - z1) <= 2, (auto.slices, (z0, z1))
        assert dice(auto.labels == organ, ref) > d_copy + 0.05


def test_the_automatic_range_ends_where_the_mask_turns_darker_than_the_annotation(default_segmenter, chaos8):
    """dark_stop: with the automatic range, a slice whose mask is on average more than dark_stop standard
    deviations of the annotated pixels darker than their mean ends that direction; a given range is kept."""
    img, lab = chaos8
    k, z0, z1 = largest_slice(lab, 2)
    ann = img.array[k][lab[k] == 2]
    free = propagate(default_segmenter, img, lab, k, 2, dark_stop=None)
    strict = propagate(default_segmenter, img, lab, k, 2, dark_stop=0.0)  # any slice darker than the mean
    assert free.info["dark_stop"] is None and strict.info["dark_stop"] == 0.0
    (a0, a1), (b0, b1) = free.slices, strict.slices
    assert a0 <= b0 <= k < b1 <= a1 and (b1 - b0) < (a1 - a0)
    m = free.labels == 2
    for z in (b0 - 1, b1):                     # where the strict run stopped, the free run's mask is darker
        if a0 <= z < a1:
            assert img.array[z][m[z]].mean() < ann.mean(), z
    for z in range(b0, b1):                    # the slices kept are the free run's, up to where it stopped
        np.testing.assert_array_equal(strict.labels[z] == 2, m[z])
    given = propagate(default_segmenter, img, lab, k, 2, slices=(z0, z1), dark_stop=0.0)
    assert given.slices == (z0, z1) and given.info["dark_stop"] is None
    with pytest.raises(PromptError, match="dark_stop"):
        propagate(default_segmenter, img, lab, k, 2, dark_stop=-1.0)


# carried areas (image pixels) of two recorded training runs (benchmarks/fewshot_choices/auto_dark_stop_*.jsonl):
# chaos_31's left kidney, from its largest slice (1220 pixels) upwards, runs on into the tissue below the kidney
# (true positives 1165, 919, 888, 632, 196, 0, ...); chaos_34's spleen tapers off to its end.
LEFT_KIDNEY_ON = [1260, 1380, 1664, 1971, 2174, 2364, 2438, 2352]
SPLEEN_ENDING = [2595, 2035, 1883, 1551, 1270, 863, 390]


def kept_until_regrowth(annotated, areas, regrow=CARRIED_REGROW):
    growth = RegrowthStop(annotated, *regrow)
    for n, a in enumerate(areas):
        if growth.ends(a):
            return n
        growth.keep(a)
    return len(areas)


def test_the_regrowth_stop_ends_a_mask_that_widens_again_after_shrinking():
    """RegrowthStop: once the carried mask has shrunk below 85% of the annotation, 25% above its smallest ends it,
    unless it had exceeded 110% of the annotation before (an organ widening from a slice low in it)."""
    assert CARRIED_REGROW == (0.85, 1.25, 1.1)
    assert kept_until_regrowth(2600, SPLEEN_ENDING) == len(SPLEEN_ENDING)  # a tapering organ runs to its end
    assert kept_until_regrowth(1220, LEFT_KIDNEY_ON, (1.01, 1.25)) == 2  # 1664 > 1.25 * 1220: ends there
    assert kept_until_regrowth(1220, LEFT_KIDNEY_ON) == len(LEFT_KIDNEY_ON)  # never shrank below 85%: runs on
    # chaos_34's left kidney: shrinks to 920 (82% of 1120), then widens into its neighbour: ends at 1169
    assert kept_until_regrowth(1120, [1192, 1058, 920, 1169, 1380, 1584]) == 3
    widening = [1150, 800, 1100]                  # above 110% first: its own dip and widening go on
    assert kept_until_regrowth(1000, widening) == 3 and kept_until_regrowth(1000, widening, (0.85, 1.25)) == 2
    assert check_regrow(None) is None and check_regrow([0.9, 1.3]) == (0.9, 1.3)
    for bad in ((0.9,), (0.0, 1.2), (0.9, float("nan")), "ab", (0.9, 1.2, 1.1, 2.0)):
        with pytest.raises(PromptError, match="carried_regrow"):
            check_regrow(bad)


def test_propagation_applies_the_regrowth_stop_to_the_automatic_range_with_the_box_network(default_segmenter,
                                                                                          chaos8, propagation_box):
    """As chosen: on the masks the box network carries, with the automatic range only."""
    img, lab = chaos8
    k, z0, z1 = largest_slice(lab, 2)
    kw = dict(box_segmenter=propagation_box, box_exemplar=None, box3d_views=None)  # the slices as carried
    free = propagate(default_segmenter, img, lab, k, 2, carried_regrow=None, **kw)
    strict = propagate(default_segmenter, img, lab, k, 2, carried_regrow=(1.01, 1.0), **kw)  # no regrowth at all
    assert free.info["carried_regrow"] is None and strict.info["carried_regrow"] == [1.01, 1.0]
    (a0, a1), (b0, b1) = free.slices, strict.slices
    assert a0 <= b0 <= k < b1 <= a1 and (b1 - b0) < (a1 - a0)
    areas = (free.labels == 2).sum((1, 2))
    assert areas[b1] > areas[b1 - 1] or areas[b0 - 1] > areas[b0]   # it stopped where the carried mask grew
    for z in range(b0, b1):                    # the slices kept are the free run's, up to where it stopped
        np.testing.assert_array_equal(strict.labels[z] == 2, free.labels[z] == 2)
    given = propagate(default_segmenter, img, lab, k, 2, slices=(z0, z1), carried_regrow=(1.01, 1.0), **kw)
    assert given.slices == (z0, z1) and given.info["carried_regrow"] is None
    plain = propagate(default_segmenter, img, lab, k, 2, carried_regrow=(1.01, 1.0))   # no box network: not used
    assert plain.info["carried_regrow"] is None
    for rng in (None, (z0, z1)):  # refused with a given range too, where it is not used
        with pytest.raises(PromptError, match="carried_regrow"):
            propagate(default_segmenter, img, lab, k, 2, slices=rng, carried_regrow=(0.9, -1.0))


def test_the_3d_box_pass_redoes_the_organ_inside_its_box_and_keeps_the_annotated_slice(default_segmenter, chaos8,
                                                                                       propagation_box):
    """By default (box3d_views 3, chosen on training patients) the box network's 3D box step redoes the
    propagated organ's bounding box; the annotated slice stays as annotated, nothing leaves that box. Since the
    sixteenth session also with the automatic range (it gained there on training patients with that session's
    networks); `follow`'s automatic range keeps none."""
    img, lab = chaos8
    k, z0, z1 = largest_slice(lab, 4)
    ref = lab == 4
    last = propagate(default_segmenter, img, lab, k, 4, slices=(z0, z1), box_segmenter=propagation_box)
    before = propagate(default_segmenter, img, lab, k, 4, slices=(z0, z1), box_segmenter=propagation_box,
                       box3d_views=None)
    assert last.info["box3d_views"] == 3 and before.info["box3d_views"] is None
    a, b = last.labels == 4, before.labels == 4
    assert (a != b).sum() > 100                                    # the pass changes the result
    assert np.array_equal(a[k], ref[k])                            # the annotation is kept exactly
    assert not (a & ~box_from_mask(b).mask(ref.shape)).any()       # inside the propagated organ's box
    assert dice(a, ref) > 0.8, (dice(a, ref), dice(b, ref))
    auto = propagate(default_segmenter, img, lab, k, 4, box_segmenter=propagation_box)
    plain = propagate(default_segmenter, img, lab, k, 4, box_segmenter=propagation_box, box3d_views=None)
    assert auto.info["box3d_views"] == 3 and plain.info["box3d_views"] is None and auto.slices == plain.slices
    a, b = auto.labels == 4, plain.labels == 4
    assert (a != b).sum() > 100 and np.array_equal(a[k], ref[k])
    assert not (a & ~box_from_mask(b).mask(ref.shape)).any()
    with pytest.raises(ValueError, match="box3d_views"):
        propagate(default_segmenter, img, lab, k, 4, slices=(z0, z1), box_segmenter=propagation_box, box3d_views=2)


def test_propagate_command_and_its_refusals(default_segmenter, chaos8, tmp_path, capsys):
    data = sample_dataset("chaos")
    img, lab = data / "imagesTr/chaos_8.nii.gz", data / "labelsTr/chaos_8.nii.gz"
    out = tmp_path / "p.nii.gz"
    rc = main(["--threads", "1", "segment", "--propagate", "--support-image", str(img), "--support-label", str(lab),
               "--slice", "12", "--label", "2", "--range", "5:15", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    pred = read_label(out)
    assert set(np.unique(pred)) == {0, 2} and not pred[:5].any() and not pred[16:].any() and pred[12].any()
    assert BOX_PRECISIONS == PRECISIONS  # the torch-free options module keeps its own copy
    native = "bfloat16" if cpu_bf16_supported() else "float32"
    assert json.loads(capsys.readouterr().out)["box_precision"] == native
    rc = main(["--threads", "1", "segment", "--propagate", "--support-image", str(img), "--support-label", str(lab),
               "--slice", "12", "--label", "2", "--range", "11:13", "--out", str(out), "--device", "cpu",
               "--no-exemplar-tuning", "--no-box3d", "--box-precision", "fp32"])
    assert rc == 0 and json.loads(capsys.readouterr().out)["box_precision"] == "float32"
    bad = [(["--label", "1", "--label", "2"], "one organ"),
           (["--query", str(data / "imagesTr/chaos_36.nii.gz")], "itself"),
           (["--no-box-network", "--no-exemplar-tuning"], "--no-box-network turns off"),
           (["--no-box-network", "--no-box3d"], "--no-box-network turns off"),
           (["--no-dark-stop", "--range", "5:15"], "never cut"),
           (["--no-regrow-stop", "--range", "5:15"], "never cut")]
    for extra, msg in bad:
        rc = main(["segment", "--propagate", "--support-image", str(img), "--support-label", str(lab), "--slice",
                   "12", "--out", str(tmp_path / "q.nii.gz"), "--device", "cpu"] + extra)
        assert rc == 2 and msg in capsys.readouterr().err
    with pytest.raises(PromptError, match="must hold the annotated slice"):
        propagate(default_segmenter, *chaos8, 12, 2, slices=(13, 20))


@pytest.mark.parametrize("argv,refused", [
    (["--propagate", "--no-box3d"], False),                           # the automatic range has the pass too
    (["--propagate", "--no-box3d", "--range", "5:15"], False),
    (["--follow", "--no-box3d", "--range", "5:15"], False),
    (["--follow", "--no-box3d"], True)])                             # follow's automatic range has none
def test_no_box3d_is_read_wherever_a_3d_pass_runs(argv, refused):
    from FewShotSegLib.cli import build_parser
    from FewShotSegLib.options import check_propagation_flags
    args = build_parser().parse_args(["segment", "--support-image", "s", "--support-label", "l", "--slice", "3",
                                      "--out", "o.nii.gz"] + argv)
    if refused:
        with pytest.raises(PromptError, match="automatic range has no 3D pass"):
            check_propagation_flags(args)
    else:
        check_propagation_flags(args)


def test_propagation_reads_the_box_network_at_its_own_cut(chaos8, propagation_box, segmenter):
    """Propagation's settings were chosen with the box network cut at 0.5; boxes drawn by a user use the shipped
    manifest's lower cut (0.3): the same probabilities, shifted by -logit(0.3) (inference.shift_foreground)."""
    img, lab = chaos8
    k = largest_slice(lab, 2)[0]
    box = box_from_mask(lab == 2, 0, k)
    own, user = (s.predict(img, box).probability[k].astype(np.float64) for s in (propagation_box, segmenter))
    inside = (own > 0.02) & (own < 0.98)
    shift = np.log(user[inside] / (1 - user[inside])) - np.log(own[inside] / (1 - own[inside]))
    # exact on the network grid; resampling to the image grid blends probabilities, not logits: the median
    assert inside.sum() > 50 and abs(np.median(shift) + np.log(0.3 / 0.7)) < 0.01


def test_every_propagation_path_reads_the_box_network_at_its_own_cut(monkeypatch):
    """The panel's run and the compute child (which hosts both panels' propagation) take the box network from
    propagate.box_network, as the commands do: cut at 0.5 in 2D and 3D boxes, not the shipped manifests' cuts
    for drawn boxes."""
    from types import SimpleNamespace

    from FewShotSegLib.panel import run
    from InteractiveRefineLib.compute.service import ComputeService
    served = ComputeService().box_segmenter("cpu")
    assert (served.threshold2d, served.threshold3d) == (0.5, 0.5)
    seen = []
    monkeypatch.setattr(run, "_propagate", lambda request, seg, box, *rest: seen.append(box))
    request = SimpleNamespace(use_box_network=True, propagate=True, follow=False)  # the fields _run reads
    run._run(request, lambda device: None, None, "cpu", None, None)
    assert len(seen) == 1 and (seen[0].threshold2d, seen[0].threshold3d) == (0.5, 0.5)


def test_propagate_from_a_2d_mask(default_segmenter, chaos8):
    img, lab = chaos8
    k, z0, z1 = largest_slice(lab, 4)
    a = propagate(default_segmenter, img, lab, k, 4, slices=(z0, z1)).labels == 4
    b = propagate_mask(default_segmenter, img, lab[k] == 4, k, slices=(z0, z1)).labels == 1
    assert np.array_equal(a, b)
    with pytest.raises(PromptError, match="slice mask has shape"):
        propagate_mask(default_segmenter, img, lab[k, :10] == 4, k)
