"""The box network's training recipe of session 11: unions of touching structures, pseudo-objects drawn by
dataset group, a run started from a model's weights, and a model kept at every validation; since session 15
the share of ring pseudo-objects and the groups' weights are settings of a run."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from InteractiveRefineLib.core.errors import ModelError
from InteractiveRefineLib.core.image_io import Image
from InteractiveRefineLib.engine.inference import DEFAULT_INPUT
from InteractiveRefineLib.engine.models import load_model
from InteractiveRefineLib.training.box_samples import BoxSampler, touching_labels
from InteractiveRefineLib.training.box_sources import Volume
from InteractiveRefineLib.training.pseudo_objects import kind_probabilities, pseudo_object
from InteractiveRefineLib.training.train_box import BoxTrainConfig, train_box

CFG = dict(DEFAULT_INPUT, box_channel=True)


def _kidney_like(name="kidney", group="synthetic", seed=0):
    """12 x 64 x 64: a bright cortex (label 1) around a dark medulla (label 2), both one organ; a separate disc
    (label 3) touching neither."""
    rng = np.random.default_rng(seed)
    k, j, i = np.mgrid[:12, :64, :64]
    r = np.hypot(j - 28, i - 24)
    organ = (r <= 12) & (k >= 2) & (k <= 9)
    medulla = organ & (r <= 6)
    disc = (np.hypot(j - 44, i - 52) <= 6) & (k >= 3) & (k <= 8)
    lab = np.where(medulla, 2, np.where(organ, 1, np.where(disc, 3, 0))).astype(np.int16)
    img = 100 + 200 * (lab == 1) + 40 * (lab == 2) + 150 * (lab == 3) + rng.normal(0, 5, lab.shape)
    return Volume(name, group, Image(img.astype(np.float32), spacing=(1.0, 1.0, 3.0)), lab, (1, 2, 3),
                  {1: "cortex", 2: "medulla", 3: "disc"})


def test_touching_labels_pairs_structures_that_share_a_face_and_only_counted_ones():
    lab = _kidney_like().labels
    assert touching_labels(lab, (1, 2, 3)) == {1: [2], 2: [1]}
    assert touching_labels(lab, (1, 3)) == {}  # the medulla does not count: no pair through it


def test_union_samples_are_whole_organs_made_of_touching_parts():
    """With unions, a cortex sample's target holds its medulla too (the organ fills its box); without, never."""
    vol = _kidney_like()
    rng = np.random.default_rng(0)

    def cortex_with_medulla(sampler):
        sampler.structures["synthetic"] = [e for e in sampler.structures["synthetic"] if e[1] == 1]  # cortex
        found = 0
        for _ in range(40):
            out = sampler._labelled("synthetic", rng)
            if out is None:
                continue
            y = out[1].astype(bool)  # a whole organ is a filled disc; a cortex alone has a hole
            if y.sum() > 500 and (ndimage.binary_fill_holes(y) & ~y).sum() < 20:
                found += 1
        return found

    whole = cortex_with_medulla(BoxSampler([vol], CFG, {"pseudo": 0.0}, slab_fraction=0.0, union_fraction=1.0))
    single = cortex_with_medulla(BoxSampler([vol], CFG, {"pseudo": 0.0}, slab_fraction=0.0, union_fraction=0.0))
    assert whole >= 10 and single == 0
    sampler = BoxSampler([vol], CFG, {"pseudo": 0.0}, union_fraction=1.0)
    assert sorted(sampler.union(0, 1, rng)) == [1, 2] and sampler.union(0, 3, rng) == [3]


def test_pseudo_objects_come_from_every_group_evenly_not_from_the_largest():
    vols = [_kidney_like(f"big{i}", "big", i) for i in range(9)] + [_kidney_like("small", "small")]
    rng = np.random.default_rng(0)
    by_group = Counter(BoxSampler(vols, CFG, pseudo_by_group=True).pseudo_volume(rng).group for _ in range(1000))
    by_volume = Counter(BoxSampler(vols, CFG, pseudo_by_group=False).pseudo_volume(rng).group for _ in range(1000))
    assert 400 < by_group["small"] < 600
    assert by_volume["small"] < 150


@pytest.fixture
def tiny(tiny_box_config):
    """A tiny run validating every 2 iterations at lr 1e-2."""
    return lambda name, **kw: tiny_box_config(name, **dict(dict(val_every=2, lr=1e-2), **kw))


