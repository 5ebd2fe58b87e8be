"""Streaming decoding with PyAV: RGB frames on the stream clock and mono audio on the same clock.

Every time here is a *clock time* in seconds: a presentation timestamp times its stream's time
base, exactly as the container stores it (not shifted to start at 0), so that video frames and
audio samples of one file line up, variable frame rates are right, and a stream that starts late
(an audio track beginning 0.5 s after the video) lands where it belongs.

Video is decoded one frame at a time (memory does not grow with the video's length) with FFmpeg's
frame/slice threading, converted to RGB and turned upright by the display matrix. Audio is the
first audio stream, mixed to mono as the **mean of its channels**, resampled with
``av.AudioResampler`` and placed sample by sample at its timestamps: silence fills the time before
it starts, gaps inside it and everything when there is no audio stream, and flags say so.

FFmpeg's own mono downmix is neither a mean nor a sum (stereo becomes ``(L + R) / sqrt(2)``, and
5.1 weighs its channels by centre/surround mix levels), so the resampler here keeps the source
layout (``format="fltp"``, only the rate changes) and the channels are averaged afterwards; the
two steps commute because resampling is linear.

Times never go back. The decoder gives frames in presentation order, but some containers (AVI
with B-frames) store timestamps in decoding order; :func:`iter_frames` holds up to
``REORDER_DEPTH`` frames back and gives each frame the smallest timestamp not yet used, which puts
such timestamps back in presentation order and leaves correct ones as they are. Where the
timestamps jump back by more than ``CLOCK_RESET`` s (files concatenated byte-wise, a recorder
restarting its clock) the clock continues instead: the new segment is shifted to start one frame
period after the previous segment's last video timestamp, and its audio by the same offset (both
passes read it from the video packets: :class:`_SegmentClock`), so video and audio stay as
aligned as the file has them, however many segments there are. A smaller step back that sorting
cannot fix gives the frame the previous time plus one frame period.

Packets that fail to decode are skipped and counted; one ``logging`` warning per decoding pass
(video or audio) reports them, and a video that ends well before its declared duration (a cut
file) is reported the same way. A report is given once per process and file: the later passes
of a command over the same file (crops, values, audio per face) do not repeat it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from avemo.errors import InputError
from avemo.spectrogram import SAMPLE_RATE  # the rate audio is resampled to by default

AUDIO_JITTER = 0.002  # s; audio timestamps this close to the running sample count are contiguous
TRUNCATION_TOLERANCE = 0.5  # s; video ending this much before its declared end is reported as cut
READER_MARGIN = 1.0  # s of audio AudioReader keeps before the start of the latest window
REORDER_DEPTH = 8  # frames held back so that timestamps stored in decoding order (AVI with
# B-frames) are put back in presentation order; a B-frame run longer than this is clamped
CLOCK_RESET = 0.5  # s; a timestamp going back further than this (and than REORDER_DEPTH frames)
# starts a new segment whose clock continues from the previous one (concatenated MPEG-TS)
READ_AHEAD = 5.0  # s of audio held, at most, while waiting for the video's offset of a segment
GRID_TOLERANCE = 0.25  # frames; a time this close to the frame-rate grid is on it (Frame.index)
FILL_LIMIT = 10.0  # s; a longer hole in the grid is a clock jump, not lost frames (Frame.index)

log = logging.getLogger(__name__)

_Path = str | os.PathLike


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` reads from a video file's headers (and its first frame).

    ``width`` and ``height`` are the display size in pixels, after ``rotation`` (counter-clockwise
    degrees, 0/90/180/270, from the display matrix) has been applied; pixel aspect ratio is not
    corrected. ``fps`` is the stream's average frame rate, else frames / duration. ``num_frames``
    is the container's frame count when it stores one, else ``duration * fps``: an estimate that
    may be off by a few frames (or more for variable frame rates); count frames from
    :func:`iter_frames` when it must be exact. ``duration`` (s) is the stream's, else the
    container's. ``start`` is the clock time (s) of the first frame. ``audio_rate`` is the native
    rate of the first audio stream (``None`` without audio). ``codec`` is FFmpeg's decoder name.
    """

    path: Path
    width: int
    height: int
    fps: float
    num_frames: int
    duration: float
    rotation: int
    start: float
    has_audio: bool
    audio_rate: int | None
    codec: str


