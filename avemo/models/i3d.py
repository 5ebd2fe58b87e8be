"""I3D (Inception-v1 inflated) with every temporal stride 1, and the TCN over its 7 steps (SPEC 4).

:class:`InceptionI3d` keeps the parameter names of the public pytorch-i3d ``InceptionI3d``
(``Conv3d_1a_7x7.conv3d.weight``, ``Mixed_3b.b1b.bn.running_mean``, ...), so that its checkpoints
(``rgb_imagenet.pt``, ``rgb_charades.pt``) need no renaming. Clips ``B x 3 x 8 x 224 x 224`` ->
``B x 1024 x 7``.

:class:`TemporalConvNet` is the CVPRW JCA's TCN (4 causal levels, dilations 1, 2, 4, 8, 512
channels, kernel 5, weight-normed convolutions). :func:`i3d_tcn` chains the two and takes the
max over time: one 512-vector per clip.

Published checkpoints go through ``avemo.convert`` (formats ``pytorch-i3d`` and ``jca-cvpr``),
which checks every key: the unused ``logits.*``, the CVPRW file's old-style weight norm
(``weight_g``/``weight_v``) and its second name of each TCN convolution (``net.0.*`` beside
``conv1.*``, which must hold the same tensor).

:func:`i3d_tcn_r3d` is the two-backbone row of the CVPRW ablation (seed 000: "I3D-TCN + R3D"):
one 224 x 224 clip, normalised for I3D, feeds both networks; R3D-18 gets it downsampled to
112 x 112 and re-normalised inside the module (:class:`I3DTCNR3D`), and the features are the
concatenation ``[I3D-TCN 512 | R3D 512]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from avemo.models.backbones import (
    CLIP_SIZE,
    I3D_CLIP_SIZE,
    I3D_MEAN,
    I3D_STD,
    KINETICS_MEAN,
    KINETICS_STD,
    visual_preprocessing,
)
from avemo.models.registry import build, register

BN_EPS = 1e-3  # batch-norm epsilon of every I3D unit (TensorFlow's default)
BN_MOMENTUM = 0.01
I3D_DIM = 1024  # channels of I3D's last block
I3D_FINAL_POOL = (2, 7, 7)  # final average pool (time, height, width), stride 1
# Inception blocks: name, input channels, (b0, b1a, b1b, b2a, b2b, b3b) output channels
INCEPTION_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
# the layers of InceptionI3d in order, named as in pytorch-i3d
END_POINTS = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    *(name for name, _, _ in INCEPTION_BLOCKS[:2]),
    "MaxPool3d_4a_3x3",
    *(name for name, _, _ in INCEPTION_BLOCKS[2:7]),
    "MaxPool3d_5a_2x2",
    *(name for name, _, _ in INCEPTION_BLOCKS[7:]),
)
TCN_CHANNELS = (512, 512, 512, 512)  # one level per entry; dilation 2**level
TCN_KERNEL = 5  # time steps
TCN_DROPOUT = 0.1
TCN_SLOPE = 0.01  # LeakyReLU negative slope


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding of one axis: (front, back), the smaller half in front."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple, stride: tuple) -> torch.Tensor:
    """Zero-pad ``B x C x T x H x W`` so a kernel/stride gives TensorFlow SAME output sizes."""
    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(kernel), reversed(stride), strict=True):
        pads.extend(same_padding(size, k, s))
    return F.pad(x, pads) if any(pads) else x


class Unit3D(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d (eps 1e-3) -> ReLU with SAME padding per call."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, bias=False)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv3d(pad_same(x, self.kernel, self.stride))))


class MaxPoolSame(nn.Module):
    """Max-pool with zero SAME padding (the inputs are post-ReLU, so zeros never win wrongly)."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionBlock(nn.Module):
    """[b0 1x1x1; b1a 1x1x1 -> b1b 3x3x3; b2a 1x1x1 -> b2b 3x3x3; max-pool -> b3b 1x1x1]."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3))
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, b3b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x)))
        return torch.cat(branches, dim=1)


class InceptionI3d(nn.Module):
    """Inception-v1 I3D up to ``Mixed_5c`` with temporal strides 1 and a (2,7,7) average pool.

    Clips ``B x 3 x T x 224 x 224`` -> ``B x 1024 x (T - 1)`` (7 steps for 8 frames).
    """

    def __init__(self):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (1, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        for name, in_channels, widths in INCEPTION_BLOCKS[:2]:
            self.add_module(name, InceptionBlock(in_channels, widths))
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (1, 2, 2))
        for name, in_channels, widths in INCEPTION_BLOCKS[2:7]:
            self.add_module(name, InceptionBlock(in_channels, widths))
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (1, 2, 2))
        for name, in_channels, widths in INCEPTION_BLOCKS[7:]:
            self.add_module(name, InceptionBlock(in_channels, widths))
        self.avg_pool = nn.AvgPool3d(I3D_FINAL_POOL, stride=1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips
        for name in END_POINTS:
            x = getattr(self, name)(x)
        return self.avg_pool(x).flatten(2)  # B x 1024 x T' (the 1 x 1 space squeezed)


class TemporalBlock(nn.Module):
    """One TCN level: two causal dilated weight-normed convolutions and a residual."""

    def __init__(self, n_in: int, n_out: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        padding = (kernel - 1) * dilation
        self.chomp = padding  # steps dropped at the end: keeps the convolution causal
        self.conv1 = weight_norm(nn.Conv1d(n_in, n_out, kernel, padding=padding, dilation=dilation))
        self.conv2 = weight_norm(
            nn.Conv1d(n_out, n_out, kernel, padding=padding, dilation=dilation)
        )
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None

    def _half(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = conv(x)[..., : -self.chomp] if self.chomp else conv(x)
        return self.dropout(F.leaky_relu(x, TCN_SLOPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._half(self.conv2, self._half(self.conv1, x))
        residual = x if self.downsample is None else self.downsample(x)
        return F.leaky_relu(out + residual, TCN_SLOPE)


class TemporalConvNet(nn.Module):
    """Causal TCN over ``B x C x T`` -> ``B x channels[-1] x T``; levels in ``network``."""

    def __init__(
        self,
        n_in: int = I3D_DIM,
        channels=TCN_CHANNELS,
        kernel: int = TCN_KERNEL,
        dropout: float = TCN_DROPOUT,
    ):
        super().__init__()
        widths = [n_in, *channels]
        self.network = nn.Sequential(
            *(
                TemporalBlock(widths[i], widths[i + 1], kernel, 2**i, dropout)
                for i in range(len(channels))
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)


class I3DTCN(nn.Module):
    """I3D features over time -> TCN -> max over time.

    Clips ``B x 3 x 8 x 224 x 224`` -> I3D ``B x 1024 x 7`` -> TCN ``B x 512 x 7`` -> ``B x 512``.
    """

    def __init__(self, channels=TCN_CHANNELS, kernel: int = TCN_KERNEL, dropout=TCN_DROPOUT):
        super().__init__()
        self.i3d = InceptionI3d()
        self.temporal = TemporalConvNet(I3D_DIM, channels, kernel, dropout)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.temporal(self.i3d(clips)).amax(dim=-1)


class I3DPool(nn.Module):
    """Bare I3D, averaged over its time steps: clips -> ``B x 1024`` (the ablation's I3D rows)."""

    def __init__(self):
        super().__init__()
        self.i3d = InceptionI3d()

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.i3d(clips).mean(dim=-1)


@register("i3d_tcn", "visual_backbone")
def i3d_tcn(channels=TCN_CHANNELS, kernel: int = TCN_KERNEL, dropout: float = TCN_DROPOUT):
    """I3D + TCN of the CVPRW JCA on 8 x 224 x 224 clips scaled to [-1, 1] -> 512 per clip."""
    module = I3DTCN(tuple(channels), kernel, dropout)
    module.avemo_preprocessing = visual_preprocessing(I3D_CLIP_SIZE, I3D_MEAN, I3D_STD)
    return module


@register("i3d", "visual_backbone")
def i3d() -> I3DPool:
    """Bare I3D on 8 x 224 x 224 clips scaled to [-1, 1], mean over its 7 steps -> 1024."""
    module = I3DPool()
    module.avemo_preprocessing = visual_preprocessing(I3D_CLIP_SIZE, I3D_MEAN, I3D_STD)
    return module


class I3DTCNR3D(nn.Module):
    """I3D-TCN and R3D-18 on one clip, features concatenated: ``B x (512 + 512)``.

    The clip is what I3D expects (``B x 3 x T x 224 x 224``, ``x / 255 * 2 - 1``). R3D-18 gets
    the same frames averaged over 2 x 2 pixel blocks (an area downsampling to 112 x 112, the
    size of the R(2+1)D/R3D face crops) and re-normalised with the Kinetics mean and std: back to
    [0, 1] first (``x * 0.5 + 0.5``), then ``(x - mean) / std``. So one aligned 224 x 224 crop
    serves both; a crop aligned at 112 x 112 directly would differ from the downsampled one by
    interpolation only. Parameter names: ``i3d_tcn.*`` (as :func:`i3d_tcn`) and ``r3d.*`` (as
    torchvision's ``r3d_18`` without ``fc``).
    """

    def __init__(self, i3d_tcn: nn.Module, r3d: nn.Module):
        super().__init__()
        self.i3d_tcn = i3d_tcn
        self.r3d = r3d
        self.factor = I3D_CLIP_SIZE // CLIP_SIZE
        i3d_mean, i3d_std = torch.tensor(I3D_MEAN), torch.tensor(I3D_STD)
        k_mean, k_std = torch.tensor(KINETICS_MEAN), torch.tensor(KINETICS_STD)
        # x_r3d = (x_i3d * i3d_std + i3d_mean - k_mean) / k_std = x_i3d * scale + shift
        shape = (1, 3, 1, 1, 1)
        self.register_buffer("scale", (i3d_std / k_std).view(shape), persistent=False)
        self.register_buffer("shift", ((i3d_mean - k_mean) / k_std).view(shape), persistent=False)

    def r3d_input(self, clips: torch.Tensor) -> torch.Tensor:
        """I3D clips ``B x 3 x T x 224 x 224`` -> R3D clips ``B x 3 x T x 112 x 112``."""
        small = F.avg_pool3d(clips, (1, self.factor, self.factor))
        return small * self.scale + self.shift

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.i3d_tcn(clips), self.r3d(self.r3d_input(clips))], dim=1)


