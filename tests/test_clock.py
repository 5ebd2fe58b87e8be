"""Time runs forward: decoding-order timestamps (AVI with B-frames) come out in presentation
order, and a clock that jumps back (MPEG-TS files concatenated) continues, for the frames and for
the audio read on their clock."""

from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace

import av
import media
import numpy as np
import pytest

from avemo.decode import (
    CLOCK_RESET,
    REORDER_DEPTH,
    AudioReader,
    _presentation_times,
    iter_frames,
    load_audio,
    probe,
)

PERIOD = 1 / media.FPS


def raw_times(path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]


# --- AVI with B-frames ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "codec, options",
    [
        ("libx264", {"bf": "3"}),  # b-pyramid: the stored times go 1, 3, 2, 6, 5, 7, 4 ...
        ("libx264", {"bf": "2", "b_strategy": "0"}),  # every run of two B-frames
        ("libx264", {"bf": "8", "b_strategy": "0"}),  # runs as long as REORDER_DEPTH
        ("mpeg4", {"bf": "2"}),  # MPEG-4 part 2 in AVI: already in order, must stay so
    ],
)
def test_avi_b_frames_get_their_presentation_times(tmp_path, codec, options):
    path = media.bframes_avi(tmp_path / "b.avi", codec, options)
    if codec == "libx264":  # the file really is hostile: FFmpeg's own timestamps go back
        assert (np.diff(raw_times(path)) < 0).any()
    frames = list(iter_frames(path))
    assert len(frames) == 2 * media.FPS
    times = np.array([f.time for f in frames])
    # the images come in presentation order and the k-th is at start + k periods
    width = media.SIZE[1]
    positions = np.array([media.bar_position(f.image) for f in frames])
    assert np.abs(positions - 3 * np.arange(60) % width).max() <= 2  # lossy coding blurs by 1 px
    assert np.all(np.diff(times) > 0)
    expected = times[0] + np.arange(len(frames)) * PERIOD
    assert np.abs(times - expected).max() < 1e-6
    assert 0 <= times[0] <= PERIOD + 1e-9  # AVI shifts its clock by the decoder's delay at most
    assert probe(path).start == near(times[0])


# --- the clock rule on synthetic timestamp sequences -------------------------------------------


def fake_frames(stamps, time_base=Fraction(1, 90000)):
    """Stand-ins for decoded frames: ``pts`` on a 90 kHz clock (None: none) and an identity."""
    return [
        SimpleNamespace(pts=None if s is None else round(s * 90000), time_base=time_base, n=i)
        for i, s in enumerate(stamps)
    ]


def near(expected):
    return pytest.approx(np.asarray(expected, dtype=float), abs=1e-4)


def clock(stamps, start=0.0, period=PERIOD):
    out = list(_presentation_times(iter(fake_frames(stamps)), start, period))
    assert [f.n for f, _ in out] == list(range(len(stamps)))  # frames keep their order
    return np.array([t for _, t in out])


def grid(n, start=0.0, period=PERIOD):
    return start + np.arange(n) * period


def test_correct_timestamps_are_kept():
    stamps = grid(50, 0.5)
    assert clock(stamps) == near(stamps)


def test_decoding_order_runs_are_sorted():
    true = grid(40)
    order = [0, 3, 1, 2, 6, 4, 5, 9, 7, 8]  # P before its B-frames, in blocks of 3
    stored = np.concatenate([true[i : i + 10][np.argsort(order)] for i in range(0, 40, 10)])
    assert (np.diff(stored) < 0).any()
    assert clock(stored) == near(true)


def test_runs_longer_than_the_reorder_depth_are_still_monotonic():
    true = grid(60)
    stored = true.copy()
    stored[1 : REORDER_DEPTH + 4] = stored[1 : REORDER_DEPTH + 4][::-1]  # one very long run
    times = clock(stored)
    assert np.all(np.diff(times) > 0)
    assert np.abs(times - true).max() <= 4 * PERIOD + 1e-9  # clamped, not lost
    assert times[-20:] == near(true[-20:] + (times[-1] - true[-1]))


