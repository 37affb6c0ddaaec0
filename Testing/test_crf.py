"""Graph-cut CRF: hard constraints, edge following, spacing, bad input."""
import numpy as np
import pytest

from InteractiveRefineLib.core.errors import PromptError
from InteractiveRefineLib.engine.crf import crf_segment, neighbour_offsets


def _step_image(shape=(40, 40), edge=22, noise=0.0, seed=0):
    """Dark left half, bright right half from column `edge` on."""
    x = np.zeros(shape)
    x[:, edge:] = 1.0
    if noise:
        x += np.random.default_rng(seed).normal(0, noise, shape)
    return x


def test_follows_the_intensity_edge_not_the_blurry_probability():
    x = _step_image(noise=0.05)
    # A network that is unsure where the object starts: a ramp centred 5 columns left of the edge.
    cols = np.arange(40)
    prob = np.tile(1.0 / (1.0 + np.exp(-(cols - 17) / 4.0)), (40, 1))
    assert (prob >= 0.5).sum(axis=1).min() == 23  # thresholding puts the boundary at column 17
    lab = crf_segment(prob, x, (1.0, 1.0), lam=3.0)
    assert np.array_equal(lab, np.broadcast_to(cols >= 22, lab.shape)), "the cut snaps to the step at column 22"


def test_without_smoothness_it_is_a_threshold():
    rng = np.random.default_rng(1)
    prob = rng.random((20, 30))
    lab = crf_segment(prob, rng.random((20, 30)), (1.0, 1.0), lam=0.0)
    assert np.array_equal(lab, prob > 0.5)


def test_hard_constraints_hold_against_confident_network():
    x = _step_image()
    prob = np.where(x > 0.5, 0.999, 0.001)
    fg = np.zeros_like(x, bool)
    bg = np.zeros_like(x, bool)
    fg[5, 3] = True  # a dark voxel the user says is object
    bg[30:33, 30:33] = True  # bright voxels the user says are background
    lab = crf_segment(prob, x, (1.0, 1.0), lam=3.0, fg_seeds=fg, bg_seeds=bg)
    assert lab[fg].all() and not lab[bg].any()


def test_scribble_flips_a_region_bounded_by_edges():
    """A foreground seed inside a dark square the network called background pulls the whole square in."""
    x = np.zeros((40, 40))
    x[10:20, 10:20] = 1.0
    prob = np.full(x.shape, 0.3)  # unsure, leaning background
    fg = np.zeros_like(x, bool)
    fg[14:16, 12:18] = True
    bg = np.zeros_like(x, bool)
    bg[0, :] = True
    lab = crf_segment(prob, x, (1.0, 1.0), lam=5.0, fg_seeds=fg, bg_seeds=bg)
    square = np.zeros_like(lab)
    square[10:20, 10:20] = True
    assert np.array_equal(lab, square)


def test_3d_anisotropic_spacing_weakens_through_plane_coupling():
    """Same unaries, thick slices: a weak slice is not dragged along by its neighbours."""
    prob = np.full((3, 10, 10), 0.8)
    prob[1] = 0.3
    x = np.zeros(prob.shape)
    fine = crf_segment(prob, x, (1.0, 1.0, 1.0), lam=1.0)
    thick = crf_segment(prob, x, (8.0, 1.0, 1.0), lam=1.0)
    assert fine.all(), "isotropic: the middle slice joins its neighbours"
    assert thick[0].all() and thick[2].all() and not thick[1].any(), "8 mm slices: each slice decides alone"


def test_conflicting_seeds_and_bad_shapes():
    x = np.zeros((5, 5))
    seeds = np.zeros((5, 5), bool)
    seeds[2, 2] = True
    with pytest.raises(PromptError, match="both"):
        crf_segment(np.full((5, 5), 0.5), x, (1, 1), fg_seeds=seeds, bg_seeds=seeds)
    with pytest.raises(ValueError):
        crf_segment(np.full((5, 5), 0.5), np.zeros((5, 6)), (1, 1))
    with pytest.raises(ValueError, match="connectivity"):
        crf_segment(np.full((5, 5), 0.5), x, (1, 1), connectivity=6)


@pytest.mark.parametrize("ndim,conn,n", [(2, 4, 2), (2, 8, 4), (3, 6, 3), (3, 10, 5), (3, 26, 13)])
def test_neighbourhoods(ndim, conn, n):
    assert len(neighbour_offsets(ndim, conn)) == n
