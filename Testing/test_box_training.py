"""The class-agnostic box network's training pieces: slice-wise 3D use, pseudo-objects, samples,
exact resume, and the filled-box baseline."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from InteractiveRefineLib.core.errors import ModelError
from InteractiveRefineLib.core.image_io import Image
from InteractiveRefineLib.core.prompts import make_box
from InteractiveRefineLib.engine.inference import DEFAULT_INPUT, plan_for
from InteractiveRefineLib.engine.networks import SliceWise, build_network
from InteractiveRefineLib.engine.scribbles import Scribbles
from InteractiveRefineLib.evaluation.methods import make_runners
from InteractiveRefineLib.training.box_samples import BoxSampler
from InteractiveRefineLib.training.box_sources import Volume
from InteractiveRefineLib.training.checkpoint import load_checkpoint
from InteractiveRefineLib.training.pseudo_objects import pseudo_object
from InteractiveRefineLib.training.train_box import BoxTrainConfig, lr_at, train_box, training_batches

CFG = dict(DEFAULT_INPUT, box_channel=True)


def _ring_volume(seed=0, name="rings"):
    """Synthetic 12 x 64 x 64 volume: a bright ring (label 1) around a dark cavity, a disc (label 2)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.mgrid[:12, :64, :64]
    r = np.hypot(j - 30, i - 24)
    ring = (r >= 6) & (r <= 11) & (k >= 2) & (k <= 9)
    disc = (np.hypot(j - 40, i - 50) <= 7) & (k >= 3) & (k <= 8)
    img = 100 + 200 * ring + 120 * disc + rng.normal(0, 5, (12, 64, 64))
    lab = ring.astype(np.int16) + 2 * disc.astype(np.int16)
    return Volume(name, "synthetic", Image(img.astype(np.float32), spacing=(1.0, 1.0, 3.0)), lab, (1, 2),
                  {1: "ring", 2: "disc"})


def test_slicewise_equals_the_2d_network_on_each_slice():
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    x = torch.randn(1, 2, 5, 24, 24)
    with torch.no_grad():
        out = SliceWise(net)(x)
        per = torch.stack([net(x[:, :, d]) for d in range(5)], dim=2)
    assert out.shape == (1, 2, 5, 24, 24)
    assert torch.allclose(out, per, atol=1e-5)


def test_slicewise_max_slices_computes_sampled_slices_and_interpolates_between():
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    x = torch.randn(1, 2, 9, 24, 24)
    with torch.no_grad():
        full = SliceWise(net).features(x)
        light = SliceWise(net, max_slices=5).features(x)  # slices 0, 2, 4, 6, 8
        assert torch.allclose(SliceWise(net, max_slices=9).features(x), full, atol=1e-5)  # not above max
    assert light.shape == full.shape
    for k in (0, 2, 4, 6, 8):
        assert torch.allclose(light[:, :, k], full[:, :, k], atol=1e-5)
    for k in (1, 3, 5, 7):  # linear between its neighbours, not the slice's own features
        assert torch.allclose(light[:, :, k], (full[:, :, k - 1] + full[:, :, k + 1]) / 2, atol=1e-5)
        assert not torch.allclose(light[:, :, k], full[:, :, k], atol=1e-3)
    with pytest.raises(ValueError, match="max_slices"):
        SliceWise(net, max_slices=1)


def test_slicewise_head_runs_once_on_sampled_voxels():
    """Fine-tuning feeds the head ~10^4 sampled voxels as (1, C, n, 1, 1): one call, not n one-voxel slices
    (that made a 3D refinement take about a minute), and the same scores as voxel by voxel."""
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    calls = []
    net.head.register_forward_hook(lambda *args: calls.append(1))
    voxels = torch.randn(1, net.head[1].in_channels, 3000, 1, 1)
    with torch.no_grad():
        out = SliceWise(net).head(voxels)
        calls_batched = len(calls)
        per = net.head(voxels[0].permute(1, 0, 2, 3))  # (n, C, 1, 1): each voxel an image
    assert calls_batched == 1 and out.shape == (1, 2, 3000, 1, 1)
    assert torch.allclose(out[0].permute(1, 0, 2, 3), per, atol=1e-5)