@dataclass(frozen=True)
class Frame:
    """One decoded video frame.

    ``index`` is the frame's number, from 0 at the first decoded frame, increasing: its position
    on the frame-rate grid, ``round((time - first time) * fps)``, so that a frame lost to damage
    leaves its number free instead of shifting every later number (labels numbered by position
    in the intact video stay aligned). This holds while every frame lies on the grid (within
    GRID_TOLERANCE of a frame) and the second frame is one step after the first; from the first
    frame that does not (a variable frame rate, a declared rate that drifts from the real one or
    is a multiple of it) frames are counted instead. A hole longer than
    FILL_LIMIT seconds is taken for a jump of the clock and numbered as no hole. ``time`` is its
    presentation timestamp in seconds on the stream clock (PTS * time base, not shifted), never
    decreasing (see the module notes on reordered timestamps and clock resets); ``image`` is
    ``H x W x 3`` uint8 RGB, upright, C-contiguous.
    """

    index: int
    time: float
    image: np.ndarray


@dataclass(frozen=True, eq=False)
class Audio:
    """A whole audio track, mono float32, on the video's clock.

    ``samples[0]`` is at clock time ``start`` (s) and sample ``i`` at ``start + i / sample_rate``.
    ``missing`` is True when the file has no audio stream (``samples`` is then empty). ``gaps`` is
    the number of seconds of silence inserted where the track's timestamps jump forward; silence
    before ``start`` (a late audio stream) is not counted there. Every :meth:`window` outside the
    data is zeros.
    """

    samples: np.ndarray
    sample_rate: int
    start: float = 0.0
    missing: bool = False
    gaps: float = 0.0

    @property
    def duration(self) -> float:
        """Seconds of samples (including inserted gaps)."""
        return len(self.samples) / self.sample_rate

    def window(self, t0: float, t1: float) -> np.ndarray:
        """The ``round((t1 - t0) * sample_rate)`` samples from clock time ``t0``, zero-filled."""
        return _window(self.samples, round(self.start * self.sample_rate), t0, t1, self.sample_rate)


def _window(buffer: np.ndarray, base: int, t0: float, t1: float, rate: int) -> np.ndarray:
    """Samples ``[t0, t1)`` from ``buffer`` whose first sample sits at absolute index ``base``."""
    first, count = round(t0 * rate), max(0, round((t1 - t0) * rate))
    out = np.zeros(count, dtype=np.float32)
    lo, hi = max(first, base), min(first + count, base + len(buffer))
    if hi > lo:
        out[lo - first : hi - first] = buffer[lo - base : hi - base]
    return out


_REPORTED: dict[tuple, None] = {}  # damage already reported (insertion-ordered, bounded)
REPORTED_KEPT = 1024  # reports remembered, so that a long batch does not grow memory


def forget_reports() -> None:
    """Forget which damage was reported, so that it is reported again (for tests)."""
    _REPORTED.clear()


class _Damage:
    """What could not be read in one decoding pass over a file, reported in one warning.

    Commands decode a file several times (face detection, then crops or values; audio once per
    face track), and each pass finds the same damage: the same report about the same file (same
    size and modification time) is logged once per process.
    """

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        self.skipped = 0  # corrupt or undecodable packets and frames
        self.missing = 0  # frame numbers left free (lost frames: Frame.index)
        self.read_error: str | None = None
        self.short: tuple[float, float] | None = None  # (decoded end, declared end) in s

    def report(self) -> None:
        parts = []
        if self.skipped:
            parts.append(f"skipped {self.skipped} corrupt packet(s)")
        if self.missing:
            parts.append(f"{self.missing} frame(s) missing (their numbers are left free)")
        if self.read_error:
            parts.append(f"reading stopped early ({self.read_error})")
        if self.short:
            parts.append(f"ends at {self.short[0]:.2f} s of {self.short[1]:.2f} s (file cut?)")
        if parts:
            message = "; ".join(parts)
            try:
                stat = os.stat(self.path)
                key = (str(self.path.resolve()), stat.st_size, stat.st_mtime_ns, self.what, message)
            except OSError:
                key = (str(self.path), self.what, message)
            if key not in _REPORTED:
                _REPORTED[key] = None
                while len(_REPORTED) > REPORTED_KEPT:
                    del _REPORTED[next(iter(_REPORTED))]
                log.warning("%s: %s: %s", self.path, self.what, message)
        self.skipped, self.missing, self.read_error, self.short = 0, 0, None, None


