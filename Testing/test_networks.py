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