def test_duplicate_and_missing_timestamps_advance_by_one_period():
    times = clock([0.0, 0.0, 0.0, None, None, 0.2])
    assert times == near([0, PERIOD, 2 * PERIOD, 3 * PERIOD, 4 * PERIOD, 0.2])
    assert clock([None, None, None], start=1.0) == near(grid(3, 1.0))


@pytest.mark.parametrize("back_to", [0.0, 1.0, -5.0, 1000.0 - 2 * CLOCK_RESET])
def test_a_clock_reset_continues_one_period_later(back_to):
    first = grid(45, 1000.0)  # 1.5 s
    second = grid(30, back_to)
    times = clock(np.concatenate([first, second]))
    assert times[:45] == near(first)
    assert times[45:] == near(first[-1] + PERIOD + (second - back_to))


def test_repeated_resets_and_a_reset_inside_reordered_frames():
    segment = grid(40)
    order = [0, 2, 1, 3, 5, 4, 6, 8, 7, 9]
    shuffled = np.concatenate([segment[i : i + 10][np.argsort(order)] for i in range(0, 40, 10)])
    times = clock(np.concatenate([shuffled, shuffled, segment]))
    assert np.all(np.diff(times) > 0)
    assert times == near(grid(120))


def test_a_forward_jump_stays_a_gap():
    stamps = np.concatenate([grid(10), grid(10, 100.0)])
    assert clock(stamps) == near(stamps)


# --- concatenated MPEG-TS: video, audio, annotate ---------------------------------------------


@pytest.fixture(scope="module")
def ts_segment(tmp_path_factory):
    """2 s of moving frames with a speech-like track, MPEG-TS."""
    folder = tmp_path_factory.mktemp("ts")
    audio = [(0.0, media.speech_like(2.0)[None])]
    return media.write_av(folder / "one.ts", media.moving_frames(2 * media.FPS), audio=audio)


@pytest.mark.parametrize("copies", [2, 3])
def test_concatenated_ts_times_run_forward(ts_segment, tmp_path, copies):
    path = media.concatenated(ts_segment, tmp_path / "cat.ts", copies)
    assert (np.diff(raw_times(path)) < -1.0).sum() == copies - 1  # the hostile part
    times = np.array([f.time for f in iter_frames(path)])
    assert np.all(np.diff(times) > 0)
    steps = np.diff(times)
    # one period everywhere; at a seam a frame damaged by the cut may be missing (two periods)
    assert np.all(np.isclose(steps, PERIOD, atol=1e-3) | np.isclose(steps, 2 * PERIOD, atol=1e-3))
    assert times[-1] - times[0] == pytest.approx(copies * 2.0 - PERIOD, abs=0.05)


def lag(reference: np.ndarray, signal: np.ndarray, rate: int) -> float:
    """Seconds by which ``reference`` is found later in ``signal`` than ``signal``'s start."""
    from scipy.signal import correlate

    scores = correlate(signal, reference, mode="valid", method="fft")
    return int(np.argmax(scores)) / rate


@pytest.mark.parametrize("copies", [2, 3])
def test_concatenated_ts_audio_follows_the_same_clock(ts_segment, tmp_path, copies):
    path = media.concatenated(ts_segment, tmp_path / "cat.ts", copies)
    whole = load_audio(path)
    rate = whole.sample_rate
    assert whole.duration == pytest.approx(copies * 2.0, abs=0.1)
    assert whole.gaps < 0.05
    start = probe(path).start
    reference = whole.window(start + 0.2, start + 1.2)
    with AudioReader(path) as reader:  # windows in clip order, as pipelines read them
        for k in range(copies):
            t0 = start + 2.0 * k  # where the video's clock puts copy k (one period per frame)
            streamed = reader.window(t0, t0 + 1.5)
            assert streamed == pytest.approx(whole.window(t0, t0 + 1.5), abs=1e-6)
            # copy k's sound is where its frames are: both streams of a copy are shifted by the
            # same offset (the video's), so nothing drifts from copy to copy
            shift = lag(reference, streamed, rate) - 0.2
            assert abs(shift) <= 0.002


# --- frame numbers: a lost frame leaves its number free -------------------------------------------