def test_a_run_started_from_a_model_begins_with_its_weights_and_its_score_as_the_bar(tmp_path, tiny):
    vols = [_kidney_like(), _kidney_like("k2", seed=1)]
    first = tiny("first")
    train_box(first, volumes=(vols, vols))
    start, _ = load_model(first.out)
    second = tiny("second", init_from=first.out, max_iters=2, val_every=1, lr=1e-12)  # steps change ~0
    train_box(second, volumes=(vols, vols))
    assert json.loads((tmp_path / "second" / "ck" / "snapshots" / "it00002.json").read_text())["validation"][
        "iteration"] == 2
    snap, _ = load_model(tmp_path / "second" / "ck" / "snapshots" / "it00001.json")
    for (k, a), b in zip(start.state_dict().items(), snap.state_dict().values()):
        if a.dtype.is_floating_point and "running" not in k:
            assert torch.allclose(a, b, atol=1e-6), k
    # the start was validated first and saved as the best so far
    state = json.loads((tmp_path / "second" / "ck" / "last.json").read_text())["state"]
    assert state["history"][0]["iteration"] == 0 and state["history"][0]["init_from"] == first.out
    assert (tmp_path / "second" / "m.json").is_file()


def test_each_validation_keeps_its_model(tmp_path, tiny):
    vols = [_kidney_like()]
    cfg = tiny("run")
    train_box(cfg, volumes=(vols, vols))
    snaps = sorted(p.name for p in (tmp_path / "run" / "ck" / "snapshots").glob("*.json"))
    assert snaps == ["it00002.json", "it00004.json"]
    a, _ = load_model(tmp_path / "run" / "ck" / "snapshots" / "it00002.json")
    b, _ = load_model(tmp_path / "run" / "ck" / "snapshots" / "it00004.json")
    assert not torch.equal(a.state_dict()["head.1.weight"], b.state_dict()["head.1.weight"])


def test_init_from_another_architecture_is_refused(tmp_path, tiny):
    vols = [_kidney_like()]
    first = tiny("first")
    train_box(first, volumes=(vols, vols))
    other = BoxTrainConfig(out=str(tmp_path / "o" / "m.json"), run_dir=str(tmp_path / "o" / "ck"),
                           init_from=first.out, input=dict(CFG, size2d=[32, 32]), batch=1, max_iters=1,
                           threads=1, device="cpu")  # default channels (32): not the saved model's 8
    with pytest.raises(ModelError, match="not this run's"):
        train_box(other, volumes=(vols, vols))


@pytest.mark.parametrize("scores,saved_at", [((0.9, 0.5, 0.95), [0, 4]), ((0.9, 0.5, 0.5), [0])])
def test_a_run_started_from_a_model_saves_a_best_only_above_the_models_own_score(tmp_path, monkeypatch, scores,
                                                                                 saved_at, tiny):
    """The start is saved as the best first (so --out never holds a stale or no model), then only a better one."""
    vols = [_kidney_like()]
    first = tiny("first")
    train_box(first, volumes=(vols, vols))
    it = iter(scores)  # the start, iteration 2, iteration 4
    monkeypatch.setattr("InteractiveRefineLib.training.train_box.validate", lambda *a: {"score": next(it)})
    saved = []
    monkeypatch.setattr("InteractiveRefineLib.training.train_box._save_best",
                        lambda net, arch, params, cfg, state, metrics, device: saved.append(metrics["iteration"]))
    train_box(tiny("second", init_from=first.out), volumes=(vols, vols))
    assert saved == saved_at


def test_a_resume_with_other_sampling_settings_is_refused_and_keeps_the_runs_start(tmp_path, tiny):
    vols = [_kidney_like()]
    first = tiny("first")
    train_box(first, volumes=(vols, vols))
    run = tiny("run", init_from=first.out, max_iters=4, stop_after_minutes=1e-9)
    train_box(run, volumes=(vols, vols))  # stops (checkpointed) after one iteration
    other = tiny("run", max_iters=4, union_fraction=0.0)
    with pytest.raises(ModelError, match="union_fraction"):
        train_box(other, resume=True, volumes=(vols, vols))
    with pytest.raises(ModelError, match="ring_share"):
        train_box(tiny("run", max_iters=4, ring_share=0.5), resume=True, volumes=(vols, vols))
    (tmp_path / "first" / "m.json").unlink()  # the start is not needed to resume: the checkpoint holds the run
    train_box(tiny("run", max_iters=4), resume=True, volumes=(vols, vols))
    assert json.loads((tmp_path / "run" / "m.json").read_text())["training"]["config"]["init_from"] == first.out