def test_slicewise_three_views_see_the_grid_along_each_axis_and_average_probabilities():
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    x = torch.randn(1, 2, 24, 24, 20)
    x[:, 1] = 0
    x[:, 1, 4:20, 4:20, 3:17] = 1  # the box channel
    x = (x + x.transpose(2, 3)) / 2  # symmetric in D and H: slices across H are the slices across D
    one, three = SliceWise(net), SliceWise(net, views=3)
    with torch.no_grad():
        f0, f3 = one.features(x), three.features(x)
        c = f0.shape[1]
        assert f3.shape == (1, 3 * c, 24, 24, 20) and f3.is_contiguous()  # no copy when the head runs
        assert torch.allclose(f3[:, :c], f0, atol=1e-5)                      # view 0: the slices across D
        assert torch.allclose(f3[:, c:2 * c], f0.transpose(2, 3), atol=1e-4)  # view 1: across H, put back
        assert not torch.allclose(f3[:, 2 * c:], f0, atol=1e-2)              # view 2: across W, another view
        p3 = torch.softmax(three(x), dim=1)
        per_view = [torch.softmax(one.head(f3[:, v * c:(v + 1) * c]), dim=1) for v in range(3)]
    assert torch.allclose(p3, sum(per_view) / 3, atol=1e-5)
    with pytest.raises(ValueError, match="views"):
        SliceWise(net, views=2)


def test_slicewise_view_across_w_is_put_back_in_the_grid_orientation():
    """A grid symmetric under the cyclic shift (D, H, W) -> (H, W, D): each plane across W, read as (D, H), is the
    plane across D with the same index, read as (H, W); so its features, put back, are the first view's moved."""
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    x = torch.randn(1, 2, 24, 24, 24)
    x[:, 1] = 0
    x[:, 1, 4:20, 4:20, 4:20] = 1
    x = (x + x.permute(0, 1, 3, 4, 2) + x.permute(0, 1, 4, 2, 3)) / 3
    with torch.no_grad():
        f3 = SliceWise(net, views=3).features(x)
    c = f3.shape[1] // 3
    assert torch.allclose(f3[:, 2 * c:], f3[:, :c].permute(0, 1, 3, 4, 2), atol=1e-4)
    assert not torch.allclose(f3[:, 2 * c:], f3[:, :c].permute(0, 1, 4, 2, 3), atol=1e-2)


def test_three_views_pass_gradients_to_the_whole_network():
    """Fine-tuning the whole network (the panel's "Fine-tune the whole network") runs SliceWise with gradients;
    the rows between the sampled ones across H and W are interpolated without lerp(out=), which has none."""
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    sw = SliceWise(net, max_slices=4, views=3).eval()
    with torch.enable_grad():
        sw(torch.randn(1, 2, 6, 20, 20)).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.blocks[0].parameters())


def test_slicewise_head_in_eval_mode_runs_as_matrix_products_with_the_convolutions_scores():
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    calls = []
    net.head.register_forward_hook(lambda *args: calls.append(1))
    feats = torch.randn(1, net.feature_channels, 5, 7, 6)
    sw = SliceWise(net).eval()
    with torch.no_grad():
        fast = sw.head(feats)
        assert not calls  # the modules did not run
        conv = net.head(feats.reshape(1, -1, 35, 6)).reshape(1, 2, 5, 7, 6)  # the 1x1 convolutions
    assert calls and fast.shape == (1, 2, 5, 7, 6)
    assert torch.allclose(fast, conv, atol=1e-5)


