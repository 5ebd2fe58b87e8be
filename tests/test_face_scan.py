"""Faces through whole videos: tracks, the per-frame table, filled frames and aligned crops."""

from __future__ import annotations

from fractions import Fraction

import cv2
import media  # tests/media.py
import numpy as np
import pytest

from avemo.decode import iter_frames
from avemo.errors import AvemoError
from avemo.face.detect import CenterFace, Detections
from avemo.face.scan import (
    NO_FACE_ID,
    TABLE_COLUMNS,
    FaceTrack,
    detect_tracks,
    faces_table,
    iter_face_crops,
    save_crops,
)


@pytest.fixture(scope="module")
def detector() -> CenterFace:
    return CenterFace(device="cpu")


@pytest.fixture(scope="module")
def carphone_scan(carphone, detector):
    return detect_tracks(carphone, detector)


def upright(track: FaceTrack) -> np.ndarray:
    """Per frame: eyes above the nose above the mouth (False where absent)."""
    points = track.landmarks
    eyes, nose, mouth = points[:, :2, 1].mean(1), points[:, 2, 1], points[:, 3:, 1].mean(1)
    with np.errstate(invalid="ignore"):
        return track.present & (eyes < nose) & (nose < mouth)


def test_carphone_one_stable_face(carphone, carphone_scan):
    scan = carphone_scan
    times = np.array([frame.time for frame in iter_frames(carphone)])
    assert scan.num_frames == len(times) == 120
    np.testing.assert_array_equal(scan.times, times)
    assert len(set(scan.ids.tolist())) == 1  # one person, one track id
    tracks = scan.tracks(max_faces=3)
    assert len(tracks) == 1
    (track,) = tracks
    assert track.face_id == 0
    assert track.present.mean() >= 0.95
    assert upright(track).mean() >= 0.95
    assert track.detected[track.present].all()
    assert track.boxes.dtype == np.float32 and track.boxes.shape == (120, 4)
    assert track.landmarks.shape == (120, 5, 2) and track.scores.shape == (120,)
    assert np.isnan(track.boxes[~track.present]).all()


def test_table_has_one_row_per_frame(carphone, carphone_scan):
    table = faces_table(carphone_scan)
    assert list(table.columns) == TABLE_COLUMNS
    assert len(table) == carphone_scan.num_frames
    assert table["frame"].tolist() == list(range(carphone_scan.num_frames))
    np.testing.assert_allclose(table["timestamp"], carphone_scan.times, atol=1e-6)
    assert (table["face_id"] == 0).all()
    assert table["success"].mean() >= 0.95
    found = table[table["success"] == 1]
    assert (found["face_width"] > 20).all() and (found["face_height"] > 20).all()
    assert (found["lm0_y"] < found["lm3_y"]).all() and (found["lm1_y"] < found["lm4_y"]).all()
    missing = table[table["success"] == 0]
    assert missing.drop(columns=["frame", "timestamp", "face_id", "success"]).isna().all().all()


def test_more_faces_than_tracks_gives_one_block(carphone_scan):
    assert len(faces_table(carphone_scan, max_faces=4)) == carphone_scan.num_frames


def test_group_photo_as_a_video_gives_six_tracks(group_photo, detector):
    scan = detect_tracks(group_photo, detector)  # FFmpeg reads a JPEG as a one-frame video
    table = faces_table(scan, max_faces=10)
    assert scan.num_frames == 1 and len(table) == 6
    assert table["face_id"].tolist() == list(range(6)) and table["success"].all()
    sizes = (table["face_width"] * table["face_height"]).to_numpy()
    assert (sizes[:-1] >= sizes[1:]).all()  # ranked by size (all last one frame)


def test_no_face_gives_face_id_minus_one_and_nan(no_audio_clip, detector):
    scan = detect_tracks(no_audio_clip, detector)
    table = faces_table(scan)
    assert len(table) == scan.num_frames == media.FPS
    assert (table["face_id"] == NO_FACE_ID).all() and (table["success"] == 0).all()
    assert table.drop(columns=["frame", "timestamp", "face_id", "success"]).isna().all().all()
    assert scan.tracks() == []


def test_rows_equal_decoded_frames_for_every_readable_input(
    av_clip, vfr_clip, rotated_clip, truncated_clip, offset_audio_clip, detector
):
    for path in (av_clip, vfr_clip, rotated_clip, truncated_clip, offset_audio_clip):
        times = [frame.time for frame in iter_frames(path)]
        scan = detect_tracks(path, detector, detect_every=8)
        table = faces_table(scan)
        assert len(table) == scan.num_frames == len(times), path.name
        np.testing.assert_allclose(table["timestamp"], times, atol=1e-6)
        if path == vfr_clip:  # the irregular PTS written, not index / fps
            np.testing.assert_allclose(table["timestamp"], media.VFR_TIMES, atol=1e-6)


