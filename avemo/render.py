"""Overlay videos: the input with its annotation drawn on, to check an annotation by watching it.

:func:`render` writes ``<stem>.overlay.mp4`` from an annotate table (or its CSV) and the video:
every decoded frame (upright, display size) with each face's box and id, its current valence and
arousal as labelled bars, a scrolling trace of the last ``TRACE_SECONDS`` of both, and a small
circumplex (valence across, arousal up) with the current point of each face. Frames keep their
presentation times (same count, same timestamps); the input's first audio stream is copied
packet by packet (no re-encoding). Video is H.264 (libx264) where FFmpeg has it, else MPEG-4
Part 2. Drawing is plain OpenCV on the RGB frame.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd

from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path

log = logging.getLogger("avemo")

TRACE_SECONDS = 10.0  # length of the scrolling trace
ENCODERS = ("libx264", "mpeg4")  # first one FFmpeg has
X264_OPTIONS = {"preset": "ultrafast", "crf": "23"}  # fast enough for annotate --overlay
MPEG4_BIT_RATE = 4_000_000  # bit/s for the fallback encoder
TIME_TOLERANCE = 2e-3  # s: the table's timestamps must match the decoded frames' this closely
# RGB colours
VALENCE = (255, 170, 0)
AROUSAL = (0, 190, 255)
FACES = ((80, 230, 80), (255, 90, 200), (255, 255, 80), (120, 160, 255), (255, 120, 60))
WHITE, GREY = (255, 255, 255), (150, 150, 150)
FONT = cv2.FONT_HERSHEY_SIMPLEX
OVERLAY_SUFFIX = ".overlay.mp4"


def overlay_path(stem: Path) -> Path:
    """``OUT/<rel>/<stem>.overlay.mp4``."""
    return stem.with_name(stem.name + OVERLAY_SUFFIX)


def encoder() -> str:
    """The video encoder: the first of ``ENCODERS`` that this FFmpeg build has."""
    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
        except Exception:  # noqa: BLE001 - PyAV raises several types for a missing codec
            continue
        return name
    raise AvemoError(f"none of the video encoders {', '.join(ENCODERS)} is available")


class Overlay:
    """Draws one annotate table's faces onto frames ``0..N-1`` (RGB, in place)."""

    def __init__(self, table: pd.DataFrame, width: int, height: int):
        self.width, self.height = width, height
        frames = table["frame"].to_numpy(np.int64)
        self.num_frames = int(frames.max()) + 1 if len(frames) else 0
        self.times = np.full(self.num_frames, np.nan)
        self.times[frames] = table["timestamp"].to_numpy(np.float64)
        self.faces = []
        for face_id, rows in table[table["face_id"] >= 0].groupby("face_id", sort=True):
            index = rows["frame"].to_numpy(np.int64)
            data = np.full((self.num_frames, 7), np.nan)
            columns = ["face_x", "face_y", "face_width", "face_height", "valence", "arousal"]
            data[index, :6] = rows[columns].to_numpy(np.float64)
            data[index, 6] = rows["success"].to_numpy(np.float64)
            self.faces.append((int(face_id), data))
        side = min(width, height)
        self.scale = max(side / 480.0, 0.35)
        self.font = 0.45 * self.scale
        self.thick = max(1, round(1.5 * self.scale))
        margin = max(4, round(8 * self.scale))
        self.margin = margin
        # bottom-left: the trace panel; bottom-right: the circumplex
        self.circle = max(24, round(0.22 * side))
        trace_w = max(60, width - self.circle - 3 * margin)
        trace_h = self.circle
        self.trace = (margin, height - margin - trace_h, trace_w, trace_h)
        self.circ = (width - margin - self.circle, height - margin - self.circle)

    def color(self, k: int) -> tuple[int, int, int]:
        return FACES[k % len(FACES)]

    def _text(self, image, text, x, y, color=WHITE, scale=1.0) -> None:
        cv2.putText(image, text, (int(x), int(y)), FONT, self.font * scale, color, 1, cv2.LINE_AA)

    def draw(self, image: np.ndarray, index: int) -> np.ndarray:
        if index >= self.num_frames:
            return image
        for k, (face_id, data) in enumerate(self.faces):
            self._face(image, face_id, data[index], self.color(k))
        self._trace(image, index)
        self._circumplex(image, index)
        return image

    def _face(self, image, face_id, row, color) -> None:
        x, y, w, h, valence, arousal, seen = row
        if seen == 1 and np.isfinite([x, y, w, h]).all():
            p0, p1 = (int(x), int(y)), (int(x + w), int(y + h))
            cv2.rectangle(image, p0, p1, color, self.thick, cv2.LINE_AA)
            self._text(image, f"face {face_id}", x, max(y - 4, 10 * self.scale), color)
        if not np.isfinite([x, y, w, h]).all():
            return
        # bars under the box: zero in the middle, the value to the right (+) or left (-)
        bar_w = max(int(w), int(70 * self.scale))
        bar_h = max(3, int(7 * self.scale))
        left, top = int(x + w / 2 - bar_w / 2), int(y + h + 4 * self.scale)
        for i, (name, value, tint) in enumerate((("V", valence, VALENCE), ("A", arousal, AROUSAL))):
            y0 = top + i * (bar_h + max(3, int(12 * self.scale)))
            region = image[max(y0, 0) : max(y0 + bar_h, 0), max(left, 0) : max(left + bar_w, 0)]
            np.right_shift(region, 1, out=region)
            mid = left + bar_w // 2
            if np.isfinite(value):
                end = int(mid + value * bar_w / 2)
                cv2.rectangle(image, (min(mid, end), y0), (max(mid, end), y0 + bar_h), tint, -1)
                label = f"{name} {value:+.2f}"
            else:
                label = f"{name} n/a"
            cv2.line(image, (mid, y0 - 1), (mid, y0 + bar_h), WHITE, 1)
            self._text(image, label, left + bar_w + 3, y0 + bar_h, tint, 0.85)

    def _trace(self, image, index) -> None:
        x0, y0, w, h = self.trace
        if w <= 0 or h <= 0 or y0 < 0:
            return
        region = image[y0 : y0 + h, x0 : x0 + w]
        np.right_shift(region, 1, out=region)
        now = self.times[index]
        if not np.isfinite(now):
            return
        first = np.searchsorted(self.times[: index + 1], now - TRACE_SECONDS, side="left")
        span = np.arange(first, index + 1)
        # in time order (frames of some AVI files decode with swapped timestamps)
        span = span[np.argsort(self.times[span], kind="stable")]
        xs = x0 + (self.times[span] - (now - TRACE_SECONDS)) / TRACE_SECONDS * (w - 1)
        half = (h - 1) / 2 - 1
        mid = y0 + h // 2
        cv2.line(image, (x0, mid), (x0 + w - 1, mid), GREY, 1)
        for k, (_, data) in enumerate(self.faces):
            for column, tint in ((4, VALENCE), (5, AROUSAL)):
                ys = mid - data[span, column] * half
                self._polyline(image, xs, ys, tint if k == 0 else self.color(k))
        self._text(image, "valence", x0 + 3, y0 + 12 * self.scale, VALENCE, 0.8)
        self._text(image, "arousal", x0 + 3, y0 + 24 * self.scale, AROUSAL, 0.8)
        self._text(image, f"-{TRACE_SECONDS:g} s", x0 + 3, y0 + h - 3, GREY, 0.7)

    def _polyline(self, image, xs, ys, color) -> None:
        """Lines through the finite points; NaN values leave gaps."""
        ok = np.isfinite(ys)
        if ok.sum() < 1:
            return
        points = np.stack([xs, np.where(ok, ys, 0.0)], axis=1).round().astype(np.int32)
        breaks = np.flatnonzero(np.diff(ok.astype(np.int8)) != 0) + 1
        runs = [run for run in np.split(np.arange(len(ok)), breaks) if ok[run[0]]]
        lines = [points[run] for run in runs if len(run) > 1]
        if lines:
            cv2.polylines(image, lines, False, color, self.thick, cv2.LINE_8)
        for run in runs:
            if len(run) == 1:
                cv2.circle(image, tuple(points[run[0]]), self.thick, color, -1)

    def _circumplex(self, image, index) -> None:
        x0, y0 = self.circ
        size = self.circle
        if x0 < 0 or y0 < 0:
            return
        region = image[y0 : y0 + size, x0 : x0 + size]
        np.right_shift(region, 1, out=region)
        centre = (x0 + size // 2, y0 + size // 2)
        radius = size // 2 - 2
        cv2.circle(image, centre, radius, GREY, 1, cv2.LINE_AA)
        cv2.line(image, (x0 + 2, centre[1]), (x0 + size - 3, centre[1]), GREY, 1)
        cv2.line(image, (centre[0], y0 + 2), (centre[0], y0 + size - 3), GREY, 1)
        self._text(image, "V", x0 + size - 12 * self.scale, centre[1] - 3, VALENCE, 0.8)
        self._text(image, "A", centre[0] + 3, y0 + 12 * self.scale, AROUSAL, 0.8)
        for k, (_, data) in enumerate(self.faces):
            valence, arousal = data[index, 4], data[index, 5]
            if np.isfinite(valence) and np.isfinite(arousal):
                point = (int(centre[0] + valence * radius), int(centre[1] - arousal * radius))
                cv2.circle(image, point, max(2, int(4 * self.scale)), self.color(k), -1)


def _read_table(table: pd.DataFrame | str | os.PathLike) -> pd.DataFrame:
    if isinstance(table, pd.DataFrame):
        return table
    path = Path(table)
    try:
        data = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read the annotation: {error}", path) from None
    needed = {"frame", "timestamp", "face_id", "success", "valence", "arousal"}
    needed |= {"face_x", "face_y", "face_width", "face_height"}
    if missing := sorted(needed - set(data.columns)):
        raise InputError(f"not an avemo annotate table (no {', '.join(missing)})", path)
    return data


def _check_times(overlay: Overlay, index: int, time: float, source: Path) -> None:
    if index >= overlay.num_frames:
        raise InputError(
            f"the video has more frames than the annotation ({overlay.num_frames}): "
            "is it the annotation of another video?",
            source,
        )
    expected = overlay.times[index]
    if np.isfinite(expected) and abs(expected - time) > TIME_TOLERANCE:
        raise InputError(
            f"frame {index} is at {time:.3f} s in the video but {expected:.3f} s in the "
            "annotation: is it the annotation of another video?",
            source,
        )


def render(
    table: pd.DataFrame | str | os.PathLike,
    video: str | os.PathLike,
    output: str | os.PathLike,
) -> Path:
    """Write the overlay video of ``table`` (an annotate table or its CSV/TSV) on ``video``."""
    from avemo.decode import iter_frames, probe

    video, output = Path(video), Path(output)
    table = _read_table(table)
    info = probe(video)
    overlay = Overlay(table, info.width, info.height)
    with av.open(str(video)) as source, atomic_path(output) as tmp:
        stream = source.streams.video[0]
        base = stream.time_base or Fraction(1, 90_000)
        audio_in = source.streams.audio[0] if source.streams.audio else None
        with av.open(str(tmp), "w", format="mp4") as sink:
            name = encoder()
            rate = Fraction(info.fps).limit_denominator(100_000)
            out = sink.add_stream(name, rate=rate)
            out.width, out.height = info.width, info.height
            odd = info.width % 2 or info.height % 2
            out.pix_fmt = "yuv444p" if odd and name == "libx264" else "yuv420p"
            out.codec_context.time_base = base
            if name == "libx264":
                out.codec_context.options = dict(X264_OPTIONS)
            else:
                out.codec_context.bit_rate = MPEG4_BIT_RATE
            out.thread_type = "AUTO"
            audio_out = _audio_stream(sink, audio_in, video)
            packets = _audio_packets(video, audio_out) if audio_out is not None else iter(())
            pending = next(packets, None)
            count, last = 0, None
            for frame in iter_frames(video, info=info):
                _check_times(overlay, frame.index, frame.time, video)
                image = overlay.draw(frame.image, frame.index)
                picture = av.VideoFrame.from_ndarray(image, format="rgb24")
                pts = round(frame.time / base)
                pts = pts if last is None or pts > last else last + 1
                picture.pts, picture.time_base, last = pts, base, pts
                while pending is not None and pending[0] <= frame.time:
                    sink.mux(pending[1])
                    pending = next(packets, None)
                sink.mux(out.encode(picture))
                count += 1
            sink.mux(out.encode())
            while pending is not None:
                sink.mux(pending[1])
                pending = next(packets, None)
        if count < overlay.num_frames:
            raise InputError(
                f"the annotation has {overlay.num_frames} frames, the video {count}: "
                "is it the annotation of another video?",
                video,
            )
    return output


def _audio_stream(sink, audio_in, video: Path):
    """An output stream copying ``audio_in`` (None without audio, or when MP4 cannot hold it)."""
    if audio_in is None:
        return None
    try:
        return sink.add_stream_from_template(audio_in)
    except (ValueError, av.FFmpegError) as error:
        log.warning("%s: audio not copied into the overlay (%s)", video, error)
        return None


def _audio_packets(video: Path, stream):
    """``(time s, packet)`` of the first audio stream, retargeted to ``stream``, in file order."""
    with av.open(str(video)) as source:
        audio = source.streams.audio[0]
        for packet in source.demux(audio):
            if packet.dts is None or packet.size == 0:
                continue
            time = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            packet.stream = stream
            yield time, packet


__all__ = ["Overlay", "encoder", "overlay_path", "render"]