def test_slicewise_view_slices_samples_rows_across_the_other_axes_and_interpolates_between():
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    x = torch.randn(1, 2, 6, 9, 9)
    with torch.no_grad():
        full = SliceWise(net, views=3).features(x)
        light = SliceWise(net, views=3, view_slices=5).features(x)  # rows/columns 0, 2, 4, 6, 8
    c = full.shape[1] // 3
    assert torch.allclose(light[:, :c], full[:, :c], atol=1e-5)  # across D: every slice (6 <= max_slices)
    for axis in (3, 4):
        block = slice(c, 2 * c) if axis == 3 else slice(2 * c, 3 * c)
        lf, ff = light[:, block], full[:, block]
        for k in (0, 4, 8):
            assert torch.allclose(lf.select(axis, k), ff.select(axis, k), atol=1e-5)
        mid = (ff.select(axis, 2) + ff.select(axis, 4)) / 2
        assert torch.allclose(lf.select(axis, 3), mid, atol=1e-5)
        assert not torch.allclose(lf.select(axis, 3), ff.select(axis, 3), atol=1e-3)


def test_three_views_crop_has_a_margin_through_plane_too():
    image = _ring_volume().image
    box = make_box((4, 19, 13), (8, 42, 36))
    one = plan_for(box, image, dict(CFG, slicewise=True))
    three = plan_for(box, image, dict(CFG, slicewise=True, slicewise_views=3))
    assert (one.region_lo[0], one.region_hi[0]) == (4, 8)
    assert (three.region_lo[0], three.region_hi[0]) == (0, 12)  # 10 mm at 3 mm slices, clipped to the image
    assert three.region_lo[1:] == one.region_lo[1:] and three.out_shape == (12, 96, 96)


def test_slicewise_crop_keeps_native_slices_and_box_channel_marks_the_box():
    image = _ring_volume().image
    box = make_box((2, 19, 13), (10, 42, 36))
    spec = plan_for(box, image, dict(CFG, slicewise=True))
    assert spec.out_shape == (8, 96, 96) and spec.region_lo[0] == 2 and spec.region_hi[0] == 10
    from InteractiveRefineLib.engine.inference import network_input
    x = network_input(image.array, spec, CFG)
    assert x.shape == (2, 8, 96, 96)
    assert abs(x[1].mean() - (23 / 43) ** 2) < 0.03 and x[1, :, 48, 48].all() and not x[1, :, 0, 0].any()


@pytest.mark.parametrize("kind", ["single", "merged", "ring"])
def test_pseudo_objects_are_one_piece_inside_the_slice(kind):
    vol = _ring_volume()
    rng = np.random.default_rng(3)
    obj = pseudo_object(vol.image.array[5], rng, kind=kind)
    assert obj is not None and obj.any()
    from scipy import ndimage
    assert ndimage.label(obj)[1] == 1
    assert not (obj[0].any() or obj[-1].any() or obj[:, 0].any() or obj[:, -1].any())


def test_samples_target_the_object_inside_the_box():
    sampler = BoxSampler([_ring_volume()], CFG, {"pseudo": 0.0})
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = sampler.sample(rng)
        assert x.shape == (2, 96, 96) and y.shape == (96, 96)
        assert not (y.astype(bool) & (x[1] < 0.5)).any(), "target outside the box"
    # a ring's sample keeps its hole: the object is not a filled blob
    ring_hole = False
    for _ in range(30):
        x, y = sampler._labelled("synthetic", rng) or (None, None)
        if y is not None and y.any():
            from scipy import ndimage
            ring_hole |= bool((ndimage.binary_fill_holes(y) & ~y.astype(bool)).sum() > 20)
    assert ring_hole


def test_learning_rate_warms_up_then_decays():
    cfg = BoxTrainConfig(lr=1e-3, warmup=10, max_iters=110)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(10, cfg) == pytest.approx(1e-3)
    assert lr_at(110, cfg) == pytest.approx(2e-5)