def _open(path: _Path) -> av.container.InputContainer:
    """Open a media file, turning every way it can be unreadable into one InputError."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path)
    if path.is_dir():
        raise InputError("is a directory, not a video file", path)
    if path.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", path)
    try:
        return av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise InputError(f"not a readable media file ({reason})", path) from None


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.VideoStream:
    """The first real video stream (cover art attached to audio files does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    raise InputError("no video stream", path)


def _decoded(
    container, stream, damage: _Damage, clock: _SegmentClock | None = None
) -> Iterator[av.frame.Frame]:
    """Frames of one stream, skipping (and counting) packets and frames that fail to decode.

    With ``clock``, the packets of the clock's video stream (demuxed too, not decoded) are shown
    to it, so that it knows where that stream's timestamps jump back.
    """
    watched = clock.stream if clock is not None else None
    others = [watched] if watched is not None and watched is not stream else []
    packets = container.demux(stream, *others)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except (av.FFmpegError, OSError) as error:
            damage.read_error = getattr(error, "strerror", None) or str(error)
            packet = None  # flush what the decoder holds
        if packet is not None and watched is not None and packet.stream is watched:
            clock.packet(packet)
            if packet.stream is not stream:
                continue
        if packet is not None and packet.is_corrupt:
            damage.skipped += 1
            continue
        try:
            frames = stream.decode(packet)
        except av.FFmpegError:
            damage.skipped += 1
            continue
        for frame in frames:
            if frame.is_corrupt:
                damage.skipped += 1
            else:
                yield frame
        if packet is None:
            return


class _SegmentClock:
    """Where the video stream's timestamps jump back, and the offset that continues the clock
    after each jump: the video pass and the audio pass both read it from the video packets, so
    that both streams of a segment are shifted by the same offset (what lies together in the file
    stays together). Segment ``k``'s offset puts its first video packet one ``period`` after the
    largest video timestamp of segment ``k - 1``."""

    def __init__(self, stream, period: float):
        self.stream, self.period = stream, period
        self.reset = max(CLOCK_RESET, REORDER_DEPTH * period)
        self.offsets = [0.0]  # per segment, seconds added to its timestamps
        self.top = -math.inf  # largest video timestamp of the current segment

    def packet(self, packet) -> None:
        if packet.pts is None or packet.time_base is None:
            return
        time = float(packet.pts * packet.time_base)
        if time < self.top - self.reset:
            self.offsets.append(self.offsets[-1] + self.top + self.period - time)
            self.top = -math.inf
        self.top = max(self.top, time)


def _video_clock(container, period: float | None = None) -> _SegmentClock | None:
    """The segment clock of a container's video stream (None without one)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if period is None:
                rate = stream.average_rate or stream.guessed_rate
                period = 1.0 / float(rate) if rate else 1.0 / 30
            return _SegmentClock(stream, period)
    return None


def _seconds(value, time_base) -> float | None:
    return None if value is None or time_base is None else float(value * time_base)


def _declared_duration(container, stream, *, own: bool = False) -> float | None:
    """Duration in s from the stream, Matroska's per-track DURATION tag, or the container.

    With ``own``, the container's duration (the longest of its streams) is used only when the
    stream is the only audio/video stream, so that a longer audio track is not taken for it.
    """
    duration = _seconds(stream.duration, stream.time_base)
    if duration is None and "DURATION" in stream.metadata:
        try:
            h, m, s = stream.metadata["DURATION"].split(":")
            duration = int(h) * 3600 + int(m) * 60 + float(s)
        except ValueError:
            duration = None
    alone = len(container.streams.video) + len(container.streams.audio) == 1
    if duration is None and container.duration and (alone or not own):
        duration = container.duration / av.time_base
    return duration


def _rotation(degrees: float) -> int:
    """Counter-clockwise display rotation snapped to 0, 90, 180 or 270."""
    return int(round(degrees / 90.0)) % 4 * 90


def probe(path: _Path) -> VideoInfo:
    """Read a video's properties from its headers and first decoded frame (for its rotation and
    start time, which FFmpeg exposes only on frames); cheap, independent of the video's length.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        first = next(_decoded(container, stream, _Damage(path, "video")), None)
        duration = _declared_duration(container, stream) or 0.0
        frames = stream.frames or 0
        if stream.average_rate:
            fps = float(stream.average_rate)
        elif frames and duration:
            fps = frames / duration
        elif stream.guessed_rate:
            fps = float(stream.guessed_rate)
        else:
            raise InputError("cannot tell the video's frame rate", path)
        # the display matrix reaches Python only on frames; older FFmpeg versions exported it
        # as a `rotate` tag instead (clockwise degrees)
        tag = stream.metadata.get("rotate", "0")
        try:
            degrees = (first.rotation if first is not None else 0) or -float(tag)
        except ValueError:
            degrees = 0
        rotation = _rotation(degrees)
        width = stream.codec_context.width or (first.width if first else 0)
        height = stream.codec_context.height or (first.height if first else 0)
        if rotation % 180:
            width, height = height, width
        if first is not None and first.pts is not None:
            start = float(first.time)
        else:
            start = _seconds(stream.start_time, stream.time_base) or 0.0
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=path,
            width=width,
            height=height,
            fps=fps,
            num_frames=frames or round(duration * fps),
            duration=duration,
            rotation=rotation,
            start=start,
            has_audio=audio is not None,
            audio_rate=audio.sample_rate if audio is not None else None,
            codec=stream.codec_context.name,
        )