@register("i3d_tcn_r3d", "visual_backbone")
def i3d_tcn_r3d(channels=TCN_CHANNELS, kernel: int = TCN_KERNEL, dropout: float = TCN_DROPOUT):
    """I3D-TCN + R3D-18 (the CVPRW ablation's best row) on 8 x 224 x 224 clips scaled to
    [-1, 1] -> 1024 per clip (:class:`I3DTCNR3D`)."""
    halves = build("i3d_tcn", channels=list(channels), kernel=kernel, dropout=dropout)
    module = I3DTCNR3D(halves, build("r3d_18", features="pool"))
    module.avemo_preprocessing = visual_preprocessing(I3D_CLIP_SIZE, I3D_MEAN, I3D_STD)
    return module


def combine_i3d_tcn_r3d(i3d_tcn_module: nn.Module, r3d_module: nn.Module) -> I3DTCNR3D:
    """An ``i3d_tcn_r3d`` backbone holding the weights of a built ``i3d_tcn`` and ``r3d_18``
    (pooled features) module: the two published halves of the ablation row in one."""
    config = i3d_tcn_module.avemo_config
    r3d_config = r3d_module.avemo_config
    if config["builder"] != "i3d_tcn" or r3d_config["builder"] != "r3d_18":
        raise ValueError("combine an i3d_tcn and an r3d_18 backbone")
    if r3d_config["kwargs"].get("features", "pool") != "pool":
        raise ValueError("the R3D-18 half gives pooled features (512)")
    combined = build("i3d_tcn_r3d", **config["kwargs"])
    combined.i3d_tcn.load_state_dict(i3d_tcn_module.state_dict(), strict=True)
    combined.r3d.load_state_dict(r3d_module.state_dict(), strict=True)
    return combined
