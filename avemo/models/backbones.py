"""Backbones: one feature vector per clip (visual) or per spectrogram (audio) (SPEC 4).

Visual backbones map normalised clips ``B x 3 x T x H x W`` to ``B x D``; the audio backbone maps
log-mel spectrograms ``B x 1 x 64 x 107`` to ``B x 512``. The networks are torchvision's, with
their parameter names; ``avemo.convert`` maps torchvision and TSAV checkpoints onto them. The
input normalisation of every visual backbone is here, in one place: pixels are scaled to
[0, 1], then ``(x - mean) / std`` per RGB channel. I3D (``avemo.i3d``) uses the same recipe with
mean = std = 0.5, which is the reference's ``x / 255 * 2 - 1``.
"""

from __future__ import annotations

import math

import torch
import torchvision
from torch import nn

from avemo.clips import CLIP_FRAMES
from avemo.models.registry import register
from avemo.spectrogram import N_FRAMES, N_MELS

# per-channel RGB normalisation of pixels scaled to [0, 1]
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)  # R(2+1)D / R3D, Kinetics-400 (SPEC 2)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
I3D_MEAN = (0.5, 0.5, 0.5)  # I3D: x / 255 * 2 - 1 (SPEC 2)
I3D_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # 2D ResNet18 of ResNet18-GRU (ImageNet weights)
IMAGENET_STD = (0.229, 0.224, 0.225)

CLIP_SIZE = 112  # pixels, face crops of the R(2+1)D / R3D / ResNet18-GRU paths
I3D_CLIP_SIZE = 224  # pixels, face crops of the I3D path
FEATURE_DIM = 512  # features per clip of every backbone except flat mode and bare I3D
FLAT_GRID = (1, 7, 7)  # layer4 output (time, height, width) at 8 x 112 x 112
FLAT_DIM = FEATURE_DIM * math.prod(FLAT_GRID)  # 25088, journal JCA
FEATURE_MODES = ("pool", "flat")
# audio input: one channel of mel bands x spectrogram frames, made by avemo.spectrogram (SPEC 3)
AUDIO_INPUT = (1, N_MELS, N_FRAMES)
RGB_CHANNELS = 3


def visual_preprocessing(size: int, mean, std) -> dict:
    """What a visual backbone expects: ``frames`` RGB crops of ``size`` px, normalised."""
    return {
        "frames": CLIP_FRAMES,
        "size": [size, size],
        "channel_order": "RGB",
        "value_range": [0.0, 1.0],  # pixels / 255 first, then (x - mean) / std
        "mean": list(mean),
        "std": list(std),
    }


def normalise_clips(clips: torch.Tensor, preprocessing: dict) -> torch.Tensor:
    """uint8 RGB clips ``B x 3 x T x H x W`` -> the float input described by ``preprocessing``
    (a :func:`visual_preprocessing` record): pixels / 255, then (x - mean) / std per channel."""
    shape = (1, RGB_CHANNELS, 1, 1, 1)
    mean = torch.tensor(preprocessing["mean"], dtype=torch.float32, device=clips.device)
    std = torch.tensor(preprocessing["std"], dtype=torch.float32, device=clips.device)
    return (clips.float() / 255.0 - mean.view(shape)) / std.view(shape)


def audio_preprocessing() -> dict:
    """What the audio backbone expects: one normalised log-mel spectrogram per clip."""
    return {"input_shape": list(AUDIO_INPUT), "transform": "avemo.spectrogram.LogMel"}


class VideoResNet(nn.Module):
    """torchvision's R(2+1)D-18 or R3D-18 without its classifier: clips -> features.

    ``features="pool"``: global average pool -> ``B x 512``. ``features="flat"``: layer4's output
    (``B x 512 x 1 x 7 x 7`` at 8 x 112 x 112) flattened channel-major -> ``B x 25088``. The
    parameter names are torchvision's (``stem.*``, ``layer1.*``, ...), without ``fc``.
    """

    def __init__(self, net: torchvision.models.video.VideoResNet, features: str = "pool"):
        super().__init__()
        if features not in FEATURE_MODES:
            raise ValueError(f"features must be one of {FEATURE_MODES}, got {features!r}")
        self.features = features
        self.stem = net.stem
        self.layer1, self.layer2 = net.layer1, net.layer2
        self.layer3, self.layer4 = net.layer3, net.layer4

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        x = self.stem(clips)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.features == "flat":
            return x.flatten(1)
        return x.mean(dim=(2, 3, 4))


