"""Face crops from landmarks: ArcFace alignment on real photos (the expression crop is tested
with the expression model, tests/test_models_expression.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from test_face_detect import read_rgb

from avemo.face.align import align
from avemo.face.detect import CenterFace


@pytest.fixture(scope="module")
def centerface() -> CenterFace:
    return CenterFace(device="cpu")


@pytest.mark.parametrize("size", [112, 224])
def test_align_puts_the_face_on_the_template(centerface, portrait_photo, size):
    from insightface.utils.face_align import arcface_dst

    image = read_rgb(portrait_photo)
    (landmarks,) = centerface(image).landmarks
    crop = align(image, landmarks, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    # the aligned face, detected again with some margin, has its landmarks near the template's
    margin = size // 2
    canvas = cv2.copyMakeBorder(crop, *[margin] * 4, cv2.BORDER_REPLICATE)
    found = CenterFace(640, device="cpu")(canvas)
    assert len(found) == 1
    template = arcface_dst * size / 112 + margin
    inter_ocular = np.linalg.norm(template[0] - template[1])
    error = np.linalg.norm(found.landmarks[0] - template, axis=1) / inter_ocular
    assert error.max() < 0.3
    eyes = found.landmarks[0, :2]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.1 * inter_ocular  # level


def test_align_undoes_rotation_and_scale(centerface, group_photo):
    image = read_rgb(group_photo)
    points = centerface(image).landmarks[0]
    height, width = image.shape[:2]
    # the same image rotated by 25 degrees and enlarged 1.5 times about the face
    matrix = cv2.getRotationMatrix2D(tuple(map(float, points[2])), 25, 1.5)
    moved = cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_CUBIC)
    moved_points = points @ matrix[:, :2].T + matrix[:, 2]
    a = align(image, points, 112).astype(float)
    b = align(moved, moved_points, 112).astype(float)
    assert np.abs(a - b).mean() < 6  # the same crop, up to resampling


def test_align_rejects_bad_sizes_and_landmarks(portrait_photo):
    image = read_rgb(portrait_photo)
    points = np.array([[80, 100], [140, 100], [110, 130], [85, 160], [135, 160]], np.float32)
    with pytest.raises(ValueError, match="crop size"):
        align(image, points, 100)
    with pytest.raises(ValueError, match="finite"):
        align(image, np.full((5, 2), np.nan), 112)