def test_a_union_box_spans_both_structures():
    """Two touching 12 x 12 squares side by side: a union's box is twice as long as wide, a single's square."""
    k, j, i = np.mgrid[:12, :64, :64]
    inside = (k >= 2) & (k <= 9) & (j >= 20) & (j < 32)
    lab = np.where(inside & (i >= 10) & (i < 22), 1, np.where(inside & (i >= 22) & (i < 34), 2, 0)).astype(np.int16)
    img = (100 + 150 * (lab == 1) + 60 * (lab == 2)).astype(np.float32)
    vol = Volume("squares", "synthetic", Image(img, spacing=(1.0, 1.0, 3.0)), lab, (1, 2), {1: "a", 2: "b"})
    rng = np.random.default_rng(0)

    def box_elongation(union_fraction):
        sampler = BoxSampler([vol], CFG, {"pseudo": 0.0}, slab_fraction=0.0, union_fraction=union_fraction)
        sampler.structures["synthetic"] = [e for e in sampler.structures["synthetic"] if e[1] == 1]
        ratios = []
        for _ in range(20):
            out = sampler._labelled("synthetic", rng)
            if out is not None:
                rows, cols = np.nonzero(out[0][-1] > 0.5)  # the box channel
                ext = sorted([np.ptp(rows) + 1, np.ptp(cols) + 1])
                ratios.append(ext[1] / ext[0])
        return np.median(ratios)

    assert box_elongation(1.0) > 1.6 and box_elongation(0.0) < 1.3


def test_ring_share_sets_how_many_pseudo_objects_have_a_hole():
    """A 5 x 5 grid of squares of distinct intensities: a ring (the squares around one) has a hole; more rings
    asked, more objects with a hole. The default share keeps the recipe of sessions 8-14 exactly."""
    img = np.zeros((80, 80), np.float32)
    for n, v in enumerate(np.random.default_rng(0).permutation(25) * 40 + 100):
        a, b = divmod(n, 5)
        img[10 + 12 * a:22 + 12 * a, 10 + 12 * b:22 + 12 * b] = v
    img += np.random.default_rng(1).normal(0, 3, img.shape).astype(np.float32)

    def with_hole(share):
        rng = np.random.default_rng(0)
        objs = [pseudo_object(img, rng, ring_share=share) for _ in range(60)]
        return sum(int(ndimage.binary_fill_holes(o).sum() > o.sum()) for o in objs if o is not None)

    none, default, every = with_hole(0.0), with_hole(0.2), with_hole(1.0)
    assert none + 6 < default and default + 6 < every
    assert kind_probabilities(0.2).tolist() == [0.5, 0.3, 0.2]


def test_group_weights_option_changes_the_named_groups_and_keeps_the_others():
    from InteractiveRefineLib.train_box_cli import group_weights
    from InteractiveRefineLib.training.train_box import GROUP_WEIGHTS
    weights = group_weights("fetal=0.3, cord=0")
    assert weights == dict(GROUP_WEIGHTS, fetal=0.3, cord=0.0)


def test_train_box_command_passes_ring_share_and_group_weights_to_the_sampler(tmp_path, monkeypatch, tiny):
    """`train-box --ring-share --group-weights` reach the run's config, and the run's sampler gets them."""
    from InteractiveRefineLib.cli import main
    from InteractiveRefineLib.training import train_box as tb
    seen = {}
    monkeypatch.setattr(tb, "train_box", lambda cfg, resume=False: seen.setdefault("cfg", cfg) and Path(cfg.out))
    main(["train-box", "--ring-share", "0.5", "--group-weights", "fetal=0.3", "--out", str(tmp_path / "m.json"),
          "--run-dir", str(tmp_path / "ck")])
    assert seen["cfg"].ring_share == 0.5 and seen["cfg"].group_weights["fetal"] == 0.3
    monkeypatch.undo()

    real = BoxSampler

    def spy(*args, **kwargs):
        seen["sampler"] = real(*args, **kwargs)
        return seen["sampler"]
    monkeypatch.setattr(tb, "BoxSampler", spy)
    vols = [_kidney_like()]
    train_box(tiny("run", max_iters=1, ring_share=0.7, group_weights={"synthetic": 2.0, "pseudo": 0.5}),
              volumes=(vols, vols))
    assert seen["sampler"].ring_share == 0.7 and seen["sampler"].p.tolist() == [0.8, 0.2]


def test_a_sampler_whose_groups_all_weigh_nothing_is_refused():
    with pytest.raises(ModelError, match="every sampling weight"):
        BoxSampler([_kidney_like()], CFG, {"synthetic": 0.0, "pseudo": 0.0})
