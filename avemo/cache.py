"""The feature cache format: frozen backbones' features of every clip of a dataset (SPEC 2-3, 7).

Fusion heads train on backbone features, not pixels, so ``avemo extract`` computes them once.
A cache folder holds one ``<video>.npz`` per video (uncompressed, so that training memory-maps
it instead of loading it) with

- ``audio``  float32 ``[N, Da]``: audio backbone feature of each clip,
- ``visual`` float32 ``[N, Dv]``: visual backbone feature of each clip,
- ``frame``  int64 ``[N]``: the 1-based end frame of each clip (dense extraction: ``i + 1``),
- ``face``   bool ``[N]``: whether the clip's 32-frame window holds at least one face crop,
- ``info``   a JSON string: source video, crops folder, frame count, frame rate, audio present,

and one ``cache.json`` describing the backbones (builder, arguments, checkpoint file and sha256),
their preprocessing and the clip and spectrogram settings. Every video's file is written to a
temporary name and renamed, so an interrupted run leaves whole files only and a rerun skips them.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avemo.errors import InputError
from avemo.files import atomic_path

CACHE_FORMAT = 1  # version of cache.json and of the per-video files
CACHE_JSON = "cache.json"
FEATURE_SUFFIX = ".npz"
ARRAYS = ("audio", "visual", "frame", "face")


@dataclass
class Features:
    """The cached features of one video (arrays may be read-only memory maps)."""

    name: str
    audio: np.ndarray  # N x Da float32
    visual: np.ndarray  # N x Dv float32
    frame: np.ndarray  # N int64, 1-based end frame of each clip
    face: np.ndarray  # N bool, the clip's window holds a face
    info: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        """Frames of the video covered by the cache (the last end frame)."""
        return int(self.frame.max()) if len(self.frame) else 0


def write_features(path: str | os.PathLike, features: Features) -> None:
    """Write one video's features atomically as an uncompressed ``.npz``."""
    n = len(features.frame)
    if features.audio.shape[0] != n or features.visual.shape[0] != n or len(features.face) != n:
        raise ValueError("audio, visual, frame and face must have one row per clip")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            audio=np.ascontiguousarray(features.audio, dtype=np.float32),
            visual=np.ascontiguousarray(features.visual, dtype=np.float32),
            frame=np.asarray(features.frame, dtype=np.int64),
            face=np.asarray(features.face, dtype=bool),
            info=np.array(json.dumps(features.info, sort_keys=True)),
        )


def _member_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz``; stored (uncompressed) numeric members are memory-mapped."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as archive, open(path, "rb") as handle:
        for member in archive.infolist():
            key = member.filename.removesuffix(".npy")
            if member.compress_type != zipfile.ZIP_STORED:
                with archive.open(member) as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
                continue
            # local file header: 30 bytes, then the name and the extra field, then the data
            handle.seek(member.header_offset)
            local = handle.read(30)
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            handle.seek(member.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
            if dtype.hasobject:
                raise ValueError(f"member {key} holds Python objects")
            if dtype.kind == "U" or int(np.prod(shape)) == 0:
                handle.seek(member.header_offset + 30 + name_length + extra_length)
                arrays[key] = np.lib.format.read_array(handle, allow_pickle=False)
            else:
                order = "F" if fortran else "C"
                arrays[key] = np.memmap(
                    path, dtype=dtype, mode="r", offset=handle.tell(), shape=shape, order=order
                )
    return arrays


def read_features(path: str | os.PathLike, name: str | None = None) -> Features:
    """Open one video's cached features (memory-mapped); clear errors for a bad file."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such feature file", path)
    try:
        arrays = _member_arrays(path)
    except (zipfile.BadZipFile, ValueError, OSError, struct.error) as error:
        raise InputError(
            f"not a readable feature file ({error}); delete it and rerun", path
        ) from None
    missing = [key for key in ARRAYS if key not in arrays]
    if missing:
        raise InputError(f"not an avemo feature file (missing {', '.join(missing)})", path)
    n = len(arrays["frame"])
    for key in ("audio", "visual"):
        if arrays[key].ndim != 2 or arrays[key].shape[0] != n:
            raise InputError(f"{key} has shape {arrays[key].shape}, expected {n} rows", path)
    info = json.loads(str(arrays["info"])) if "info" in arrays else {}
    return Features(
        name=name or path.stem,
        audio=arrays["audio"],
        visual=arrays["visual"],
        frame=np.asarray(arrays["frame"], dtype=np.int64),
        face=np.asarray(arrays["face"], dtype=bool),
        info=info,
    )


def read_cache_info(cache: str | os.PathLike) -> dict:
    """The ``cache.json`` of a feature cache folder."""
    path = Path(cache) / CACHE_JSON
    if not path.is_file():
        raise InputError(f"not a feature cache (no {CACHE_JSON}; run `avemo extract`)", cache)
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"corrupt cache description ({error})", path) from None
    if info.get("format") != CACHE_FORMAT:
        raise InputError(f"cache format {info.get('format')} is not supported", path)
    return info


def cached_videos(cache: str | os.PathLike) -> dict[str, Path]:
    """Video name -> feature file, for every ``.npz`` under ``cache`` (name: relative path)."""
    cache = Path(cache)
    found = {}
    for path in sorted(cache.rglob("*" + FEATURE_SUFFIX)):
        if path.name.startswith("."):
            continue  # a temporary file of an interrupted write
        found[path.relative_to(cache).with_suffix("").as_posix()] = path
    return found