def numbered(times, fps=media.FPS):
    from avemo.decode import _FrameNumbers

    numbers = _FrameNumbers(fps)
    return [numbers(t) for t in times], numbers.missing


def test_numbers_follow_the_grid_and_leave_holes_free():
    kept = [k for k in range(60) if k not in (10, 11, 40)]
    assert numbered(5.0 + np.array(kept) / 30) == (kept, 3)


def test_numbers_tolerate_millisecond_timestamps_of_fractional_rates():
    times = np.round(np.arange(300) * 1001 / 30000, 3)  # 29.97 fps on a ms clock (Matroska)
    assert numbered(times, 30000 / 1001) == (list(range(300)), 0)


@pytest.mark.parametrize(
    "times",
    [
        media.VFR_TIMES,  # variable frame rate: counted from the first frame off the grid
        np.arange(400) / 29.97,  # declared 30 fps, really 29.97: drifts off the grid, counted
        np.r_[np.arange(10) / 30, 100.0 + np.arange(10) / 30],  # a clock jump, not lost frames
        np.r_[np.arange(10) / 30, np.arange(10) / 30 + 9 / 30],  # a repeated time: counted
        np.arange(50) / 15,  # declared 30 fps, really 15: not a lost frame every other frame
        np.arange(50) / 10,  # declared 30 fps, really 10
    ],
)
def test_numbers_count_when_times_leave_the_grid(times):
    numbers, missing = numbered(times)
    assert numbers == list(range(len(times))) and missing == 0


def test_numbers_on_the_grid_then_off_it_never_repeat_or_go_back():
    times = np.r_[np.arange(20) / 30, 21 / 30 + 0.011 * np.arange(1, 30)]  # a hole, then VFR
    numbers, missing = numbered(times)
    assert numbers[:20] == list(range(20)) and missing == 0
    assert np.all(np.diff(numbers) == 1)


def damaged_intra(path, frames, spots=(0.3, 0.5, 0.7)):
    """Intra-only MPEG-4 in MPEG-TS with ``spots`` of its bytes overwritten: the frames hit are
    lost, and every other frame decodes exactly (no frame depends on another)."""
    clip = media.write_av(
        path.with_name("intact.ts"), frames, video_codec="mpeg4", encoder={"g": "1"}
    )
    data = bytearray(clip.read_bytes())
    rng = np.random.default_rng(1)
    for where in spots:
        offset = int(len(data) * where)
        data[offset : offset + 300] = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def circular(a, b, period):
    d = np.abs(np.asarray(a) - np.asarray(b)) % period
    return np.minimum(d, period - d)


@pytest.mark.parametrize("spots", [(0.3,), (0.3, 0.5, 0.7), (0.1, 0.12, 0.14, 0.9)])
def test_lost_frames_keep_every_later_frame_at_its_number(tmp_path, spots):
    path = damaged_intra(tmp_path / "damaged.ts", list(media.moving_frames(90)), spots)
    frames = list(iter_frames(path))
    indices = np.array([f.index for f in frames])
    assert len(frames) < 90 and np.all(np.diff(indices) >= 1)
    assert (np.diff(indices) > 1).any()  # holes were left
    positions = [media.bar_position(f.image) for f in frames]
    width = media.SIZE[1]
    assert circular(positions, 3 * indices % width, width).max() <= 2  # image k is frame k
    times = np.array([f.time for f in frames])
    assert np.allclose(times - times[0], indices / media.FPS, atol=1e-6)