def iter_frames(path: _Path, *, info: VideoInfo | None = None) -> Iterator[Frame]:
    """Decode a video frame by frame (threaded), RGB and upright, in presentation order.

    Times never decrease: decoding-order timestamps are sorted back into presentation order and
    a clock that jumps back continues from the previous frame (see the module notes). Frames
    without a timestamp get the previous frame's time plus ``1 / fps``. Undecodable packets
    are skipped and reported in one warning at the end, as is a video that stops well before its
    declared duration (a truncated file yields the frames that decode); a file where not one frame
    decodes raises :class:`InputError`. Pass ``info`` from :func:`probe` to skip probing again.
    """
    path = Path(path)
    info = info or probe(path)
    turns = info.rotation // 90 % 4
    period = 1.0 / info.fps
    damage = _Damage(path, "video")
    numbers, time = _FrameNumbers(info.fps), None
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        try:
            clock = _SegmentClock(stream, period)
            frames = _decoded(container, stream, damage, clock)
            for frame, time in _presentation_times(frames, info.start, period, clock):
                index = numbers(time)
                # PyAV >= 18 returns a view of the padded plane when rows are padded (e.g. 176 px
                # wide): copy to the documented C-contiguous layout (a no-op when it already is)
                image = frame.to_ndarray(format="rgb24")
                image = np.ascontiguousarray(np.rot90(image, turns) if turns else image)
                yield Frame(index=index, time=time, image=image)
            damage.missing = numbers.missing
            if numbers.last < 0:
                raise InputError("no video frame could be decoded", path)
            end = _declared_duration(container, stream, own=True)
            if end is not None:
                end += _seconds(stream.start_time, stream.time_base) or 0.0
                if time + period < end - TRUNCATION_TOLERANCE:
                    damage.short = (time + period, end)
        finally:
            damage.report()


