"""bfloat16 CPU inference of the box networks (BoxSegmenter precision "auto", the default): on a CPU with native
bfloat16 the frozen features run in bfloat16, channels-last; the float32 result is kept for fine-tuning's
gradients, "fp32" switches it off, and on a real kidney (chaos_8, a CHAOS test patient) the result is the float32
one within a hair."""
import pytest
import torch

from InteractiveRefineLib.core.device import cpu_bf16_supported
from InteractiveRefineLib.core.errors import AdaptiveSegError
from InteractiveRefineLib.core.metrics import dice
from InteractiveRefineLib.core.prompts import box_from_mask, main_object
from InteractiveRefineLib.engine.inference import BoxSegmenter, network_input, plan_for
from InteractiveRefineLib.engine.networks import SliceWise, build_network
from InteractiveRefineLib.engine.session import InteractiveSession

needs_bf16 = pytest.mark.skipif(not cpu_bf16_supported(), reason="this CPU has no native bfloat16")
LEFT_KIDNEY = 3


def test_unknown_precision_is_a_named_error():
    with pytest.raises(AdaptiveSegError, match="precision 'fp16'"):
        BoxSegmenter(device="cpu", precision="fp16")
    with pytest.raises(AdaptiveSegError, match="precision None"):
        BoxSegmenter(device="cpu", precision=None)


def test_only_native_bfloat16_counts(monkeypatch):
    """oneDNN runs bfloat16 on any AVX512 CPU, emulated (slower than float32) without AVX512-BF16 or AMX."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not cpu_bf16_supported()
    assert not BoxSegmenter(device="cpu").bf16_cpu


def test_the_bfloat16_path_on_any_cpu():
    """The dtypes and layouts, forced on (emulated where the CPU lacks bfloat16): 2D features bfloat16 inside,
    float32 out; slice-wise features bfloat16 with float32 scores; a 3D PC-Net's 5D input takes its layout."""
    torch.manual_seed(0)
    net = build_network("pnet2d", in_channels=2).eval()
    net.bf16_cpu = True
    x = torch.randn(1, 2, 24, 24)
    with torch.no_grad():
        assert net.raw_features(x).dtype == torch.bfloat16 and net.features(x).dtype == torch.float32
        sw = SliceWise(net, views=3).eval()
        f = sw.features(torch.randn(1, 2, 12, 24, 24))
        assert f.dtype == torch.bfloat16 and sw.head(f).dtype == torch.float32
        pc = build_network("pcnet3d", in_channels=2).eval()
        pc.bf16_cpu = True
        assert pc.features(torch.randn(1, 2, 8, 24, 24)).dtype == torch.float32


def test_fp32_keeps_the_network_in_float32():
    net, _ = BoxSegmenter(device="cpu", precision="fp32").model(2)
    assert not net.bf16_cpu


@pytest.fixture(scope="module")
def kidney(chaos8):
    image, label = chaos8
    truth = main_object(label == LEFT_KIDNEY)
    return image, truth, box_from_mask(truth)


@needs_bf16
def test_auto_features_run_in_bfloat16_close_to_float32_and_gradients_stay_float32(kidney):
    image, truth, box3d = kidney
    k = int(truth.sum((1, 2)).argmax())
    box = box_from_mask(truth, 0, k)
    seg = BoxSegmenter(device="cpu")
    net, manifest = seg.model(2)
    assert net.bf16_cpu
    x = torch.from_numpy(network_input(image.array, plan_for(box, image, manifest["input"]), manifest["input"]))[None]
    with torch.no_grad():
        low = net.features(x)
    with torch.enable_grad():  # fine-tuning layers beyond the head: float32, as before
        full = net.features(x).detach()
    net.bf16_cpu = False
    try:
        with torch.no_grad():
            fp32 = net.features(x)
    finally:
        net.bf16_cpu = True
    assert low.dtype == torch.float32 and low.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(full, fp32)
    err = float((low - fp32).abs().max() / fp32.abs().max())
    assert 0 < err < 0.02, err  # measured 0.004: bfloat16 really ran, and closely


@needs_bf16
def test_auto_and_fp32_give_the_same_3d_kidney(kidney):
    image, truth, box = kidney
    sessions = {p: InteractiveSession(image, BoxSegmenter(device="cpu", precision=p), device="cpu", validate=False)
                for p in ("auto", "fp32")}
    masks = {p: s.set_box(box) for p, s in sessions.items()}
    assert [s._ctx["object"].inputs.dtype for s in sessions.values()] == [torch.bfloat16, torch.float32]
    assert dice(masks["auto"], masks["fp32"]) > 0.98
    assert dice(masks["auto"], truth) > dice(box.mask(image.shape), truth) + 0.2
