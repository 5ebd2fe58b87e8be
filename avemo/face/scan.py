"""Faces through a whole video: detect and track (pass 1), then aligned crops (pass 2).

Pass 1 (:func:`detect_tracks`) streams the frames once, runs the detector (on every k-th frame
with ``detect_every``, filling the frames in between from the neighbouring detections) and the
tracker, and keeps only a few numbers per frame, so memory does not grow with the frames' size.
Decoding runs in a thread next to detection. The result, a :class:`FaceScan`, gives the dominant
face tracks (:meth:`FaceScan.tracks`) and the per-frame table of ``avemo faces``
(:func:`faces_table`). Pass 2 (:func:`iter_face_crops`, :func:`save_crops`) decodes again and
aligns one track's face in every frame where it is present.

Frame numbers are 0-based everywhere except in crop file names (Aff-Wild2: ``%05d.jpg`` of the
1-based frame number).
"""

from __future__ import annotations

import array
import contextlib
import os
import queue
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from avemo.decode import VideoInfo, iter_frames, probe
from avemo.errors import AvemoError
from avemo.face.align import align
from avemo.face.track import TRACK_MIN_HITS, Tracker, box_size, dominant_tracks

DECODE_QUEUE = 8  # frames decoded ahead of the detector
# Run the detector on every K-th frame (boxes and landmarks interpolated between). `avemo faces`
# detects on every frame, since its table of detections is the product; annotate and extract
# detect on every 2nd: detection is the costliest stage of the default model, and faces move
# little in 1/30 s.
DETECT_EVERY_FACES = 1
DETECT_EVERY_ANNOTATE = 2
CROP_QUALITY = 95  # JPEG quality of saved crops
NO_FACE_ID = -1  # face_id of the rows of a video without any face
CROP_NAME = re.compile(r"^\d{5}\.jpg$")  # the crops avemo writes (save_crops)
OTHER_FACE = re.compile(r"_face\d+$")  # crops folder suffix of face k > 0 (crops_folder)
NUM_LANDMARKS = 5
TABLE_COLUMNS = [
    "frame",
    "timestamp",
    "face_id",
    "success",
    "confidence",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    *(f"lm{j}_{axis}" for j in range(NUM_LANDMARKS) for axis in "xy"),
]
# decimals kept in the table: seconds, scores (0-1), pixels
TIME_DECIMALS, SCORE_DECIMALS, PIXEL_DECIMALS = 6, 4, 2


@dataclass
class FaceTrack:
    """One face through the video: per-frame arrays over all frame numbers (NaN where absent, and
    on frames lost to damage)."""

    face_id: int  # rank among the kept tracks: 0 is the dominant face
    present: np.ndarray  # bool N
    boxes: np.ndarray  # float32 N x 4: x1, y1, x2, y2
    landmarks: np.ndarray  # float32 N x 5 x 2
    scores: np.ndarray  # float32 N
    detected: np.ndarray  # bool N: from the detector (else filled in between detections)


@dataclass
class FaceScan:
    """What pass 1 found: frame times and every detection of the frames the detector ran on."""

    info: VideoInfo
    times: np.ndarray  # float64 N: timestamps of the frames, s (lost frames: where they belong)
    num_frames: int  # frame numbers (decoded frames and lost ones)
    keyframes: np.ndarray  # int64 K: frames the detector ran on
    frames: np.ndarray = field(repr=False)  # int64 M: frame of each detection
    ids: np.ndarray = field(repr=False)  # int64 M: track id of each detection
    boxes: np.ndarray = field(repr=False)  # float32 M x 4
    scores: np.ndarray = field(repr=False)  # float32 M
    landmarks: np.ndarray = field(repr=False)  # float32 M x 5 x 2
    decoded: np.ndarray | None = field(default=None, repr=False)  # bool N: False where a frame
    # number was left free (a frame lost to damage: avemo.decode.Frame); None: all decoded

    def tracks(self, max_faces: int = 1) -> list[FaceTrack]:
        """The ``max_faces`` dominant tracks (by size and duration), the dominant one first."""
        chosen = dominant_tracks(self.ids, box_size(self.boxes), max_faces, min_hits=TRACK_MIN_HITS)
        return [self._track(rank, track_id) for rank, track_id in enumerate(chosen)]

    def _track(self, face_id: int, track_id: int) -> FaceTrack:
        n = self.num_frames
        mine = self.ids == track_id
        values = np.full((n, 4 + 1 + 2 * NUM_LANDMARKS), np.nan)
        values[self.frames[mine]] = np.concatenate(
            [self.boxes[mine], self.scores[mine, None], self.landmarks[mine].reshape(-1, 10)], 1
        )
        detected = np.zeros(n, bool)
        detected[self.frames[mine]] = True
        _fill_between_keyframes(values, detected, self.keyframes, self.times)
        if self.decoded is not None:
            values[~self.decoded] = np.nan  # no face where there is no image
        present = ~np.isnan(values[:, 0])
        values = values.astype(np.float32)
        return FaceTrack(
            face_id=face_id,
            present=present,
            boxes=values[:, :4].copy(),
            landmarks=values[:, 5:].reshape(n, NUM_LANDMARKS, 2).copy(),
            scores=values[:, 4].copy(),
            detected=detected,
        )


