"""P-Net (2D) and PC-Net-like (3D) networks of BIFSeg (Wang et al., IEEE TMI 2018).

No downsampling: each block is a stack of dilated 3x3 (3x3x3) convolutions whose dilation grows from
block to block, so the receptive field grows while the output keeps the input resolution. The
features of all blocks are concatenated (the 3D variant compresses each block's features with a 1x1x1
convolution first) and a small classifier head with dropout maps them to class scores.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ..core.device import bf16_applies


def _conv_block(dim: int, c_in: int, c_out: int, n_layers: int, dilation, kernel) -> nn.Sequential:
    conv = nn.Conv2d if dim == 2 else nn.Conv3d
    layers = []
    for i in range(n_layers):
        pad = tuple(d * (k // 2) for d, k in zip(dilation, kernel))
        layers += [conv(c_in if i == 0 else c_out, c_out, kernel, padding=pad, dilation=dilation),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DilatedNet(nn.Module):
    """Shared body of P-Net and PC-Net.

    Args:
        dim: 2 or 3.
        channels: feature channels of each block.
        layers: convolutions per block.
        dilations: dilation per block; in 3D a pair (in-plane, through-plane) or one int for both.
        compress: 1x1 channels each block's output is compressed to before concatenation (0 = none).
        head_channels: hidden channels of the classifier head.
        dropout: dropout probability in the head.
        n_classes: output channels (2: background, foreground).
        in_channels: input channels: 1 (the image) or 2 (the image and the box mask, see inference).
    Input (N, C, H, W) or (N, C, D, H, W); output logits of the same spatial size.
    """

    def __init__(self, dim: int, channels: Sequence[int], layers: Sequence[int], dilations: Sequence,
                 compress: int = 0, head_channels: int = 64, dropout: float = 0.5, n_classes: int = 2,
                 in_channels: int = 1):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError("dim must be 2 or 3")
        if not (len(channels) == len(layers) == len(dilations)):
            raise ValueError("channels, layers and dilations need one entry per block")
        self.dim = dim
        conv1 = nn.Conv2d if dim == 2 else nn.Conv3d
        drop = nn.Dropout2d if dim == 2 else nn.Dropout3d
        self.blocks = nn.ModuleList()
        self.compressors = nn.ModuleList()
        c_in, cat = in_channels, 0
        for ch, n, d in zip(channels, layers, dilations):
            if dim == 2:
                dil, kernel = (int(d), int(d)), (3, 3)
            else:
                d_xy, d_z = (d, d) if isinstance(d, int) else d
                # Through-plane dilation 0 means a 1x3x3 (in-plane only) kernel: thick slices.
                kernel = (3 if d_z else 1, 3, 3)
                dil = (max(int(d_z), 1), int(d_xy), int(d_xy))
            self.blocks.append(_conv_block(dim, c_in, ch, n, dil, kernel))
            if compress:
                self.compressors.append(nn.Sequential(conv1(ch, compress, 1), nn.ReLU(inplace=True)))
                cat += compress
            else:
                self.compressors.append(nn.Identity())
                cat += ch
            c_in = ch
        self.feature_channels = cat
        self.head = nn.Sequential(
            drop(dropout), conv1(cat, head_channels, 1), nn.ReLU(inplace=True),
            drop(dropout), conv1(head_channels, n_classes, 1))

    #: run `features` in bfloat16, channels-last, when it runs on the CPU without gradients (inference and
    #: the frozen features of head-only fine-tuning); set by BoxSegmenter from its `precision`.
    bf16_cpu = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated block features (the frozen part when fine-tuning only the head); float32."""
        return self.raw_features(x).float()

    def low_precision(self, x: torch.Tensor) -> bool:
        """Whether `raw_features(x)` runs (and returns) bfloat16."""
        return bf16_applies(self.bf16_cpu, x.device) and not torch.is_grad_enabled()

    def raw_features(self, x: torch.Tensor) -> torch.Tensor:
        """`features`, in bfloat16 and channels-last where `bf16_cpu` applies (the caller converts once)."""
        if self.low_precision(x):
            layout = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self._features(x.contiguous(memory_format=layout))
        return self._features(x)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        for block, comp in zip(self.blocks, self.compressors):
            x = block(x)
            feats.append(comp(x))
        return torch.cat(feats, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCHITECTURES = {
    # P-Net of BIFSeg has 64 channels; 32 keeps 2D inference interactive on a 2-core CPU.
    "pnet2d": dict(dim=2, channels=(32, 32, 32, 32, 32), layers=(2, 2, 3, 3, 3),
                   dilations=(1, 2, 4, 8, 16), compress=0, head_channels=64, dropout=0.5),
    # PC-Net-like 3D: fewer channels, 1x1x1 compression before concatenation, in-plane-only
    # kernels in the first block and small through-plane dilation (slices are thick).
    "pcnet3d": dict(dim=3, channels=(16, 16, 16, 16, 16), layers=(2, 2, 3, 3, 3),
                    dilations=((1, 0), (2, 1), (4, 2), (8, 2), (16, 3)), compress=8,
                    head_channels=32, dropout=0.5),
}


class _Pointwise(nn.Module):
    """The 2D head (1x1 convolutions: every voxel on its own) on a (1, C, D, H, W) tensor in one call.
    Not slice by slice: fine-tuning feeds it ~10^4 sampled voxels as a (1, C, n, 1, 1) tensor, which a
    slice loop would run as n one-voxel slices (a 3D refinement took about a minute that way)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected a (N, C, D, H, W) tensor, got {tuple(x.shape)}")
        n, c, d, h, w = x.shape
        if n == 1 and not self.training and x.is_contiguous():
            y = _pointwise_matmul(self.module, x.reshape(c, -1))
            if y is not None:
                return y.reshape(1, y.shape[0], d, h, w)
        y = self.module(x.float().reshape(n, c, d * h, w))
        return y.reshape(n, y.shape[1], d, h, w)


def _pointwise_matmul(head: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
    """The head's 1x1 convolutions as matrix products on (C, voxels), float32 scores: three times faster than
    oneDNN's 1x1 convolution on a 3D box's 160-channel features (the three views' head took 0.25 s of a
    kidney box); bfloat16 features (SliceWise's where `bf16_cpu` applies) with bfloat16 weights. Dropout is
    the identity in eval mode. None for a layer it does not know (the caller runs the modules)."""
    for layer in head.children() if isinstance(head, nn.Sequential) else (head,):
        if isinstance(layer, (nn.Dropout, nn.Dropout2d, nn.Dropout3d)):
            continue
        if isinstance(layer, nn.ReLU):
            x = torch.relu(x)
        elif (isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1
              and layer.stride == (1, 1) and layer.padding == (0, 0)):
            w = layer.weight.reshape(layer.out_channels, -1).to(x.dtype)
            x = w @ x if layer.bias is None else torch.addmm(layer.bias.to(x.dtype)[:, None], w, x)
        else:
            return None
    return x.float()


def sample_slices(depth: int, max_slices: Optional[int]) -> Optional[torch.Tensor]:
    """Evenly spaced slice indices (first and last included) when `depth` exceeds `max_slices`, else None."""
    if not max_slices or depth <= max_slices:
        return None
    return torch.unique(torch.linspace(0, depth - 1, int(max_slices)).round().long())


def fill_between(out: torch.Tensor, index: torch.Tensor, axis: int) -> None:
    """Fill the slices of `out` along `axis` that lie between the computed slices `index` (increasing, first
    0, last the last) by linear interpolation, in place: whole-volume temporaries of 160 feature channels
    cost more than the network itself."""
    idx = [int(v) for v in index]
    graded = torch.is_grad_enabled()  # lerp(out=) has no gradient (whole-network fine-tuning takes one)
    for z0, z1 in zip(idx[:-1], idx[1:]):
        a, b = out.select(axis, z0), out.select(axis, z1)
        for z in range(z0 + 1, z1):
            if graded:
                out.select(axis, z).copy_(torch.lerp(a, b, (z - z0) / (z1 - z0)))
            else:
                torch.lerp(a, b, (z - z0) / (z1 - z0), out=out.select(axis, z))


# Three views read a 3D box across its other two axes too; a box thinner than this many voxels along any axis
# is read along one: chosen on the validation structures (benchmarks/box_networks/thin_rule.md, box step
# mean of groups: one view 0.512, three views 0.522, three views except thin boxes 0.548): the fetal corpus
# callosum (7-9 voxels across) collapsed with three views, and a 5-slice cord dropped at the third round.
THREE_VIEWS_MIN_SIDE = 10
# ... and a box whose three-view grid is deeper than this many slices (the grid is at most 48 deep) is read along
# one too: the views' cost grows with the depth and the 3D box step has a 1 s budget on the 2-core CPU
# (docs/box_networks.md, "Three views by default").
THREE_VIEWS_MAX_DEPTH = 40


def check_views(views: Optional[int], name: str = "views3d") -> None:
    """The slice-wise 3D network reads a box along one axis (1) or all three (3); None: the model's own."""
    if views not in (None, 1, 3):
        raise ValueError(f"{name} must be 1 or 3 (got {views})")


BF16_BATCH = 16  # slices per bfloat16 batch on the CPU


class SliceWise(nn.Module):
    """A 2D network applied slice by slice inside a 3D box ("2.5D"), with the 3D interface of DilatedNet.

    `features` and `head` take and return (1, C, D, H, W) tensors, so inference, the session's frozen
    features and head-only fine-tuning work unchanged; the 3D CRF then ties the slices together.
    The state dict is the 2D network's (prefixed "net."), so the same weights serve both.
    max_slices: above this many slices the features are computed on that many evenly spaced slices and
    interpolated linearly in between (thin slices are nearly alike; the latency of large 3D boxes).
    views: 1 slices the grid along D only; 3 also along H and along W (each such plane resampled to the
    network's in-plane size, its features resampled back onto the grid; at most `view_slices` slices
    each, default max_slices), and the head averages the three views' probabilities (multi-view fusion:
    an object elongated across D is seen along its length). The features of the views are stacked on
    the channel axis, so the head stays 1x1 and tunable. view_size: those other views' planes resampled to
    view_size x view_size instead (faster; measured and not used: benchmarks/box_networks/select_3d_views.md).
    """

    def __init__(self, net: DilatedNet, max_slices: Optional[int] = None, views: int = 1,
                 view_slices: Optional[int] = None, view_size: Optional[int] = None):
        super().__init__()
        if net.dim != 2:
            raise ValueError("SliceWise wraps a 2D network")
        if max_slices is not None and int(max_slices) < 2:
            raise ValueError(f"max_slices must be at least 2 (got {max_slices})")
        check_views(views, "views")
        self.net = net
        self.dim = 3
        self.max_slices = None if max_slices is None else int(max_slices)
        self.views = int(views)
        self.view_slices = self.max_slices if view_slices is None else int(view_slices)
        self.view_size = None if view_size is None else int(view_size)
        head = _Pointwise(net.head)
        self.head = head if self.views == 1 else _MeanOfViews(head, self.views)

    def _slices(self, planes: torch.Tensor):
        """Features of (n, C, H, W) planes, one (1, C', H, W) at a time on the CPU in float32 (the shipped
        network on 48 slices of 96 x 96: 1.9 s of CPU that way against 2.95 s as one batch), in batches of
        BF16_BATCH in bfloat16, one batch elsewhere."""
        if self._low_precision(planes):  # bfloat16 convolutions run faster in batches than slice by slice
            for chunk in planes.split(BF16_BATCH):
                yield from self.net.raw_features(chunk).split(1)
        elif planes.device.type == "cpu":
            for p in planes:
                yield self.net.features(p[None])
        else:
            yield from self.net.features(planes).split(1)

    def _low_precision(self, x: torch.Tensor) -> bool:
        """Whether the wrapped network computes `x`'s features in bfloat16 (a DilatedNet with bf16_cpu)."""
        low = getattr(self.net, "low_precision", None)
        return bool(low is not None and low(x))

    def _fill_along_d(self, x: torch.Tensor, out: torch.Tensor) -> None:
        index = sample_slices(x.shape[2], self.max_slices)
        picked = torch.arange(x.shape[2]) if index is None else index
        for z, f in zip(picked.tolist(), self._slices(x[0, :, picked.to(x.device)].transpose(0, 1))):
            out[:, :, z] = f
        if index is not None:
            fill_between(out, index, 2)

    def _fill_across(self, x: torch.Tensor, axis: int, out: torch.Tensor) -> None:
        """Features of the slices across grid axis `axis` (3: H, 4: W) written into `out` (1, C', D, H, W):
        each (D, other) plane is resampled to (size of `axis`, other), as the network's in-plane input, and
        its features back to (D, other)."""
        depth, other = x.shape[2], x.shape[7 - axis]
        index = sample_slices(x.shape[axis], self.view_slices)
        picked = torch.arange(x.shape[axis]) if index is None else index
        planes = x[0].index_select(axis - 1, picked.to(x.device)).movedim(axis - 1, 0)   # (n, C, D, other)
        size = (x.shape[axis], other) if self.view_size is None else (self.view_size, self.view_size)
        planes = torch.nn.functional.interpolate(planes, size=size, mode="bilinear", align_corners=False)
        if planes.shape[1] > 1:                         # the box channel stays binary
            planes[:, 1:] = (planes[:, 1:] > 0.5).to(planes.dtype)
        # Slices across W are one element apart in `out`: they are written and interpolated in a (1, C', W, D, H)
        # buffer and copied over at once (the strided writes cost a fifth of a three-view kidney box).
        target, along = (out, axis)
        if axis == 4:
            target, along = out.new_empty(out.shape[:2] + (out.shape[4],) + out.shape[2:4]), 2
        for s, f in zip(picked.tolist(), self._slices(planes)):
            target.select(along, s).copy_(torch.nn.functional.interpolate(f, size=(depth, other), mode="bilinear",
                                                                          align_corners=False))
        if index is not None:
            fill_between(target, index, along)
        if target is not out:
            out.copy_(target.permute(0, 1, 3, 4, 2))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(1, C' * views, D, H, W) features, written view by view into one contiguous tensor (concatenating
        and permuting 160-channel volumes cost about as much as the three views' convolutions); bfloat16 where
        the network computes in it (the head and finetune.voxel_sample take either)."""
        if x.dim() != 5 or x.shape[0] != 1:
            raise ValueError(f"expected a (1, C, D, H, W) tensor, got {tuple(x.shape)}")
        c = self.net.feature_channels
        # bfloat16 where the network computes in it: half the memory traffic of the fills and the head
        # (three views on a 39-slice grid hold 480 x 39 x 96 x 96 features)
        low = self._low_precision(x)
        out = x.new_empty((1, c * self.views) + tuple(x.shape[2:]), dtype=torch.bfloat16 if low else x.dtype)
        self._fill_along_d(x, out[:, :c])
        if self.views == 3:
            self._fill_across(x, 3, out[:, c:2 * c])
            self._fill_across(x, 4, out[:, 2 * c:])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _MeanOfViews(nn.Module):
    """The shared head on each view's block of feature channels; returns log of the mean probability, so
    softmax gives the views' mean probability and cross entropy trains the shared head through all."""

    def __init__(self, head: nn.Module, views: int):
        super().__init__()
        self.module = head
        self.views = views

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = [torch.log_softmax(self.module(part), dim=1) for part in torch.chunk(x, self.views, dim=1)]
        return torch.logsumexp(torch.stack(logp), dim=0) - math.log(self.views)


# The in-plane symmetries a 2D network reads a plane under (test-time augmentation): each is (transpose, flipped
# axes); training augments with all of them (training/augment.py), so each reading is in distribution.
SYMMETRIES = ((False, ()), (False, (-1,)), (False, (-2,)), (False, (-2, -1)),
              (True, ()), (True, (-1,)), (True, (-2,)), (True, (-2, -1)))


def check_symmetries(n: Optional[int], name: str = "symmetries") -> None:
    if n not in (None, 1, 2, 4, 8):
        raise ValueError(f"{name} must be 1, 2, 4 or 8 (got {n})")


class Symmetric(nn.Module):
    """A 2D network read under the first `n` of SYMMETRIES (test-time augmentation), with DilatedNet's
    interface: `features` stacks each reading's features, mapped back onto the input's grid, on the channel
    axis, and the head averages their probabilities (as _MeanOfViews does for views), so inference, the
    session's frozen features, head-only fine-tuning and SliceWise work unchanged. Transposing needs square
    planes: non-square ones are refused. The state dict is the 2D network's (prefixed "net.")."""

    def __init__(self, net: DilatedNet, n: int):
        super().__init__()
        if net.dim != 2:
            raise ValueError("Symmetric wraps a 2D network")
        check_symmetries(n, "n")
        self.net = net
        self.dim = 2
        self.n = int(n)
        self.feature_channels = net.feature_channels * self.n
        self.head = net.head if self.n == 1 else _MeanOfViews(net.head, self.n)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if self.n > 4 and x.shape[-1] != x.shape[-2]:
            raise ValueError(f"transposed readings need square planes, got {tuple(x.shape[-2:])}")
        c = self.net.feature_channels
        out = x.new_empty((x.shape[0], c * self.n) + tuple(x.shape[2:]))
        for i, (transpose, flips) in enumerate(SYMMETRIES[:self.n]):
            y = torch.flip(x, flips) if flips else x
            f = self.net.features(y.transpose(-2, -1) if transpose else y)
            f = f.transpose(-2, -1) if transpose else f
            out[:, i * c:(i + 1) * c] = torch.flip(f, flips) if flips else f
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_network(arch: str, **overrides) -> DilatedNet:
    """Build a named architecture ("pnet2d" or "pcnet3d"), optionally overriding its parameters."""
    if arch not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    params = dict(ARCHITECTURES[arch])
    params.update(overrides)
    return DilatedNet(**params)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