class _FrameNumbers:
    """Frame numbers from presentation times (the rule of :class:`Frame`): positions on the
    frame-rate grid ``round((time - first) * fps)`` while every frame lies on it, counting
    otherwise; ``missing`` counts the grid positions left free."""

    def __init__(self, fps: float):
        self.fps, self.anchor, self.last = fps, None, -1
        self.on_grid, self.missing = True, 0

    def __call__(self, time: float) -> int:
        if self.anchor is None:
            self.anchor, self.last = time, 0
            return 0
        if self.on_grid:
            position = (time - self.anchor) * self.fps
            index = round(position)
            # the second frame a whole step away or more: the declared rate is not the frame rate
            fits = index == 1 if self.last == 0 else index > self.last
            if abs(position - index) <= GRID_TOLERANCE and fits:
                if index - self.last - 1 > FILL_LIMIT * self.fps:  # a clock jump, not lost frames
                    index = self.last + 1
                    self.anchor = time - index / self.fps
                self.missing += index - self.last - 1
                self.last = index
                return index
            self.on_grid = False  # a variable frame rate (or a clock that drifts): count
        self.last += 1
        return self.last


def _presentation_times(
    frames: Iterator[av.frame.Frame],
    start: float,
    period: float,
    clock: _SegmentClock | None = None,
) -> Iterator[tuple[av.frame.Frame, float]]:
    """``(frame, time)`` in the order given, with times that never decrease.

    Up to REORDER_DEPTH frames are held back; each frame given out takes the smallest held
    timestamp, so timestamps that arrive in decoding order come out sorted. A timestamp more than
    ``max(CLOCK_RESET, REORDER_DEPTH periods)`` before the largest of its segment starts a new
    segment: held frames are given out first, then the new segment's clock is shifted by the
    ``clock``'s offset for it (from the packets: the audio pass shifts its audio the same way), or
    without one so as to start one period after the last time given out. Frames without a
    timestamp get the previous raw timestamp plus ``period`` (``start`` for the first).
    """
    import heapq

    held: list[av.frame.Frame] = []  # in the decoder's (presentation) order
    stamps: list[float] = []  # min-heap of the held frames' raw timestamps
    reset = max(CLOCK_RESET, REORDER_DEPTH * period)
    offset, top, raw, last, segment = 0.0, -math.inf, None, None, 0

    def give() -> tuple[av.frame.Frame, float]:
        nonlocal last
        time = heapq.heappop(stamps) + offset
        if last is not None and time <= last:  # a step back sorting could not fix
            time = last + period
        last = time
        return held.pop(0), time

    for frame in frames:
        if frame.pts is not None:
            raw = float(frame.pts * frame.time_base)
        else:
            raw = start if raw is None else raw + period
        if raw < top - reset:  # the clock went back: a new segment
            while held:
                yield give()
            segment += 1
            if clock is not None and segment < len(clock.offsets):
                offset = clock.offsets[segment]
            else:
                offset = (last + period) - raw
            top = -math.inf
        top = max(top, raw)
        held.append(frame)
        heapq.heappush(stamps, raw)
        if len(held) > REORDER_DEPTH:
            yield give()
    while held:
        yield give()


def frame_times(frames: Iterable[Frame]) -> np.ndarray:
    """The timestamp of every frame number of a video, frames lost to damage included (their
    numbers are left free by :func:`iter_frames`; their times are placed evenly between the
    neighbouring decoded frames'), from the frames' stream."""
    times: list[float] = []
    for frame in frames:
        if frame.index > len(times) and times:
            gap, last = frame.index - len(times) + 1, times[-1]
            times.extend(last + (frame.time - last) * k / gap for k in range(1, gap))
        times.append(frame.time)
    return np.asarray(times, dtype=np.float64)


