"""P-Net / PC-Net shapes: no downsampling, two-class output, recorded parameter counts."""
import pytest
import torch

from InteractiveRefineLib.engine.networks import ARCHITECTURES, build_network, count_parameters


@pytest.mark.parametrize("arch,shape", [("pnet2d", (2, 1, 96, 96)), ("pnet2d", (1, 1, 37, 53)),
                                        ("pcnet3d", (1, 1, 17, 48, 48)), ("pcnet3d", (2, 1, 8, 30, 41))])
def test_output_keeps_input_resolution(arch, shape):
    net = build_network(arch).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 2) + shape[2:]


def test_parameter_counts_are_small_and_recorded():
    # Recorded in the README and the manifests.
    assert count_parameters(build_network("pnet2d")) == 121730
    assert count_parameters(build_network("pcnet3d")) == 80746


def test_dilation_grows_per_block_and_head_has_dropout():
    for arch, p in ARCHITECTURES.items():
        d = [x if isinstance(x, int) else x[0] for x in p["dilations"]]
        assert d == sorted(d) and d[-1] > d[0]
        net = build_network(arch)
        assert any(isinstance(m, (torch.nn.Dropout2d, torch.nn.Dropout3d)) for m in net.head)
        strides = [m.stride for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
        assert all(all(s == 1 for s in st) for st in strides), "P-Net has no downsampling"


def test_unknown_architecture():
    with pytest.raises(KeyError):
        build_network("unet")


def test_symmetric_readings_are_mapped_back_and_averaged():
    """networks.Symmetric (test-time augmentation): each reading's features are those of the flipped/transposed
    plane mapped back onto the input grid, and the result is equivariant: flipping the input flips the output."""
    from InteractiveRefineLib.engine.networks import SliceWise, Symmetric
    torch.manual_seed(0)
    net = build_network("pnet2d").eval()
    x = torch.randn(1, 1, 24, 24)
    c = net.feature_channels
    sym = Symmetric(net, 8).eval()
    f = sym.features(x)
    assert f.shape[1] == 8 * c == sym.feature_channels
    torch.testing.assert_close(f[:, :c], net.features(x))
    torch.testing.assert_close(f[:, c:2 * c], torch.flip(net.features(torch.flip(x, (-1,))), (-1,)))
    torch.testing.assert_close(f[:, 4 * c:5 * c], net.features(x.transpose(-2, -1)).transpose(-2, -1))
    with torch.no_grad():
        p, q = torch.softmax(sym(x), 1), torch.softmax(sym(torch.flip(x, (-2,))), 1)
        torch.testing.assert_close(torch.flip(q, (-2,)), p, atol=1e-5, rtol=0)
        assert not torch.allclose(p, torch.softmax(net(x), 1), atol=1e-3)  # not the plain network's reading
        # slice by slice in 3D: each slice read the same way
        vol = torch.randn(1, 1, 3, 24, 24)
        torch.testing.assert_close(SliceWise(sym)(vol)[:, :, 1], sym(vol[:, :, 1]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        Symmetric(net, 3)
    with pytest.raises(ValueError, match="square"):
        sym.features(torch.randn(1, 1, 24, 20))
