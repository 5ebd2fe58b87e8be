"""Tracker and dominant-track ranking on synthetic boxes."""

from __future__ import annotations

import numpy as np
import pytest

from avemo.face.track import Tracker, box_iou, box_size, dominant_tracks


def square(x: float, y: float, side: float = 60) -> list[float]:
    return [x, y, x + side, y + side]


def test_box_iou_and_size():
    a = np.array([square(0, 0, 10)])
    b = np.array([square(0, 0, 10), square(5, 0, 10), square(20, 20, 10)])
    assert box_iou(a, b) == pytest.approx(np.array([[1.0, 50 / 150, 0.0]]))
    assert box_size(b) == pytest.approx([10, 10, 10])


def test_one_face_moving_keeps_its_id():
    tracker = Tracker()
    ids = [tracker.update([square(100 + 4 * t, 80 + 2 * t)])[0] for t in range(50)]
    assert set(ids) == {0}


def test_two_faces_crossing_keep_their_ids():
    tracker = Tracker()
    seen = []
    for t in range(31):  # A moves right, B moves left, 12 px lower; they cross at t = 15
        a, b = square(20 + 10 * t, 100), square(320 - 10 * t, 112)
        boxes = [a, b] if t % 2 else [b, a]  # detector order must not matter
        ids = tracker.update(boxes)
        seen.append((ids[0], ids[1]) if t % 2 else (ids[1], ids[0]))
    assert len(set(seen)) == 1


def test_occlusion_shorter_than_max_age_keeps_id_longer_gets_new():
    tracker = Tracker(max_age=10)
    for t in range(5):
        assert tracker.update([square(100, 100)], t)[0] == 0
    for t in range(5, 14):  # 9 frames without the face
        assert len(tracker.update(np.zeros((0, 4)), t)) == 0
    assert tracker.update([square(103, 98)], 14)[0] == 0
    assert tracker.update([square(103, 98)], 40)[0] == 1  # 26 frames later: a new track


def test_new_face_far_away_or_different_size_gets_new_id():
    tracker = Tracker()
    tracker.update([square(100, 100)])
    ids = tracker.update([square(101, 100), square(400, 300)])
    assert list(ids) == [0, 1]
    ids = tracker.update([square(101, 100), square(402, 300), square(95, 95, 200)])
    assert list(ids) == [0, 1, 2]


def test_skipped_frames_use_the_velocity():
    tracker = Tracker()
    for t in range(0, 60, 5):  # detect every 5th frame; the face moves 10 px per frame
        assert tracker.update([square(10 * t, 50)], t)[0] == 0


def test_frames_must_increase():
    tracker = Tracker()
    tracker.update([square(0, 0)], 3)
    with pytest.raises(ValueError):
        tracker.update([square(0, 0)], 3)


def test_dominant_tracks_rank_by_size_and_duration():
    # track 0: small but long; track 1: big but short; track 2: one false detection
    ids = np.array([0] * 40 + [1] * 10 + [2])
    sizes = np.array([20.0] * 40 + [50.0] * 10 + [2000.0])
    assert dominant_tracks(ids, sizes, 3, min_hits=3) == [0, 1]
    assert dominant_tracks(ids, sizes, 1, min_hits=3) == [0]
    assert dominant_tracks(ids, sizes, 3) == [2, 0, 1]
    assert dominant_tracks(np.array([3, 1, 3, 1]), np.ones(4), 2) == [1, 3]  # tie: lower id
    assert dominant_tracks(np.array([5]), np.array([10.0]), 2, min_hits=3) == [5]
    assert dominant_tracks(np.array([], int), np.array([]), 1) == []