class _MonoChunks:
    """The first audio stream as ``(position, samples)`` chunks: mono float32 at ``rate``.

    ``position`` is the absolute sample index on the clock (``round(time * rate)``). Chunks come
    in clock order and never overlap (overlapping data is trimmed); where the timestamps jump
    forward by more than AUDIO_JITTER a gap is left, and ``gaps`` counts its seconds; where they
    jump back by more than CLOCK_RESET a new segment starts, shifted as the video's (see
    :meth:`_timed`). Runs of
    contiguous frames go through one resampler, so their samples follow each other exactly.
    """

    def __init__(self, path: Path, rate: int):
        self.path, self.rate = path, int(rate)
        self.gaps = 0.0
        self.damage = _Damage(path, "audio")
        self.container = _open(path)
        audios = self.container.streams.audio
        self.stream = audios[0] if audios else None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        if self.stream is None:
            return
        end = None  # absolute index after the last chunk given out
        for position, samples in self._segments():
            if end is not None and position < end:
                samples, position = samples[end - position :], end
            if not len(samples):
                continue
            if end is not None and position > end:
                self.gaps += (position - end) / self.rate
            yield position, samples
            end = position + len(samples)

    def _timed(self) -> Iterator[tuple[av.AudioFrame, float | None]]:
        """Decoded frames with their clock times (None without a timestamp).

        Where the timestamps jump back by more than CLOCK_RESET, a new segment starts: it is
        shifted by the video's offset for the same segment (:class:`_SegmentClock`, read from
        the video packets, which may come a little later in the file: up to READ_AHEAD s of
        audio is held until they do), or, without a video stream or a matching jump in it, so
        that it follows the previous audio on.
        """
        clock = _video_clock(self.container)
        frames = _decoded(self.container, self.stream, self.damage, clock)
        held: list[av.AudioFrame] = []
        offset, segment, expected = 0.0, 0, None
        while True:
            frame = held.pop(0) if held else next(frames, None)
            if frame is None:
                return
            if frame.pts is None:
                yield frame, None
                continue
            raw = float(frame.pts * frame.time_base)
            if expected is not None and raw + offset < expected - CLOCK_RESET:
                segment += 1  # the clock went back: a new segment
                ahead = 0.0
                while clock is not None and len(clock.offsets) <= segment and ahead < READ_AHEAD:
                    more = next(frames, None)
                    if more is None:
                        break
                    held.append(more)
                    ahead += more.samples / more.sample_rate
                if clock is not None and len(clock.offsets) > segment:
                    offset = clock.offsets[segment]
                else:
                    offset = expected - raw
            expected = raw + offset + frame.samples / frame.sample_rate
            yield frame, raw + offset

    def _segments(self) -> Iterator[tuple[int, np.ndarray]]:
        resampler, key, origin, produced, expected = None, None, 0, 0, None
        for frame, time in self._timed():
            if time is None:
                time = 0.0 if expected is None else expected
            frame_key = (frame.format.name, frame.layout.name, frame.sample_rate)
            if frame_key != key or expected is None or abs(time - expected) > AUDIO_JITTER:
                if resampler is not None:
                    yield from self._mono(resampler.resample(None), origin, produced)
                # a new run: placed at its own timestamp
                resampler = av.AudioResampler(format="fltp", rate=self.rate)
                key, origin, produced, expected = frame_key, round(time * self.rate), 0, time
            expected += frame.samples / frame.sample_rate
            for position, samples in self._mono(resampler.resample(frame), origin, produced):
                produced += len(samples)
                yield position, samples
        if resampler is not None:
            yield from self._mono(resampler.resample(None), origin, produced)

    @staticmethod
    def _mono(frames, origin: int, produced: int) -> Iterator[tuple[int, np.ndarray]]:
        for frame in frames:
            samples = frame.to_ndarray().mean(axis=0, dtype=np.float32)
            yield origin + produced, samples
            produced += len(samples)

    def close(self) -> None:
        self.container.close()
        self.damage.report()


