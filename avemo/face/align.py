"""Face crops from landmarks: what each network sees of a face.

``align`` warps a face onto insightface's ArcFace template (112x112 for the R(2+1)D path, 224x224
for I3D; SPEC 2), the crops of the seeds' pipelines. ``expression_crop`` frames a 64x64 grayscale
face the way FER2013 faces are framed, the input of the default expression model. Both fit a
similarity transform (rotation, uniform scale, translation) to the 5 landmarks.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from avemo.face.detect import check_image
from avemo.models.expression import (
    CROP_FACE_SCALE,
    CROP_SHIFT_Y,
    CROP_SUPERSAMPLE_MAX,
    EXPRESSION_SIZE,
)

CROP_SIZES = (112, 224)  # aligned crop sides, px: R(2+1)D path 112, I3D path 224 (SPEC 2)


def align(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The face with these 5 landmarks warped onto the ArcFace template: size x size x 3 uint8.

    A similarity transform (rotation, uniform scale, translation) fitted to the landmarks
    (insightface ``norm_crop``); ``size`` is 112 or 224 (the template scaled by 2).
    """
    from insightface.utils.face_align import norm_crop

    if size not in CROP_SIZES:
        raise ValueError(f"crop size must be one of {CROP_SIZES}, got {size}")
    points = np.asarray(landmarks, np.float32).reshape(5, 2)
    if not np.isfinite(points).all():
        raise ValueError("landmarks must be finite")
    image = check_image(image)
    with warnings.catch_warnings():  # norm_crop calls a scikit-image method deprecated in 0.26
        warnings.simplefilter("ignore", FutureWarning)
        return norm_crop(image, points, image_size=size)


def crop_template(
    size: int = EXPRESSION_SIZE,
    *,
    face_scale: float = CROP_FACE_SCALE,
    shift_y: float = CROP_SHIFT_Y,
) -> np.ndarray:
    """Where the 5 landmarks go in a ``size`` x ``size`` expression crop (5 x 2, pixels)."""
    from insightface.utils.face_align import arcface_dst

    unit = arcface_dst.astype(np.float64) / 112.0 - 0.5  # centred, in crop sides
    return (unit * face_scale + [0.5, 0.5 + shift_y]) * size


def crop_matrix(landmarks: np.ndarray, size: int = EXPRESSION_SIZE, **framing: float) -> np.ndarray:
    """2 x 3 similarity transform taking image pixels to crop pixels (least squares on 5 points).

    ``framing`` overrides ``face_scale``/``shift_y`` of ``crop_template`` (for calibration).
    """
    from skimage.transform import SimilarityTransform

    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    transform = SimilarityTransform.from_estimate(points, crop_template(size, **framing))
    if not transform:
        raise ValueError("degenerate landmarks: cannot estimate a similarity transform")
    return transform.params[:2]


def expression_crop(image: np.ndarray, landmarks: np.ndarray, **framing: float) -> np.ndarray:
    """The model's input for one face: a 64 x 64 uint8 grayscale crop of an RGB frame.

    ``image`` is H x W x 3 uint8 RGB (or H x W gray); ``landmarks`` are the face's 5 points in
    image pixels, in the CenterFace/insightface order: image-left eye, image-right eye, nose tip,
    image-left and image-right mouth corner.
    The face is rotated upright and scaled to FER2013's framing; outside the frame is black.
    Large faces are warped at up to 4x the crop size and area-averaged down, so that
    downscaling does not alias.
    """
    import cv2

    matrix = crop_matrix(landmarks, **framing)
    scale = math.hypot(matrix[0, 0], matrix[0, 1])  # crop px per image px
    factor = int(min(max(math.ceil(1.0 / scale), 1), CROP_SUPERSAMPLE_MAX)) if scale > 0 else 1
    big = EXPRESSION_SIZE * factor
    warped = cv2.warpAffine(
        np.ascontiguousarray(image),
        matrix * [[factor], [factor]],
        (big, big),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    if factor > 1:
        warped = cv2.resize(
            warped, (EXPRESSION_SIZE, EXPRESSION_SIZE), interpolation=cv2.INTER_AREA
        )
    return warped if warped.ndim == 2 else cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY)
