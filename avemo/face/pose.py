"""How well a face can be seen, from its 5 landmarks: its size and how frontal it is.

The landmarks are the detector's (left eye, right eye, nose tip, left and right mouth corner, as
seen in the image). Both measures are cheap closed forms, vectorised over frames:

- :func:`face_size`: the inter-ocular distance in pixels (distance between the eye centres);
- :func:`face_frontal`: a 0-1 score, 1 for a face looking into the camera. In the face's own
  frame (the eye line rotated to horizontal; distances in half inter-ocular distances) the nose
  tip's horizontal offset from the midline between eyes and mouth grows with yaw, and its
  height between the eye line and the mouth line moves away from the frontal value with pitch;
  ``face_frontal = max(0, 1 - sqrt(h^2 + v^2))`` with ``h`` the horizontal offset and ``v`` the
  vertical offset from the frontal height (``FRONTAL_NOSE_HEIGHT``, the ArcFace template's), both
  in half inter-ocular distances. A nose tip that reaches an eye's column in yaw, or moves half an
  inter-ocular distance up or down in pitch, scores 0; roll does not count.
"""

from __future__ import annotations

import numpy as np

# insightface's ArcFace template (112 x 112): the landmarks of a frontal face
ARCFACE_TEMPLATE = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ]
)


def _nose_height(template: np.ndarray) -> float:
    """The nose tip's distance below the eye line, in half inter-ocular distances."""
    eyes = template[:2].mean(axis=0)
    half = np.linalg.norm(template[1] - template[0]) / 2
    return float((template[2, 1] - eyes[1]) / half)


FRONTAL_NOSE_HEIGHT = _nose_height(ARCFACE_TEMPLATE)  # ~1.14 half inter-ocular distances


def _points(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    return points.reshape(*points.shape[:-1], 5, 2) if points.shape[-1] == 10 else points


def face_size(landmarks: np.ndarray) -> np.ndarray:
    """Inter-ocular distance in pixels of ``... x 5 x 2`` landmarks (or ``... x 10``); NaN where
    the landmarks are NaN."""
    points = _points(landmarks)
    return np.linalg.norm(points[..., 1, :] - points[..., 0, :], axis=-1)


def face_frontal(landmarks: np.ndarray) -> np.ndarray:
    """The 0-1 frontality score of ``... x 5 x 2`` landmarks (module docstring); NaN where the
    landmarks are NaN or the eyes coincide."""
    points = _points(landmarks)
    left, right = points[..., 0, :], points[..., 1, :]
    eyes = (left + right) / 2
    axis = right - left
    half = np.linalg.norm(axis, axis=-1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = axis / (2 * half)[..., None]
        normal = np.stack([-unit[..., 1], unit[..., 0]], axis=-1)  # image "down" for upright faces

        def frame(point):  # (along the eye line, below it) in half inter-ocular distances
            offset = point - eyes
            return (offset * unit).sum(-1) / half, (offset * normal).sum(-1) / half

        nose_x, nose_y = frame(points[..., 2, :])
        mouth_x, _ = frame(points[..., 3:, :].mean(axis=-2))
        horizontal = nose_x - mouth_x / 2  # the midline runs from the eyes' centre (0) to the mouth
        vertical = nose_y - FRONTAL_NOSE_HEIGHT
        score = np.clip(1.0 - np.hypot(horizontal, vertical), 0.0, 1.0)
    return np.where(half > 0, score, np.nan)