def _fill_between_keyframes(
    values: np.ndarray, detected: np.ndarray, keyframes: np.ndarray, times: np.ndarray
) -> None:
    """Fill frames the detector skipped: interpolated (in time) between the two keyframes around
    them when the face is in both, else the nearer keyframe's face if it has one; frames after the
    last keyframe keep its face."""
    n = len(values)
    if len(keyframes) == n:
        return
    skipped = np.ones(n, bool)
    skipped[keyframes] = False
    frames = np.flatnonzero(skipped)
    after_index = np.searchsorted(keyframes, frames, side="right")
    before = keyframes[after_index - 1]  # frame 0 is always a keyframe
    has_after = after_index < len(keyframes)
    after = np.where(has_after, keyframes[np.minimum(after_index, len(keyframes) - 1)], before)
    in_before, in_after = detected[before], detected[after] & has_after
    filled = np.full((len(frames), values.shape[1]), np.nan)
    both = in_before & in_after
    span = times[after] - times[before]
    weight = np.where(span > 0, (times[frames] - times[before]) / np.where(span > 0, span, 1), 0)
    mix = values[before] * (1 - weight[:, None]) + values[after] * weight[:, None]
    filled[both] = mix[both]
    nearer_after = has_after & (frames - before > after - frames)
    source = np.where(nearer_after, after, before)
    carried = ~both & np.where(nearer_after, in_after, in_before)
    filled[carried] = values[source[carried]]
    values[frames] = filled


def _decode_into(path, info: VideoInfo, stop: threading.Event, out: queue.Queue) -> None:
    """Decode into ``out``: the frames, then None or the exception that stopped decoding."""

    def put(item) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        with contextlib.closing(iter_frames(path, info=info)) as frames:
            for frame in frames:
                if not put(frame):
                    return
        put(None)
    except Exception as error:  # handed to the consumer, which re-raises it
        put(error)