@pytest.mark.parametrize("workers,precision", [(0, "fp32"), (2, "fp32"), (0, "bf16")])
def test_resume_is_bit_identical(tmp_path, tiny_box_config, workers, precision):
    vols = [_ring_volume(0), _ring_volume(1, "rings2")]
    full = tiny_box_config("full", max_iters=6, warmup=2, sample_workers=workers, precision=precision)
    train_box(full, volumes=(vols, vols))
    half = tiny_box_config("half", max_iters=6, warmup=2, sample_workers=workers, precision=precision)
    half.stop_after_minutes = 1e-9  # stop (checkpointed) after the first iteration
    train_box(half, volumes=(vols, vols))
    for _ in range(10):
        train_box(half, resume=True, volumes=(vols, vols))
    net_a, net_b = build_network("pnet2d", in_channels=2, channels=(8,) * 5), build_network(
        "pnet2d", in_channels=2, channels=(8,) * 5)
    opt_a, opt_b = torch.optim.Adam(net_a.parameters()), torch.optim.Adam(net_b.parameters())
    sa = load_checkpoint(tmp_path / "full" / "ck" / "last.json", net_a, opt_a, np.random.default_rng())
    sb = load_checkpoint(tmp_path / "half" / "ck" / "last.json", net_b, opt_b, np.random.default_rng())
    assert sa["iteration"] == sb["iteration"] == 6
    for (ka, va), (kb, vb) in zip(net_a.state_dict().items(), net_b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    # and it learned something: not the initial weights
    assert not torch.equal(net_a.state_dict()["head.1.weight"],
                           build_network("pnet2d", in_channels=2, channels=(8,) * 5).state_dict()["head.1.weight"])


def test_bf16_training_computes_in_bfloat16(tmp_path, tiny_box_config):
    """precision bf16 runs the forward pass in bfloat16 (the same steps from the same start end at other weights than
    float32's, which are exactly reproducible) and records it in the validation history; an unknown one is refused.
    Whether it trains as well is measured on a real run (docs/box_networks.md), not here."""
    from InteractiveRefineLib.core.errors import ModelError
    vols = [_ring_volume(0), _ring_volume(1, "rings2")]
    nets = {}
    for precision in ("fp32", "bf16"):
        cfg = tiny_box_config(precision, max_iters=6, warmup=2, val_every=6, precision=precision)
        train_box(cfg, volumes=(vols, vols))
        net = build_network("pnet2d", in_channels=2, channels=(8,) * 5)
        state = load_checkpoint(tmp_path / precision / "ck" / "last.json", net, torch.optim.Adam(net.parameters()),
                                np.random.default_rng())
        assert state["history"][-1]["precision"] == precision
        nets[precision] = net.state_dict()["head.1.weight"]
    assert not torch.equal(nets["bf16"], nets["fp32"])
    # a float32 run resumed in bfloat16 (a setting that may change on resume, like the threads) records where
    cfg = tiny_box_config("fp32", max_iters=8, warmup=2, val_every=6, precision="bf16")
    train_box(cfg, resume=True, volumes=(vols, vols))
    state = load_checkpoint(tmp_path / "fp32" / "ck" / "last.json", net, torch.optim.Adam(net.parameters()),
                            np.random.default_rng())
    assert state["iteration"] == 8 and state["precisions"] == [[0, "fp32"], [6, "bf16"]]
    with pytest.raises(ModelError, match="training precision"):
        train_box(tiny_box_config("bad", precision="fp16"), volumes=(vols, vols))


def test_bf16_training_warns_on_a_cpu_without_native_bfloat16(tiny_box_config, monkeypatch, caplog):
    monkeypatch.setattr("InteractiveRefineLib.training.train_box.cpu_bf16_supported", lambda: False)
    vols = [_ring_volume(0)]
    with caplog.at_level("WARNING"):
        train_box(tiny_box_config("emulated", max_iters=1, precision="bf16"), volumes=(vols, vols))
    assert "without native bfloat16" in caplog.text


def test_sample_workers_draw_each_sample_from_its_index_for_any_worker_count():
    vols = [_ring_volume(0), _ring_volume(1, "rings2")]
    sampler = BoxSampler(vols, dict(CFG, size2d=[32, 32]))
    cfg = BoxTrainConfig(batch=3, max_iters=5)

    def batch(workers, start, skip=0):
        it = training_batches(sampler, np.random.default_rng(0), replace(cfg, sample_workers=workers), start)
        for _ in range(skip):
            next(it)
        return next(it)

    x1, y1 = batch(1, start=0, skip=3)  # the fourth batch, from one worker
    x2, y2 = batch(2, start=3)          # the same batch by its index, from two workers, as a resumed run draws it
    assert x1.shape == (3, 2, 32, 32) and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(batch(2, start=2)[0], x1)  # each index has its own samples
    xs, _ = batch(0, start=3)  # one stream (the default): not drawn by index
    assert xs.shape == x1.shape and not torch.equal(xs, x1)


def test_one_stream_draws_the_batch_as_the_recipe_of_sessions_1_to_15():
    vols = [_ring_volume(0), _ring_volume(1, "rings2")]
    sampler = BoxSampler(vols, dict(CFG, size2d=[32, 32]))
    x, y = next(training_batches(sampler, np.random.default_rng(5), BoxTrainConfig(batch=3), 0))
    rng = np.random.default_rng(5)
    xs, ys = zip(*[sampler.sample(rng) for _ in range(3)])
    assert torch.equal(x, torch.from_numpy(np.stack(xs))) and torch.equal(y, torch.from_numpy(np.stack(ys)))


def test_resume_refuses_to_switch_between_one_stream_and_indexed_samples(tmp_path, tiny_box_config):
    vols = [_ring_volume(0)]
    train_box(tiny_box_config("run", max_iters=2), volumes=(vols, vols))
    with pytest.raises(ModelError, match="one stream"):
        train_box(tiny_box_config("run", max_iters=4, sample_workers=2), resume=True, volumes=(vols, vols))
    # a checkpoint written before the setting existed drew from one stream: it resumes so, and only so
    last = tmp_path / "run" / "ck" / "last.json"
    meta = json.loads(last.read_text())
    del meta["state"]["config"]["sample_workers"]
    last.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="one stream"):
        train_box(tiny_box_config("run", max_iters=4, sample_workers=1), resume=True, volumes=(vols, vols))
    train_box(tiny_box_config("run", max_iters=3), resume=True, volumes=(vols, vols))