def test_faces_and_annotate_keep_rows_for_lost_frames(tmp_path, carphone):
    """Faces found in the damaged file are those of the intact file at the same numbers."""
    from avemo.annotate import annotate
    from avemo.face.detect import build_detector
    from avemo.face.scan import detect_tracks, save_crops
    from avemo.faces import faces as scan_faces

    path = damaged_intra(tmp_path / "talk.ts", media.carphone_frames(carphone, 90))
    intact = scan_faces(tmp_path / "intact.ts", device="cpu")
    decoded = np.array([f.index for f in iter_frames(path)])
    lost = sorted(set(range(decoded[-1] + 1)) - set(decoded))
    assert lost
    table = scan_faces(path, device="cpu")
    assert table["frame"].tolist() == list(range(decoded[-1] + 1))
    steps = np.diff(table["timestamp"])
    assert np.abs(steps - 1 / media.FPS).max() < 2e-6
    assert (table.loc[lost, "success"] == 0).all() and table.loc[lost, "face_x"].isna().all()
    same = table.loc[decoded, "success"].to_numpy() == intact.loc[decoded, "success"].to_numpy()
    assert same.mean() > 0.9
    both = decoded[(table.loc[decoded, "success"] == 1) & (intact.loc[decoded, "success"] == 1)]
    boxes = ["face_x", "face_y", "face_width", "face_height"]
    assert len(both) > 30
    assert np.abs(table.loc[both, boxes].to_numpy() - intact.loc[both, boxes].to_numpy()).max() < 1
    (track,) = detect_tracks(path, build_detector()).tracks()
    written = save_crops(path, track, tmp_path / "crops")
    names = {p.name for p in (tmp_path / "crops").iterdir()}
    assert written == len(names) > 30 and not {f"{k + 1:05d}.jpg" for k in lost} & names
    assert names == {f"{k + 1:05d}.jpg" for k in np.flatnonzero(track.present)}
    values = annotate(path, stride=1, detect_every=1)  # the default expression model
    assert values["frame"].tolist() == list(range(decoded[-1] + 1))
    assert values.loc[lost, "valence_raw"].isna().all()
    assert (values["valence_raw"].notna() == (values["success"] == 1)).all()


def test_audio_only_streams_that_restart_follow_on(tmp_path):
    """Without video there is no video offset: each restart follows the previous audio on."""
    path = tmp_path / "one.ts"
    with av.open(str(path), "w") as out:
        sound = out.add_stream("aac", rate=media.AUDIO_RATE, layout="mono")
        sound.codec_context.bit_rate = media.AAC_BIT_RATE
        for frame in media._audio_frames(
            sound, media.speech_like(1.5)[None], 0.0, media.AUDIO_RATE
        ):
            out.mux(sound.encode(frame))
        out.mux(sound.encode())
    cat = media.concatenated(path, tmp_path / "three.ts", 3)
    single, whole = load_audio(path), load_audio(cat)
    assert whole.duration == pytest.approx(3 * single.duration, abs=0.01) and whole.gaps < 0.01
    reference = whole.window(whole.start + 0.2, whole.start + 1.0)
    with AudioReader(cat) as reader:
        for k in range(3):
            t0 = whole.start + k * single.duration
            shift = lag(reference, reader.window(t0, t0 + 1.4), whole.sample_rate) - 0.2
            assert abs(shift) <= 0.002


@pytest.mark.parametrize("video_late_by", [0, 3, 1000])
def test_audio_waits_for_the_video_offset_of_a_segment(monkeypatch, video_late_by):
    """The audio of a new segment may come before the video packets that tell its offset: it is
    held (up to READ_AHEAD s) until they come; if they never do, it follows the audio on."""
    from avemo import decode

    frame_s = 1024 / 48000
    stamps = [k * frame_s for k in range(50)] * 2  # one restart after 50 frames
    clock = SimpleNamespace(offsets=[0.0])

    def decoded(container, stream, damage, clock_):
        for i, stamp in enumerate(stamps):
            if i == 50 + video_late_by:  # the video packet that restarts the clock
                clock.offsets.append(7.0)
            yield SimpleNamespace(
                pts=round(stamp * 48000),
                time_base=Fraction(1, 48000),
                samples=1024,
                sample_rate=48000,
            )

    monkeypatch.setattr(decode, "_decoded", decoded)
    monkeypatch.setattr(decode, "_video_clock", lambda container: clock)
    chunks = object.__new__(decode._MonoChunks)
    chunks.container = chunks.stream = chunks.damage = None
    times = [t for _, t in chunks._timed()]
    assert times[:50] == pytest.approx(stamps[:50])
    if video_late_by < decode.READ_AHEAD / frame_s:
        assert times[50:] == pytest.approx(np.array(stamps[50:]) + 7.0)
    else:  # no matching video reset within READ_AHEAD: the audio follows on
        assert times[50:] == pytest.approx(np.array(stamps[50:]) + 50 * frame_s)