def _frames_ahead(path, info: VideoInfo) -> Iterator:
    """``iter_frames`` decoding in a background thread, up to ``DECODE_QUEUE`` frames ahead."""
    stop = threading.Event()
    frames: queue.Queue = queue.Queue(maxsize=DECODE_QUEUE)
    worker = threading.Thread(target=_decode_into, args=(path, info, stop, frames), daemon=True)
    worker.start()
    try:
        while (item := frames.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def detect_tracks(
    path: str | os.PathLike, detector, *, detect_every: int = 1, progress: bool = False
) -> FaceScan:
    """Pass 1: decode ``path``, detect faces (on every ``detect_every``-th frame) and track them.

    ``detector`` is a callable RGB image -> :class:`avemo.face.detect.Detections` (see
    :func:`avemo.face.detect.build_detector`). Raises :class:`AvemoError` for unreadable videos.
    """
    if detect_every < 1:
        raise ValueError(f"detect_every must be at least 1, got {detect_every}")
    info = probe(path)
    tracker = Tracker()
    # compact per-frame records (8 bytes a number), so memory hardly grows with the video's length
    times, keyframes = array.array("d"), array.array("q")
    found = _Rows(2 + 4 + 1 + 2 * NUM_LANDMARKS)  # frame, track id, box, score, landmarks
    bar = tqdm(
        total=info.num_frames or None,
        unit="frame",
        desc=Path(path).name,
        disable=not progress,
        leave=False,
    )
    decoded = array.array("b")
    with bar:
        for frame in _frames_ahead(path, info):
            index = frame.index
            if index > len(times):  # frames lost to damage: their times are where they belong
                gap, last = index - len(times) + 1, times[-1]
                times.extend([last + (frame.time - last) * k / gap for k in range(1, gap)])
                decoded.extend([0] * (gap - 1))
            times.append(frame.time)
            decoded.append(1)
            # the first decoded frame of every block of detect_every frames
            if not keyframes or index // detect_every > keyframes[-1] // detect_every:
                keyframes.append(index)
                faces = detector(frame.image)
                if len(faces):
                    ids = tracker.update(faces.boxes, index)
                    found.extend(
                        np.column_stack(
                            [
                                np.full(len(ids), index),
                                ids,
                                faces.boxes,
                                faces.scores,
                                faces.landmarks.reshape(-1, 2 * NUM_LANDMARKS),
                            ]
                        )
                    )
                else:
                    tracker.update(np.zeros((0, 4)), index)
            bar.update()
    if not times:
        raise AvemoError("no video frames could be decoded", path)
    rows = found.array()
    return FaceScan(
        info=info,
        times=np.frombuffer(times, np.float64).copy(),
        num_frames=len(times),
        keyframes=np.frombuffer(keyframes, np.int64).copy(),
        frames=rows[:, 0].astype(np.int64),
        ids=rows[:, 1].astype(np.int64),
        boxes=rows[:, 2:6].astype(np.float32),
        scores=rows[:, 6].astype(np.float32),
        landmarks=rows[:, 7:].reshape(-1, NUM_LANDMARKS, 2).astype(np.float32),
        decoded=np.frombuffer(decoded, np.int8).astype(bool),
    )


class _Rows:
    """Rows of numbers appended to a float64 array that doubles when full."""

    def __init__(self, width: int):
        self.data = np.empty((256, width))
        self.size = 0

    def extend(self, rows: np.ndarray) -> None:
        end = self.size + len(rows)
        if end > len(self.data):
            grown = np.empty((max(end, 2 * len(self.data)), self.data.shape[1]))
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = rows
        self.size = end

    def array(self) -> np.ndarray:
        return self.data[: self.size]


def faces_table(scan: FaceScan, max_faces: int = 1) -> pd.DataFrame:
    """One row per frame per kept face track (``TABLE_COLUMNS``), by frame then face.

    A frame lost to damage (a number :func:`avemo.decode.iter_frames` left free) has rows like a
    frame without a face (``success=0``, NaN numbers) at the time where it belongs.

    ``face_x, face_y`` is the box's top-left corner; ``lm0..lm4`` are the left eye, right eye,
    nose, left and right mouth corners. Rows of a frame where the face is absent have
    ``success=0`` and NaN numbers; a video without any face gets ``face_id=-1`` rows.
    """
    n = scan.num_frames
    tracks = scan.tracks(max_faces)
    blocks = []
    for track in tracks or [None]:
        if track is None:
            face_id, success = NO_FACE_ID, np.zeros(n, np.int64)
            boxes, scores = np.full((n, 4), np.nan), np.full(n, np.nan)
            landmarks = np.full((n, NUM_LANDMARKS * 2), np.nan)
        else:
            face_id, success = track.face_id, track.present.astype(np.int64)
            boxes, scores = track.boxes.astype(np.float64), track.scores.astype(np.float64)
            landmarks = track.landmarks.reshape(n, -1).astype(np.float64)
        block = {
            "frame": np.arange(n, dtype=np.int64),
            "timestamp": scan.times.round(TIME_DECIMALS),
            "face_id": np.full(n, face_id, np.int64),
            "success": success,
            "confidence": scores.round(SCORE_DECIMALS),
            "face_x": boxes[:, 0],
            "face_y": boxes[:, 1],
            "face_width": boxes[:, 2] - boxes[:, 0],
            "face_height": boxes[:, 3] - boxes[:, 1],
        }
        for j, name in enumerate(TABLE_COLUMNS[9:]):
            block[name] = landmarks[:, j]
        for name in TABLE_COLUMNS[5:]:
            block[name] = np.round(block[name], PIXEL_DECIMALS)
        blocks.append(pd.DataFrame(block, columns=TABLE_COLUMNS))
    table = pd.concat(blocks, ignore_index=True)
    return table.sort_values(["frame", "face_id"], kind="stable", ignore_index=True)


def iter_face_crops(
    path: str | os.PathLike, track: FaceTrack, size: int = 112
) -> Iterator[tuple[int, np.ndarray | None]]:
    """Pass 2: (0-based frame index, aligned size x size RGB crop or None) for every frame."""
    for frame in iter_frames(path):
        if frame.index >= len(track.present):
            raise AvemoError(
                f"the video decoded to more frames than before ({frame.index + 1} > "
                f"{len(track.present)})",
                path,
            )
        present = track.present[frame.index]
        yield (
            frame.index,
            align(frame.image, track.landmarks[frame.index], size) if present else None,
        )


def crops_folder(stem: Path, face_id: int) -> Path:
    """Where the aligned crops of ``face_id`` go for the output stem ``OUT/<rel>/<stem>``:
    ``OUT/<rel>/<stem>/`` for the dominant face (0), ``<stem>_face<id>/`` for the others
    (:data:`OTHER_FACE` recognises those names)."""
    return stem.with_name(stem.name + (f"_face{face_id}" if face_id else ""))


def save_crops(
    path: str | os.PathLike, track: FaceTrack, folder: str | os.PathLike, size: int = 112
) -> int:
    """Write ``track``'s aligned crops as ``folder/%05d.jpg`` (1-based frame numbers, Aff-Wild2
    layout); frames without the face get no file. Returns the number of crops written.

    A new folder appears complete or not at all (written under a temporary name, then renamed).
    Into an existing folder, only avemo's own crops (``%05d.jpg`` names) are replaced, each file
    atomically, and crops of frames that no longer have the face are removed; any other file
    or folder in it is left alone.
    """
    from avemo.files import make_part_dir

    folder = Path(folder)
    tmp = make_part_dir(folder)  # mode 0777 less the umask; stale parts of killed runs removed
    try:
        count = 0
        for index, crop in iter_face_crops(path, track, size):
            if crop is None:
                continue
            target = tmp / f"{index + 1:05d}.jpg"
            if not cv2.imwrite(
                str(target), crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY]
            ):
                raise AvemoError("cannot write a face crop", target)
            count += 1
        if folder.is_dir():
            written = {p.name for p in tmp.iterdir()}
            for name in sorted(written):
                os.replace(tmp / name, folder / name)
            for old in folder.iterdir():
                if CROP_NAME.match(old.name) and old.name not in written and old.is_file():
                    old.unlink()
        else:
            os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return count