def test_train_box_returns_no_model_before_its_first_validation(tmp_path, tiny_box_config):
    vols = [_ring_volume(0)]
    cfg = tiny_box_config("run", max_iters=4, val_every=2)
    cfg.stop_after_minutes = 1e-9  # one iteration, then stop (checkpointed)
    assert train_box(cfg, volumes=(vols, vols)) is None
    out = train_box(cfg, resume=True, volumes=(vols, vols))  # iteration 2: validated, so a best was saved
    assert out == tmp_path / "run" / "m.json" and out.is_file()
    other = replace(cfg, out=str(tmp_path / "elsewhere.json"))  # iteration 3: no validation, so no new best
    assert train_box(other, resume=True, volumes=(vols, vols)) == out  # the best stays where it was saved


def test_filled_box_baseline_is_the_box_with_scribbles_set():
    vol = _ring_volume()
    box = make_box((5, 17, 11), (6, 44, 38), axis=0)
    runner = make_runners(["filled_box"], vol.image, box, segmenter=None)["filled_box"]
    mask, _ = runner.start()
    assert (mask == box.mask(vol.image.shape)).all()
    sc = Scribbles(fg=np.array([[5, 2, 2]]), bg=np.array([[5, 30, 24]]))
    mask, _ = runner.update(sc)
    assert mask[5, 2, 2] and not mask[5, 30, 24] and mask[5, 20, 20]


def test_installing_the_shipped_2d_network_gives_the_shipped_3d_input_settings(tmp_path):
    """install_models writes box3d.json's input (slice-wise, at most 16 slices, three views) as shipped."""
    import json

    from InteractiveRefineLib.engine.models import models_dir
    from InteractiveRefineLib.training.train_box import install_models
    _, p3 = install_models(models_dir() / "pnet2d.json", tmp_path)
    assert json.loads(p3.read_text())["input"] == json.loads((models_dir() / "box3d.json").read_text())["input"]