def load_audio(
    path: _Path, sample_rate: int = SAMPLE_RATE, *, info: VideoInfo | None = None
) -> Audio:
    """The whole first audio track in memory, mono (mean of channels) at ``sample_rate``.

    Without an audio stream (``info.has_audio`` False, or none in the file) the result has
    ``missing=True`` and no samples, so every window is zeros. Files without video are fine here.
    """
    path = Path(path)
    if info is not None and not info.has_audio:
        return Audio(np.zeros(0, np.float32), int(sample_rate), missing=True)
    chunks = _MonoChunks(path, sample_rate)
    try:
        if chunks.stream is None:
            return Audio(np.zeros(0, np.float32), int(sample_rate), missing=True)
        pieces = list(chunks)
    finally:
        chunks.close()
    if not pieces:
        return Audio(np.zeros(0, np.float32), int(sample_rate))
    first = pieces[0][0]
    samples = np.zeros(pieces[-1][0] + len(pieces[-1][1]) - first, dtype=np.float32)
    for position, piece in pieces:
        samples[position - first : position - first + len(piece)] = piece
    return Audio(samples, int(sample_rate), start=first / sample_rate, gaps=chunks.gaps)


class AudioReader:
    """Streaming :func:`load_audio`: the same ``window(t0, t1)`` with memory flat in length.

    Windows must come with ``t0`` never decreasing by more than READER_MARGIN (clips in time
    order): audio is decoded just far enough ahead for each window and samples before the
    latest ``t0 - READER_MARGIN`` are dropped. ``start`` and ``missing`` are known from the
    start; ``gaps`` counts the seconds of gaps decoded so far. Close it, or use ``with``.
    """

    def __init__(self, path: _Path, sample_rate: int = SAMPLE_RATE):
        self.path, self.sample_rate = Path(path), int(sample_rate)
        self._chunks = _MonoChunks(self.path, self.sample_rate)
        self.missing = self._chunks.stream is None
        self._source = iter(self._chunks)
        self._pending = next(self._source, None)  # the next chunk not yet in the buffer
        self.start = self._pending[0] / self.sample_rate if self._pending else 0.0
        self._buffer = np.zeros(0, dtype=np.float32)
        self._base = self._pending[0] if self._pending else 0  # absolute index of _buffer[0]
        self._floor = -math.inf  # earliest absolute index still answerable

    @property
    def gaps(self) -> float:
        return self._chunks.gaps

    def window(self, t0: float, t1: float) -> np.ndarray:
        """The ``round((t1 - t0) * sample_rate)`` samples from clock time ``t0``, zero-filled."""
        first = round(t0 * self.sample_rate)
        last = first + max(0, round((t1 - t0) * self.sample_rate))
        if first < self._floor:
            raise ValueError(
                f"AudioReader windows must not go back more than {READER_MARGIN} s "
                f"(asked for {t0:.3f} s after {self._floor / self.sample_rate:.3f} s)"
            )
        self._floor = max(self._floor, first - round(READER_MARGIN * self.sample_rate))
        self._drop(self._floor)
        self._fill(last)
        return _window(self._buffer, self._base, t0, t1, self.sample_rate)

    def _drop(self, keep_from: float) -> None:
        if keep_from <= self._base:
            return
        keep_from = int(keep_from)
        cut = min(keep_from - self._base, len(self._buffer))
        self._buffer = self._buffer[cut:]
        self._base = keep_from if not len(self._buffer) else self._base + cut

    def _fill(self, upto: int) -> None:
        pieces, end = [self._buffer], self._base + len(self._buffer)
        while end < upto and self._pending is not None and self._pending[0] < upto:
            position, samples = self._pending
            if position < end:
                samples = samples[end - position :]
            elif position > end:
                pieces.append(np.zeros(position - end, dtype=np.float32))
            pieces.append(samples)
            end = max(end, position) + len(samples)
            self._pending = next(self._source, None)
        if len(pieces) > 1:
            self._buffer = np.concatenate(pieces)

    def close(self) -> None:
        """Release the file (and report damage found so far)."""
        self._chunks.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = [
    "Audio",
    "AudioReader",
    "Frame",
    "VideoInfo",
    "iter_frames",
    "load_audio",
    "probe",
]
