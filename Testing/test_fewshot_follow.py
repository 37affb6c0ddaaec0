"""Few-shot to find, same-scan propagation to follow (engine/follow.py): on the embedded sample (query chaos_8,
never seen by the default model; support: one drawn slice of chaos_36), following the automatic window's
prediction from its middle slice through the query beats the prediction itself."""
import numpy as np
import pytest
from fewshot_panel_run import run_fewshot_panel  # this folder

from FewShotSegLib.cli import main
from FewShotSegLib.engine.follow import follow, seed_slice
from FewShotSegLib.engine.propagate import propagate
from FewShotSegLib.engine.segment import FewShotSegmenter, auto_range_info, make_supports
from FewShotSegLib.panel.controller import FewShotRequest, request_from_message, request_message
from FewShotSegLib.panel.support_slice import default_support_slice
from InteractiveRefineLib.core.data import DecathlonDataset
from InteractiveRefineLib.core.image_io import read_label, write_image
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.sample import sample_dataset


@pytest.fixture(scope="module")
def pair():
    ds = DecathlonDataset(sample_dataset("chaos"))
    return ds.load("chaos_36"), ds.load("chaos_8"), FewShotSegmenter(device="cpu")


@pytest.mark.parametrize("organ", [2, 4])  # right kidney, spleen (measured: 0.76 -> 0.87, 0.79 -> 0.86)
def test_following_the_window_through_the_query_beats_the_window(pair, organ):
    (s_img, s_lab), (q_img, q_lab), seg = pair
    k = default_support_slice(s_lab == organ)
    one = np.zeros_like(s_lab)
    one[k] = s_lab[k]
    window = seg.segment(make_supports(s_img, one, k, [organ]), q_img, auto_range=True,
                         auto=auto_range_info(s_img, one, [organ], q_img)).labels == organ
    followed = follow(seg, q_img, window)
    ref = q_lab == organ
    assert dice(followed, ref) > dice(window, ref) + 0.05, (dice(window, ref), dice(followed, ref))
    z = seed_slice(window)
    on = np.flatnonzero(window.any((1, 2)))
    assert z == on[len(on) // 2]                                    # the middle predicted slice
    seeded = np.zeros(q_lab.shape, np.uint8)
    seeded[z] = window[z]
    np.testing.assert_array_equal(followed, propagate(seg, q_img, seeded, z, 1).labels == 1)


def test_following_with_the_box_network_and_the_automatic_range_has_no_3d_pass(pair, propagation_box):
    """Propagation's automatic range took the 3D pass in the sixteenth session; follow's was chosen without it."""
    _, (q_img, q_lab), seg = pair
    window = q_lab == 2  # any mask: here the reference itself
    followed = follow(seg, q_img, window, box_segmenter=propagation_box, box_exemplar=None)
    z = seed_slice(window)
    seeded = np.zeros(q_lab.shape, np.uint8)
    seeded[z] = window[z]
    kw = dict(box_segmenter=propagation_box, box_exemplar=None)
    without = propagate(seg, q_img, seeded, z, 1, box3d_views=None, **kw).labels == 1
    with_pass = propagate(seg, q_img, seeded, z, 1, **kw).labels == 1
    np.testing.assert_array_equal(followed, without)
    assert (with_pass != without).any()  # else the case would not show it
    on = np.flatnonzero(window.any((1, 2)))
    rng = (int(on[0]), int(on[-1]) + 1)  # a given range keeps the 3D pass, as it was chosen with it
    np.testing.assert_array_equal(follow(seg, q_img, window, slices=rng, **kw),
                                  propagate(seg, q_img, seeded, z, 1, slices=rng, **kw).labels == 1)


def test_the_evaluation_follows_with_the_base_network_also_after_adaptation(pair):
    """As `segment --follow --adapt` and the panel do (chosen on training patients:
    benchmarks/fewshot_auto_range/follow_adapted.md): the adapted copy segments, the base network follows."""
    from FewShotSegLib.evaluation.evaluate import protocol_case

    (s_img, s_lab), (q_img, q_lab), seg = pair
    adapted, followers = FewShotSegmenter(device="cpu"), []

    def follower(net, image, mask, slices):
        followers.append(net)
        return mask
    protocol_case(seg, (s_img, s_lab), (q_img, q_lab), 2, "gt", adapter=lambda *a: adapted, follow=follower)
    assert followers == [seg] and followers[0] is not adapted


def test_follow_of_an_empty_mask_and_the_evaluate_option_outside_the_protocol(pair, tmp_path, capsys):
    _, (q_img, _), seg = pair
    empty = np.zeros(q_img.shape, bool)
    assert seed_slice(empty) is None and not follow(seg, q_img, empty).any()
    rc = main(["evaluate", "--dataset", str(sample_dataset("chaos")), "--pairs", "1", "--follow",
               "--out", str(tmp_path / "e")])
    assert rc == 2 and "--follow" in capsys.readouterr().err and not (tmp_path / "e").exists()
    data = sample_dataset("chaos")
    rc = main(["segment", "--propagate", "--follow", "--support-image", str(data / "imagesTr/chaos_8.nii.gz"),
               "--support-label", str(data / "labelsTr/chaos_8.nii.gz"), "--slice", "12", "--label", "2",
               "--out", str(tmp_path / "p.nii.gz")])
    assert rc == 2 and "--follow" in capsys.readouterr().err and not (tmp_path / "p.nii.gz").exists()


def test_segment_follow_and_the_panels_follow_write_the_followed_labels(pair, tmp_path, capsys):
    """`segment --follow`: the few-shot result of each label followed through the query (with the box network);
    the FewShotSeg panel's "Follow through the query" (through the compute protocol) gives exactly that."""
    (s_img, s_lab), (q_img, q_lab), seg = pair
    data = sample_dataset("chaos")
    k = default_support_slice(s_lab == 4)
    one = np.zeros_like(s_lab)
    one[k] = s_lab[k] == 4
    write_image(s_img, tmp_path / "one.nii.gz", one)  # one drawn slice: the panel's case
    args = ["segment", "--support-image", str(data / "imagesTr/chaos_36.nii.gz"), "--support-label",
            str(tmp_path / "one.nii.gz"), "--slice", str(k), "--label", "1", "--query",
            str(data / "imagesTr/chaos_8.nii.gz"), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "w.nii.gz")]) == 0
    assert main(args + ["--follow", "--out", str(tmp_path / "f.nii.gz")]) == 0
    assert '"followed": true' in capsys.readouterr().out
    w, f = (read_label(tmp_path / n) == 1 for n in ("w.nii.gz", "f.nii.gz"))
    ref = q_lab == 4
    assert dice(f, ref) > dice(w, ref) + 0.03, (dice(w, ref), dice(f, ref))
    request = FewShotRequest(s_img, {"spleen": one == 1}, k, q_img, device="cpu", follow=True)
    fields, arrays = request_message(request)
    assert request_from_message(fields, arrays).follow
    status = run_fewshot_panel(request, seg)
    assert status.result.info["followed"] and status.result.info["box_network"]
    np.testing.assert_array_equal(status.result.masks["spleen"], f)
    # --no-box-network is honoured by --follow, as the panel's box-network option is: the few-shot network alone
    capsys.readouterr()
    assert main(args + ["--follow", "--no-box-network", "--out", str(tmp_path / "n.nii.gz")]) == 0
    assert '"box_network": false' in capsys.readouterr().out
    np.testing.assert_array_equal(read_label(tmp_path / "n.nii.gz") == 1, follow(seg, q_img, w))