def test_installing_with_a_2d_cut_writes_it_for_2d_boxes_only_and_refuses_a_bad_one(tmp_path):
    """The shipped 2D cut (0.3) was chosen after training: install_models writes it into pnet2d.json, which the
    BoxSegmenter then applies; box3d.json keeps the 0.5 cut (no entry)."""
    import json

    from InteractiveRefineLib.core.errors import ModelError
    from InteractiveRefineLib.engine.inference import foreground_threshold
    from InteractiveRefineLib.engine.models import models_dir
    from InteractiveRefineLib.training.train_box import install_models
    p2, p3 = install_models(models_dir() / "pnet2d.json", tmp_path, foreground_threshold=0.4)
    assert json.loads(p2.read_text())["input"]["foreground_threshold"] == 0.4
    assert "foreground_threshold" not in json.loads(p3.read_text())["input"]
    assert foreground_threshold(json.loads(p2.read_text()), p2) == 0.4  # what BoxSegmenter applies
    with pytest.raises(ModelError, match="cut"):
        install_models(models_dir() / "pnet2d.json", tmp_path / "bad", foreground_threshold=1.5)
    assert not (tmp_path / "bad").exists()


def test_installing_with_a_3d_cut_writes_it_for_3d_boxes_only_and_refuses_a_bad_one(tmp_path):
    """A 3D boxes' cut chosen after training goes into box3d.json only; pnet2d.json keeps its own."""
    import json

    from InteractiveRefineLib.core.errors import ModelError
    from InteractiveRefineLib.engine.models import models_dir
    from InteractiveRefineLib.training.train_box import install_models
    p2, p3 = install_models(models_dir() / "pnet2d.json", tmp_path, foreground_threshold_3d=0.6)
    assert json.loads(p3.read_text())["input"]["foreground_threshold"] == 0.6
    shipped2 = json.loads((models_dir() / "pnet2d.json").read_text())["input"]["foreground_threshold"]
    assert json.loads(p2.read_text())["input"]["foreground_threshold"] == shipped2
    with pytest.raises(ModelError, match="3D foreground cut"):
        install_models(models_dir() / "pnet2d.json", tmp_path / "bad", foreground_threshold_3d=0.0)
    assert not (tmp_path / "bad").exists()


def test_the_retraining_script_installs_the_shipped_cuts():
    """scripts/train_box_models.sh (its train-box command echoed, not run) installs with the cuts the shipped
    manifests carry, so a retrain from scratch ships the same settings."""
    import os
    import shlex
    import subprocess
    import sys
    from pathlib import Path

    from InteractiveRefineLib.cli import build_parser
    from InteractiveRefineLib.engine.models import models_dir
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(["bash", "scripts/train_box_models.sh"], cwd=root, capture_output=True, text=True, check=True,
                         env=dict(os.environ, PY=sys.executable, TRAIN_BOX="echo train-box")).stdout
    args = build_parser().parse_args(shlex.split(out))
    assert args.install
    for cut, name in ((args.install_cut2d, "pnet2d.json"), (args.install_cut3d, "box3d.json")):
        shipped = json.loads((models_dir() / name).read_text())["input"].get("foreground_threshold")
        assert cut == shipped, (name, cut, shipped)


def test_validation_reads_3d_boxes_as_the_shipped_box3d_reads_them(chaos8):
    """The training's validation scores a 3D box with the network alone exactly as BoxSegmenter reads it with the
    shipped box3d.json (three views, 16 slices; session 18: one view ranked snapshots the other way round)."""
    from InteractiveRefineLib.core.metrics import dice
    from InteractiveRefineLib.engine.inference import BoxSegmenter
    from InteractiveRefineLib.engine.models import default_model_path, load_model
    from InteractiveRefineLib.training.train_box import validate, validation_cases
    image, label = chaos8
    cases = validation_cases([Volume("chaos_8", "kidney", image, label, (2,), {2: "right kidney"})])
    net, manifest = load_model(default_model_path(2))
    scores = validate(net, manifest["input"], cases, torch.device("cpu"))
    box3d, m = cases[0][5], cases[0][3]
    shipped = [dice(BoxSegmenter(device="cpu", precision="fp32", threshold3d=0.5, views3d=v).predict(image, box3d)
                    .mask, m) for v in (3, 1)]
    assert abs(shipped[0] - shipped[1]) > 0.005  # the views matter on this kidney, so the check below can fail
    assert scores["kidney_3d"] == round(shipped[0], 4)


