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


SEQ_LEN = 2  # clips per sequence of the tiny pipeline: blocks of 64 frames


def tiny_pipeline() -> torch.nn.Module:
    """A whole pipeline of tiny backbones and a narrow JCA head (untrained)."""
    return models.build(
        "pipeline",
        visual={"builder": VIDEO, "kwargs": {}},
        audio={"builder": AUDIO, "kwargs": {}},
        head={
            "builder": "jca",
            "kwargs": {
                "audio_dim": 8,
                "visual_dim": 16,
                "seq_len": SEQ_LEN,
                "proj_dim": 8,
                "attn_dim": 8,
                "hidden": 8,
            },
        },
        seq_len=SEQ_LEN,
    )


def trained_pipeline(path):
    """Save at ``path`` a tiny pipeline trained for 5 Adam steps on synthetic data (CCC loss),
    marked trained (so annotate runs it); returns ``path``."""
    from avemo.metrics import ccc_loss

    torch.manual_seed(0)
    net = tiny_pipeline().train()
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    clips = torch.randn(4, SEQ_LEN, 3, 8, 112, 112)
    specs = torch.randn(4, SEQ_LEN, 1, 64, 107)
    target = torch.tanh(clips.mean(dim=(2, 3, 4, 5), keepdim=False)).unsqueeze(-1).repeat(1, 1, 2)
    for _ in range(5):
        optimiser.zero_grad()
        out = net(clips, specs)
        loss = ccc_loss(out[..., 0].flatten(), target[..., 0].flatten()) + ccc_loss(
            out[..., 1].flatten(), target[..., 1].flatten()
        )
        loss.backward()
        optimiser.step()
    models.save(
        net.eval(),
        path,
        provenance={
            "trained": True,
            "source": "tests: 5 Adam steps on synthetic clips",
            "training": {"steps": 5, "data": "synthetic"},
        },
    )
    return path