@register("r2plus1d_18", "visual_backbone")
def r2plus1d_18(features: str = "pool") -> VideoResNet:
    """R(2+1)D-18 (torchvision ``r2plus1d_18``) on 8 x 112 x 112 clips, Kinetics normalisation."""
    module = VideoResNet(torchvision.models.video.r2plus1d_18(), features)
    module.avemo_preprocessing = visual_preprocessing(CLIP_SIZE, KINETICS_MEAN, KINETICS_STD)
    return module


@register("r3d_18", "visual_backbone")
def r3d_18(features: str = "pool") -> VideoResNet:
    """R3D-18 (torchvision ``r3d_18``) on 8 x 112 x 112 clips, Kinetics normalisation."""
    module = VideoResNet(torchvision.models.video.r3d_18(), features)
    module.avemo_preprocessing = visual_preprocessing(CLIP_SIZE, KINETICS_MEAN, KINETICS_STD)
    return module


class ResNetGRU(nn.Module):
    """2D ResNet18 on every frame, a GRU over the clip's frames; its last hidden state per clip.

    ``frame`` is torchvision's ``resnet18`` with an identity ``fc`` (512 per frame); ``gru`` is
    one batch-first layer. Clips ``B x 3 x T x H x W`` -> ``B x hidden``.
    """

    def __init__(self, hidden: int = FEATURE_DIM):
        super().__init__()
        self.frame = torchvision.models.resnet18()
        self.frame.fc = nn.Identity()
        self.gru = nn.GRU(FEATURE_DIM, hidden, batch_first=True)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = clips.shape
        frames = clips.transpose(1, 2).reshape(b * t, c, h, w)
        per_frame = self.frame(frames).view(b, t, -1)
        _, last = self.gru(per_frame)
        return last[-1]


@register("resnet18_gru", "visual_backbone")
def resnet18_gru(hidden: int = FEATURE_DIM) -> ResNetGRU:
    """ResNet18-GRU (seed 000's ablation row) on 8 x 112 x 112 clips, ImageNet normalisation."""
    module = ResNetGRU(hidden)
    module.avemo_preprocessing = visual_preprocessing(CLIP_SIZE, IMAGENET_MEAN, IMAGENET_STD)
    return module


@register("audio_resnet18", "audio_backbone")
def audio_resnet18() -> torchvision.models.ResNet:
    """torchvision ResNet18 with a 1-channel 7x7 stride-2 ``conv1`` and an identity ``fc``.

    Spectrograms ``B x 1 x 64 x 107`` -> ``B x 512``; parameter names are torchvision's
    (TSAV's ``audio_model.resnet.*`` without the prefix).
    """
    module = torchvision.models.resnet18()
    module.conv1 = nn.Conv2d(AUDIO_INPUT[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
    module.fc = nn.Identity()
    module.avemo_preprocessing = audio_preprocessing()
    return module


def rgb_stem(weight: torch.Tensor) -> torch.Tensor:
    """A first-conv weight for RGB input from one with extra input channels (SPEC 4).

    TSAV's video stem takes RGB + a face mask (``45 x 4 x 1 x 7 x 7``); the RGB filters are
    ``weight[:, :3]``. A 3-channel weight is returned unchanged.
    """
    if weight.dim() < 3 or weight.shape[1] < RGB_CHANNELS:
        raise ValueError(f"not a first-conv weight with >= 3 input channels: {tuple(weight.shape)}")
    return weight[:, :RGB_CHANNELS].contiguous()
