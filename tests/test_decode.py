import logging

import av
import media
import numpy as np
import pytest
from scipy.signal import resample_poly

from avemo.decode import READER_MARGIN, AudioReader, Frame, iter_frames, load_audio, probe
from avemo.errors import AvemoError
from avemo.spectrogram import SAMPLE_RATE


def plain_decode(path):
    """Independent reference: PyAV's single-threaded decode, (times, RGB images)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
        return [float(f.pts * f.time_base) for f in frames], [
            f.to_ndarray(format="rgb24") for f in frames
        ]


def video_packets(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for p in container.demux(video=0) if p.size)


def decode_warnings(caplog, what):
    return [
        r for r in caplog.records if r.name == "avemo.decode" and f": {what}: " in r.getMessage()
    ]


# --- video ------------------------------------------------------------------------------------


def test_probe_reads_the_clip(av_clip):
    info = probe(av_clip)
    assert (info.width, info.height, info.rotation, info.codec) == (176, 144, 0, "h264")
    assert info.fps == pytest.approx(30000 / 1001)
    assert info.num_frames == 120
    assert info.duration == pytest.approx(120 * 1001 / 30000, abs=1e-3)
    assert info.start == 0.0
    assert info.has_audio and info.audio_rate == media.AUDIO_RATE
    assert info.path == av_clip


def test_frames_equal_an_independent_decode(av_clip):
    frames = list(iter_frames(av_clip))
    times, images = plain_decode(av_clip)
    assert len(frames) == len(images) == video_packets(av_clip) == 120
    assert [f.index for f in frames] == list(range(120))
    assert [f.time for f in frames] == times
    for frame, image in zip(frames, images, strict=True):
        assert isinstance(frame, Frame)
        assert frame.image.dtype == np.uint8 and frame.image.flags.c_contiguous
        assert np.array_equal(frame.image, image)


def test_variable_frame_rate_times_are_the_written_pts(vfr_clip):
    times = [f.time for f in iter_frames(vfr_clip)]
    assert len(times) == len(media.VFR_TIMES)
    np.testing.assert_allclose(times, media.VFR_TIMES, atol=1e-9)


def test_frames_without_pts_are_spaced_by_the_frame_rate(tmp_path):
    raw = media.write_av(tmp_path / "raw.h264", media.moving_frames(12))  # no timestamps at all
    info = probe(raw)
    times = [f.time for f in iter_frames(raw, info=info)]
    np.testing.assert_allclose(times, info.start + np.arange(12) / info.fps)


def test_rotation_is_applied(rotated_clip):
    info = probe(rotated_clip)
    assert info.rotation == media.ROTATION
    assert (info.width, info.height) == (media.SIZE[0], media.SIZE[1])  # 96 wide, 128 high
    frames = list(iter_frames(rotated_clip, info=info))
    assert len(frames) == media.FPS
    for frame in frames:
        # counter-clockwise by 90: the coded top-left corner is shown at the bottom-left
        assert marked_corner(frame.image) == "bottom-left"


@pytest.mark.parametrize(
    "rotation, shape, corner",
    [(0, (96, 128), "top-left"), (180, (96, 128), "bottom-right"), (270, (128, 96), "top-right")],
)
def test_other_rotations(tmp_path, rotation, shape, corner):
    clip = media.rotated_clip(tmp_path / "rotated.mp4", rotation)
    info = probe(clip)
    assert info.rotation == rotation and (info.height, info.width) == shape
    frame = next(iter_frames(clip, info=info))
    assert frame.image.shape == (*shape, 3) and marked_corner(frame.image) == corner


def marked_corner(image: np.ndarray) -> str:
    """Which corner holds the white square of media.rotated_clip (the others are dark)."""
    m = media.MARK - 4  # inside the mark, away from the codec's blurred edges
    gray = image.mean(axis=2)
    corners = {
        "top-left": gray[:m, :m],
        "top-right": gray[:m, -m:],
        "bottom-left": gray[-m:, :m],
        "bottom-right": gray[-m:, -m:],
    }
    white = [name for name, block in corners.items() if block.min() > 200]
    dark = [name for name, block in corners.items() if block.max() < 120]
    assert len(white) == 1 and len(dark) == 3, (white, dark)
    return white[0]


def test_iteration_is_lazy_and_can_stop_early(av_clip):
    frames = iter_frames(av_clip)
    first = next(frames)
    assert first.index == 0 and first.image.shape == (144, 176, 3)
    frames.close()


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", [probe, lambda p: list(iter_frames(p))])
def test_bad_files_raise_an_error_naming_the_file(bad_files, entry):
    for path in bad_files:
        with pytest.raises(AvemoError) as caught:
            entry(path)
        assert caught.value.path == str(path) and str(path) in str(caught.value)
        assert "\n" not in str(caught.value)


def test_each_bad_file_gets_its_reason(garbage_file, empty_file, no_video_file, tmp_path):
    reasons = {
        garbage_file: "not a readable media file",
        empty_file: "empty file",
        no_video_file: "no video stream",
        tmp_path / "missing.mp4": "no such file",
        tmp_path: "directory",
    }
    for path, reason in reasons.items():
        with pytest.raises(AvemoError, match=reason):
            probe(path)


def test_audio_of_bad_files_raises_but_audio_only_files_load(bad_files, no_video_file):
    for path in bad_files:
        if path == no_video_file:
            continue
        with pytest.raises(AvemoError, match=str(path)):
            load_audio(path)
        with pytest.raises(AvemoError, match=str(path)):
            AudioReader(path)
    audio = load_audio(no_video_file)
    assert not audio.missing and audio.duration == pytest.approx(1.0, abs=0.05)


def test_truncated_file_yields_its_frames_and_warns_once(truncated_clip, caplog):
    with caplog.at_level(logging.WARNING, logger="avemo.decode"):
        frames = list(iter_frames(truncated_clip))
    assert 0 < len(frames) < 3 * media.FPS
    assert np.all(np.diff([f.time for f in frames]) > 0)
    warnings = decode_warnings(caplog, "video")
    assert len(warnings) == 1 and str(truncated_clip) in warnings[0].getMessage()


def test_truncated_matroska_warns_once(tmp_path, caplog):
    whole = media.write_av(tmp_path / "whole.mkv", media.moving_frames(60))
    cut = media.cut(whole, tmp_path / "cut.mkv", 0.5)
    with caplog.at_level(logging.WARNING, logger="avemo.decode"):
        frames = list(iter_frames(cut))
    assert 0 < len(frames) < 60
    assert len(decode_warnings(caplog, "video")) == 1


def test_corrupt_packets_are_skipped_with_one_warning(tmp_path, caplog):
    clip = media.write_av(tmp_path / "clip.ts", media.moving_frames(90), video_codec="mpeg4")
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(1)
    for where in (0.3, 0.5, 0.7):  # three damaged spots
        offset = int(len(data) * where)
        data[offset : offset + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.ts"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="avemo.decode"):
        frames = list(iter_frames(damaged))
    assert 60 < len(frames) < 90
    # lost frames leave their numbers free: each frame keeps its number in the intact video
    indices = np.array([f.index for f in frames])
    assert np.all(np.diff(indices) >= 1) and indices[-1] < 90
    times = np.array([f.time for f in frames])
    assert np.allclose(times - times[0], indices / media.FPS, atol=1e-6)
    warnings = decode_warnings(caplog, "video")
    assert len(warnings) == 1 and "corrupt packet" in warnings[0].getMessage()
    assert f"{90 - len(frames) - (89 - indices[-1])} frame(s) missing" in warnings[0].getMessage()


def test_clean_files_do_not_warn(av_clip, gap_audio_clip, caplog):
    with caplog.at_level(logging.WARNING, logger="avemo.decode"):
        for path in (av_clip, gap_audio_clip):
            list(iter_frames(path))
            load_audio(path)
    assert not decode_warnings(caplog, "video") and not decode_warnings(caplog, "audio")


# --- audio ------------------------------------------------------------------------------------


def onset(samples: np.ndarray, rate: int, level: float) -> float:
    return np.flatnonzero(np.abs(samples) > level)[0] / rate


def test_late_audio_is_placed_on_the_video_clock(offset_audio_clip):
    audio = load_audio(offset_audio_clip)
    assert not audio.missing and audio.gaps == 0 and audio.sample_rate == SAMPLE_RATE
    assert audio.start == pytest.approx(media.AUDIO_OFFSET, abs=0.025)  # AAC priming before
    wave = audio.window(0.0, 2.0)
    assert len(wave) == 2 * SAMPLE_RATE
    # the sine reaches half its amplitude 1/12 period after it starts
    expected = media.AUDIO_OFFSET + 1 / (12 * media.TONE_HZ)
    assert onset(wave, SAMPLE_RATE, media.TONE_AMPLITUDE / 2) == pytest.approx(expected, abs=1e-3)
    assert np.abs(audio.window(0.0, media.AUDIO_OFFSET - 0.03)).max() == 0


def test_gap_becomes_silence_and_is_flagged(gap_audio_clip):
    audio = load_audio(gap_audio_clip)
    assert audio.start == 0.0 and audio.gaps == pytest.approx(media.GAP[1] - media.GAP[0])
    assert not audio.window(*media.GAP).any()
    written = media.speech_like(2.5)
    reference = resample_poly(written, SAMPLE_RATE // 300, media.AUDIO_RATE // 300)
    a, b = (round(t * SAMPLE_RATE) for t in media.GAP)
    for lo, hi in ((0, a), (b, len(reference))):  # the audio around the gap, sample for sample
        got = audio.window(lo / SAMPLE_RATE, hi / SAMPLE_RATE)
        want = reference[lo:hi][50:-50]  # away from the edges the resamplers treat differently
        # relative error ~1 % where aligned; a shift by one sample alone would give > 20 %
        for shift in (-1, 0, 1):
            error = rms(got[50 + shift : len(got) - 50 + shift] - want) / rms(want)
            assert error < 0.02 if shift == 0 else error > 0.1


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x))))


def test_missing_audio_is_silence_and_flagged(no_audio_clip):
    for audio in (load_audio(no_audio_clip), load_audio(no_audio_clip, info=probe(no_audio_clip))):
        assert audio.missing and audio.samples.size == 0 and audio.duration == 0
        assert audio.gaps == 0
        wave = audio.window(0.2, 0.7)
        assert wave.dtype == np.float32 and len(wave) == round(0.5 * SAMPLE_RATE)
        assert not wave.any()
    with AudioReader(no_audio_clip) as reader:
        assert reader.missing and not reader.window(0.0, 1.0).any()


def test_mono_is_the_mean_of_the_channels(tmp_path):
    rate = SAMPLE_RATE  # no resampling: the mix is compared sample for sample
    left, right = media.tone(1.0, rate, 440.0), media.tone(1.0, rate, 1000.0)
    data = np.stack([left * 1.2, right * 0.4])
    clip = media.write_av(
        tmp_path / "stereo.mkv",
        media.moving_frames(30),
        audio=[(0.0, data)],
        audio_rate=rate,
        audio_codec="pcm_s16le",
    )
    audio = load_audio(clip, rate)
    assert len(audio.samples) == rate
    np.testing.assert_allclose(audio.samples, data.mean(axis=0), atol=1e-4)


@pytest.mark.parametrize("rate", [16_000, SAMPLE_RATE, 48_000])
def test_resampled_to_the_requested_rate(offset_audio_clip, rate):
    audio = load_audio(offset_audio_clip, rate)
    assert audio.sample_rate == rate
    assert audio.duration == pytest.approx(1.5, abs=0.05)
    wave = audio.window(media.AUDIO_OFFSET + 0.1, media.AUDIO_OFFSET + 1.1)  # 1 s of the tone
    assert len(wave) == rate
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.argmax(spectrum) == pytest.approx(media.TONE_HZ, abs=1)  # 1 Hz bins
    assert np.abs(wave).max() == pytest.approx(media.TONE_AMPLITUDE, abs=0.03)


def test_window_length_and_zero_fill(gap_audio_clip):
    audio = load_audio(gap_audio_clip)
    for t0, t1 in [(-1.0, -0.5), (-0.25, 0.25), (0.1, 1.1667), (2.3, 3.0), (5.0, 6.0), (1.0, 1.0)]:
        wave = audio.window(t0, t1)
        assert wave.dtype == np.float32 and len(wave) == round((t1 - t0) * SAMPLE_RATE)
    assert not audio.window(-1.0, 0.0).any() and not audio.window(2.51, 3.0).any()
    assert audio.window(-0.25, 0.25)[round(0.25 * SAMPLE_RATE) :].any()


def clip_windows(times: np.ndarray, fps: float) -> list[tuple[float, float]]:
    """The audio windows of clips ending every 4 frames, as the pipeline asks for them."""
    period = 1 / fps
    return [(times[0] + (e - 31) * period, times[e] + period) for e in range(0, len(times), 4)]


@pytest.mark.parametrize(
    "clip", ["av_clip", "offset_audio_clip", "gap_audio_clip", "no_audio_clip"]
)
def test_streaming_reader_equals_load_audio(clip, request):
    path = request.getfixturevalue(clip)
    info = probe(path)
    times = np.array([f.time for f in iter_frames(path, info=info)])
    whole = load_audio(path)
    rng = np.random.default_rng(0)
    irregular, t = [], -0.5
    while t < info.duration + 0.5:  # forward steps, some calls reaching back within the margin
        back = rng.uniform(0, 0.8 * READER_MARGIN) if rng.random() < 0.3 else 0.0
        irregular.append((t - back, t - back + rng.uniform(0, 0.4)))
        t += rng.uniform(0.02, 0.3)
    for calls in (clip_windows(times, info.fps), irregular):
        with AudioReader(path) as reader:
            assert (reader.start, reader.missing) == (whole.start, whole.missing)
            for t0, t1 in calls:
                assert np.array_equal(reader.window(t0, t1), whole.window(t0, t1)), (t0, t1)
            assert reader.gaps == whole.gaps


def test_reader_refuses_to_go_back_beyond_its_margin(av_clip):
    with AudioReader(av_clip) as reader:
        reader.window(3.0, 3.5)
        reader.window(3.0 - 0.9 * READER_MARGIN, 3.0)
        with pytest.raises(ValueError, match="go back"):
            reader.window(3.0 - 1.5 * READER_MARGIN, 3.0)


def test_reader_memory_stays_bounded(av_clip):
    with AudioReader(av_clip) as reader:
        for t0 in np.arange(0.0, 4.0, 0.1):
            reader.window(t0, t0 + 0.1)
            held = len(reader._buffer) / SAMPLE_RATE
            assert held < READER_MARGIN + 0.1 + 0.1  # margin + window + one decoded chunk
