"""Tiny stand-ins for the real backbones, registered as avemo builders for tests.

The real R(2+1)D-18 takes about 0.3 s per clip on this CPU; tests that need a whole pipeline
(extract, train, annotate) use these instead, and benchmarks/ measure the real ones.
"""

from __future__ import annotations

import torch

from avemo import models
from avemo.models.backbones import CLIP_SIZE, KINETICS_MEAN, KINETICS_STD, visual_preprocessing

VIDEO = "test_tiny_video"  # builder names
AUDIO = "test_tiny_audio"


class TinyVideoNet(torch.nn.Module):
    """One 3D convolution + pooling: clips ``B x 3 x 8 x 112 x 112`` -> ``B x dim``."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.conv = torch.nn.Conv3d(
            3, dim, kernel_size=(3, 7, 7), stride=(2, 4, 4), padding=(1, 3, 3)
        )

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.conv(clips).relu().mean(dim=(2, 3, 4))


class TinyAudioNet(torch.nn.Module):
    """One 2D convolution + pooling: spectrograms ``B x 1 x 64 x 107`` -> ``B x dim``."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, dim, kernel_size=8, stride=8)

    def forward(self, specs: torch.Tensor) -> torch.Tensor:
        return self.conv(specs).relu().mean(dim=(2, 3))


def tiny_video(dim: int = 16) -> TinyVideoNet:
    module = TinyVideoNet(dim)
    module.avemo_preprocessing = visual_preprocessing(CLIP_SIZE, KINETICS_MEAN, KINETICS_STD)
    return module


def tiny_audio(dim: int = 8) -> TinyAudioNet:
    return TinyAudioNet(dim)


if VIDEO not in models.builders():  # once per session, whichever test module imports this first
    models.register(VIDEO, "visual_backbone")(tiny_video)
    models.register(AUDIO, "audio_backbone")(tiny_audio)