def test_resume_scores_a_best_of_the_one_view_validation_again(tmp_path, tiny_box_config, caplog):
    """A checkpoint whose best was scored before session 18 (3D boxes with one view) is compared like with like
    after a resume: its best model is scored again; without that model the next validation saves a new best."""
    from InteractiveRefineLib.training.train_box import VALIDATION_3D
    vols = [_ring_volume(0), _ring_volume(1, "rings2")]
    last = tmp_path / "run" / "ck" / "last.json"

    def resume_from_old_checkpoint(max_iters):
        meta = json.loads(last.read_text())
        meta["state"]["best"] = 0.99  # a score no validation of this tiny run reaches
        del meta["state"]["best_validation_3d"]  # as written before session 18
        last.write_text(json.dumps(meta))
        train_box(tiny_box_config("run", max_iters=max_iters, val_every=2), resume=True, volumes=(vols, vols))
        net = build_network("pnet2d", in_channels=2, channels=(8,) * 5)
        return load_checkpoint(last, net, torch.optim.Adam(net.parameters()), np.random.default_rng())

    train_box(tiny_box_config("run", max_iters=2, val_every=2), volumes=(vols, vols))
    with caplog.at_level("INFO"):
        state = resume_from_old_checkpoint(3)
    first, second = (h["score"] for h in state["history"])
    assert "scored again" in caplog.text and state["best_validation_3d"] == VALIDATION_3D
    assert state["history"][-1]["validation_3d"] == VALIDATION_3D
    assert state["best"] == max(first, second)  # the best of iteration 2 rescored exactly as it scored then
    (tmp_path / "run" / "m.json").unlink()
    with caplog.at_level("WARNING"):
        state = resume_from_old_checkpoint(4)
    assert "not here" in caplog.text
    assert state["best"] == state["history"][-1]["score"] and (tmp_path / "run" / "m.json").is_file()


def test_a_run_from_scratch_never_overwrites_another_runs_checkpoint(tmp_path, tiny_box_config):
    vols = [_ring_volume(0)]
    train_box(tiny_box_config("run", max_iters=2), volumes=(vols, vols))
    last = tmp_path / "run" / "ck" / "last.json"
    before = last.read_bytes(), last.with_suffix(".safetensors").read_bytes()
    with pytest.raises(ModelError, match="--resume"):
        train_box(tiny_box_config("run", max_iters=4), volumes=(vols, vols))
    assert (last.read_bytes(), last.with_suffix(".safetensors").read_bytes()) == before
    train_box(tiny_box_config("run", max_iters=3), resume=True, volumes=(vols, vols))  # continuing it is fine


def test_scoring_an_old_best_again_leaves_the_resumed_run_bit_identical(tmp_path, tiny_box_config, caplog):
    """Rescoring builds a network (drawing initial weights from torch's RNG): the run's own RNG, and so its dropout
    masks and weights after the resume, must not move."""
    import shutil
    vols = [_ring_volume(0), _ring_volume(1, "rings2")]
    train_box(tiny_box_config("a", max_iters=2, val_every=2), volumes=(vols, vols))
    shutil.copytree(tmp_path / "a" / "ck", tmp_path / "b" / "ck")
    last_b = tmp_path / "b" / "ck" / "last.json"
    meta = json.loads(last_b.read_text())
    del meta["state"]["best_validation_3d"]  # b's best (a's m.json) is scored again on resume, a's is not
    last_b.write_text(json.dumps(meta))
    weights = []
    for name in ("a", "b"):
        with caplog.at_level("INFO"):
            caplog.clear()
            train_box(tiny_box_config(name, max_iters=6, val_every=100), resume=True, volumes=(vols, vols))
        assert ("scored again" in caplog.text) == (name == "b")
        net = build_network("pnet2d", in_channels=2, channels=(8,) * 5)
        load_checkpoint(tmp_path / name / "ck" / "last.json", net, torch.optim.Adam(net.parameters()),
                        np.random.default_rng())
        weights.append(net.state_dict())
    for (ka, va), (kb, vb) in zip(weights[0].items(), weights[1].items()):
        assert ka == kb and torch.equal(va, vb), ka
