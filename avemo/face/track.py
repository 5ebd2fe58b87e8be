"""Face tracking: detections of successive frames joined into tracks with stable ids.

Each track predicts where its face is now (last box moved by its recent velocity); detections are
matched to predictions by the Hungarian algorithm on a cost of (1 - IoU) + centre distance (in
units of the face's size). A pair is allowed when the boxes overlap enough or their centres are
close, and their sizes are similar. Unmatched detections start new tracks; a track not seen for
more than ``max_age`` frames ends, so a face hidden for a moment keeps its id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

TRACK_IOU = 0.3  # boxes overlapping at least this much may be the same face
TRACK_MAX_DISTANCE = 1.0  # ... or centres this close, in face sizes (sqrt of the box area)
TRACK_MAX_SCALE = 2.0  # ... and never when one box is over this many times the other's size
TRACK_MAX_AGE = 60  # frames a track survives without a detection (2 s at 30 fps)
TRACK_HORIZON = 10  # at most this many frames of velocity are extrapolated
TRACK_VELOCITY_SMOOTHING = 0.5  # weight of the previous velocity in its running average
TRACK_MIN_HITS = 3  # detections a track needs to count as a face beyond the dominant one

_NO_MATCH = 1e6


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4, x1 y1 x2 y2) with every box in ``b`` (M x 4): N x M."""
    a, b = np.asarray(a, np.float64)[:, None], np.asarray(b, np.float64)[None]
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    union = _area(a) + _area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[..., 2] - boxes[..., 0], 0, None) * np.clip(
        boxes[..., 3] - boxes[..., 1], 0, None
    )


def box_size(boxes: np.ndarray) -> np.ndarray:
    """Size of each box: the square root of its area, px."""
    return np.sqrt(_area(np.asarray(boxes, np.float64)))


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[..., :2] + boxes[..., 2:4]) / 2


@dataclass
class _Track:
    box: np.ndarray  # last detected box
    velocity: np.ndarray  # px per frame of the box's corners
    frame: int  # frame of the last detection
    hits: int = 1


class Tracker:
    """Assigns a stable id to each face detection, frame after frame.

    Call :meth:`update` with each processed frame's boxes in order (frames may be skipped, e.g.
    when detecting on every k-th frame: pass their indices). Ids are 0, 1, 2... in order of
    appearance.
    """

    def __init__(
        self,
        iou_threshold: float = TRACK_IOU,
        max_age: int = TRACK_MAX_AGE,
        max_distance: float = TRACK_MAX_DISTANCE,
        max_scale: float = TRACK_MAX_SCALE,
    ):
        self.iou_threshold = iou_threshold
        self.max_age = max_age
        self.max_distance = max_distance
        self.max_scale = max_scale
        self.tracks: dict[int, _Track] = {}
        self.next_id = 0
        self.frame = -1

    def predict(self, frame: int) -> np.ndarray:
        """Where the live tracks' faces should be at ``frame``: K x 4, in ``self.tracks`` order."""
        if not self.tracks:
            return np.zeros((0, 4))
        boxes = np.stack([t.box for t in self.tracks.values()])
        velocity = np.stack([t.velocity for t in self.tracks.values()])
        steps = np.array([min(frame - t.frame, TRACK_HORIZON) for t in self.tracks.values()])
        return boxes + velocity * steps[:, None]

    def cost(self, predicted: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Matching cost of tracks (K x 4) against detections (N x 4); ``_NO_MATCH`` if barred."""
        iou = box_iou(predicted, boxes)
        size_t, size_d = box_size(predicted)[:, None], box_size(boxes)[None]
        scale = np.maximum(size_t, 1e-6)
        distance = np.linalg.norm(_centres(predicted)[:, None] - _centres(boxes)[None], axis=2)
        distance = distance / scale
        ratio = np.maximum(size_t, size_d) / np.maximum(np.minimum(size_t, size_d), 1e-6)
        allowed = ((iou >= self.iou_threshold) | (distance <= self.max_distance)) & (
            ratio <= self.max_scale
        )
        return np.where(allowed, 1 - iou + distance, _NO_MATCH)

    def update(self, boxes: np.ndarray, frame: int | None = None) -> np.ndarray:
        """The track id of each of this frame's boxes (N x 4): int64 N."""
        frame = self.frame + 1 if frame is None else int(frame)
        if frame <= self.frame:
            raise ValueError(f"frames must increase: {frame} after {self.frame}")
        self.frame = frame
        for key in [k for k, t in self.tracks.items() if frame - t.frame > self.max_age]:
            del self.tracks[key]
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, np.int64)
        keys = list(self.tracks)
        if keys and len(boxes):
            cost = self.cost(self.predict(frame), boxes)
            for row, col in zip(*linear_sum_assignment(cost), strict=True):
                if cost[row, col] < _NO_MATCH:
                    ids[col] = keys[row]
                    self._advance(self.tracks[keys[row]], boxes[col], frame)
        for col in np.flatnonzero(ids < 0):
            ids[col] = self.next_id
            self.tracks[self.next_id] = _Track(boxes[col].copy(), np.zeros(4), frame)
            self.next_id += 1
        return ids

    @staticmethod
    def _advance(track: _Track, box: np.ndarray, frame: int) -> None:
        step = (box - track.box) / (frame - track.frame)
        a = TRACK_VELOCITY_SMOOTHING if track.hits > 1 else 0.0
        track.velocity = a * track.velocity + (1 - a) * step
        track.box = box.copy()
        track.frame = frame
        track.hits += 1


def dominant_tracks(
    ids: np.ndarray, sizes: np.ndarray, max_faces: int = 1, *, min_hits: int = 1
) -> list[int]:
    """The ``max_faces`` most prominent track ids, most prominent first.

    ``ids`` and ``sizes`` have one entry per detection (of all frames): its track id and face size
    (e.g. :func:`box_size`). A track's prominence is the sum of its sizes, i.e. its mean size times
    its duration in detections. Tracks with fewer than ``min_hits`` detections are left out unless
    no track has that many, so a video with any detection always yields a track.
    """
    ids = np.asarray(ids, np.int64)
    sizes = np.asarray(sizes, np.float64)
    if len(ids) == 0 or max_faces < 1:
        return []
    unique, inverse, hits = np.unique(ids, return_inverse=True, return_counts=True)
    score = np.bincount(inverse, weights=sizes, minlength=len(unique))
    order = np.lexsort((unique, -score))  # ties: the earlier track first
    if (hits >= min_hits).any():
        order = [i for i in order if hits[i] >= min_hits]
    return [int(unique[i]) for i in order[:max_faces]]