def test_rotation_tag_gives_upright_faces(tmp_path, carphone, detector):
    frames = media.carphone_frames(carphone, 30)
    coded = [np.ascontiguousarray(np.rot90(image, -1)) for image in frames]  # stored sideways
    path = media.write_av(tmp_path / "sideways.mp4", coded, fps=Fraction(30000, 1001), rotation=90)
    (track,) = detect_tracks(path, detector).tracks()
    assert upright(track).mean() >= 0.95


def test_detect_every_fills_frames_in_between(carphone, carphone_scan, detector):
    scan = detect_tracks(carphone, detector, detect_every=5)
    assert scan.keyframes.tolist() == list(range(0, 120, 5))
    (track,) = scan.tracks()
    (full,) = carphone_scan.tracks()
    assert track.detected.sum() <= 24 and track.present.mean() >= 0.95
    assert not track.detected[1:5].any() and track.present[1:5].all()
    # frames filled between detections stay close to detecting on every frame
    both = track.present & full.present
    side = (full.boxes[both, 2:] - full.boxes[both, :2]).mean()
    assert np.median(np.abs(track.landmarks[both] - full.landmarks[both])) < 0.1 * side
    # on a keyframe the values are the detector's own
    np.testing.assert_allclose(track.boxes[::5], full.boxes[::5])


class Script:
    """A detector returning scripted faces per call (to test the filling rules exactly)."""

    def __init__(self, boxes_per_call):
        self.calls = iter(boxes_per_call)

    def __call__(self, image):
        boxes = next(self.calls)
        if boxes is None:
            return Detections.empty()
        box = np.array([boxes], np.float32)
        points = np.tile(box[:, None, :2], (1, 5, 1)) + np.arange(5)[None, :, None]
        return Detections(box, np.array([0.9], np.float32), points.astype(np.float32))


def test_filling_rules(no_audio_clip):
    # 30 frames, detection on frames 0, 4, 8, ...: face at 0 and 4 (moving), gone at 8, back at 12
    script = [[0, 0, 40, 40], [8, 0, 48, 40], None, [8, 0, 48, 40]] + [[8, 0, 48, 40]] * 4
    (track,) = detect_tracks(no_audio_clip, Script(script), detect_every=4).tracks()
    np.testing.assert_allclose(track.boxes[1:4, 0], [2, 4, 6], atol=0.05)  # interpolated in time
    # between a keyframe with the face and one without, the nearer keyframe decides
    assert track.present[5:7].all() and not track.present[7:11].any() and track.present[11]
    np.testing.assert_allclose(track.boxes[5:7, 0], 8)  # carried from frame 4
    assert track.present[11:].all()  # frames after the last keyframe (28) keep its face too
    assert track.detected.tolist() == [i % 4 == 0 and i != 8 for i in range(30)]


def test_crops(carphone, carphone_scan, tmp_path):
    (track,) = carphone_scan.tracks()
    seen = 0
    for index, crop in iter_face_crops(carphone, track, size=224):
        assert (crop is not None) == track.present[index]
        if crop is not None:
            assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
        seen += 1
    assert seen == carphone_scan.num_frames
    folder = tmp_path / "out" / "carphone"
    count = save_crops(carphone, track, folder, size=112)
    names = sorted(p.name for p in folder.iterdir())
    assert count == len(names) == track.present.sum()
    expected = [f"{i + 1:05d}.jpg" for i in np.flatnonzero(track.present)]
    assert names == expected  # 1-based frame numbers (Aff-Wild2)
    assert cv2.imread(str(folder / names[0])).shape == (112, 112, 3)
    assert [p.name for p in folder.parent.iterdir()] == ["carphone"]  # no temporary left


def test_save_crops_is_atomic(carphone, carphone_scan, tmp_path, monkeypatch):
    import avemo.face.scan

    (track,) = carphone_scan.tracks()
    folder = tmp_path / "carphone"
    save_crops(carphone, track, folder)
    before = sorted(folder.iterdir())
    written = []

    def failing_imwrite(path, image, params=None):
        if len(written) == 10:
            raise OSError("disk full")
        written.append(path)
        return cv2.imwrite(path, image, params)

    monkeypatch.setattr(avemo.face.scan.cv2, "imwrite", failing_imwrite)
    with pytest.raises(OSError, match="disk full"):
        save_crops(carphone, track, folder, size=224)
    assert sorted(folder.iterdir()) == before  # the old crops, untouched
    assert cv2.imread(str(before[0])).shape == (112, 112, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["carphone"]


def test_unreadable_video_is_an_avemo_error(bad_files, detector):
    for path in bad_files:
        with pytest.raises(AvemoError) as error:
            detect_tracks(path, detector)
        assert str(path) in str(error.value)
