"""Readers for per-frame valence/arousal files: labels and predictions (SPEC 8).

Every reader returns a *frame table*: a DataFrame indexed by ``frame`` (0-based int, sorted,
unique) with float columns ``valence`` and ``arousal``, NaN where a frame has no valid value.
The value -5 (Aff-Wild2's mark for a frame without a valid label) becomes NaN in every format.
The format is recognised from the header line, not the file name:

- ``affwild2``: Aff-Wild2 label file, header ``valence,arousal``, then one line per frame (line
  i+1 is frame i, 1-based, so frame i-1 here);
- ``challenge``: ABAW submission file, header ``image_location,valence,arousal``, rows
  ``<video>/00001.jpg,v,a`` (the number is the 1-based frame);
- ``avemo``: an ``avemo annotate`` CSV (``frame,timestamp,face_id,success,...,valence,
  arousal,face_x,face_y,face_width,face_height,...``; 0-based frames, ``face_id`` -1 where there
  is no face). A file with one face per frame is read whole; with several faces per frame
  (``--max-faces`` > 1) one face is chosen by ``face_id``, or by ``side`` for Aff-Wild2's
  ``<base>_left``/``<base>_right`` videos: of the two face tracks with the most predicted frames,
  *left* is the one whose median box centre ``face_x + face_width / 2`` is smaller (further
  left in the image) and *right* the other;
- ``generic``: any CSV with ``frame`` (0-based), ``valence`` and ``arousal`` columns.

Column names are matched case-insensitively; avemo and generic CSVs may name other value columns
(``columns=("valence_raw", "arousal_raw")``, e.g. unsmoothed output).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from avemo.errors import InputError

INVALID_LABEL = -5.0  # Aff-Wild2: a frame without a valid valence/arousal label
VALUES = ("valence", "arousal")
RAW_VALUES = ("valence_raw", "arousal_raw")  # avemo annotate's values before smoothing
FORMATS = ("affwild2", "challenge", "avemo", "generic")
SUFFIXES = (".csv", ".txt")  # files considered when a folder is searched
SIDES = ("left", "right")
_SIDE = re.compile(r"^(?P<base>.+)_(?P<side>left|right)$")
_IMAGE_NUMBER = re.compile(r"(\d+)\.[A-Za-z0-9]+$")
MAX_FRAME = 2**53  # largest frame number accepted (float64 holds every integer up to it)


def _header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig") as handle:
            line = handle.readline()
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except OSError as error:
        raise InputError(f"cannot read: {error.strerror or error}", path) from None
    if not line.strip():
        raise InputError("empty file (expected a header line)", path)
    return [name.strip().lower() for name in line.split(",")]


def detect_format(path: str | os.PathLike) -> str:
    """Which of ``FORMATS`` a file is, from its header line; InputError when none."""
    path = Path(path)
    names = _header(path)
    if names == list(VALUES):
        return "affwild2"
    if names[0] == "image_location":
        return "challenge"
    if "frame" in names and "face_id" in names:
        return "avemo"
    if "frame" in names:
        return "generic"
    shown = ",".join(names)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise InputError(
        f"unrecognised header {shown!r}: expected an Aff-Wild2 label file (valence,arousal), a "
        "challenge file (image_location,valence,arousal), an avemo CSV or a CSV with frame, "
        "valence and arousal columns",
        path,
    )


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """The CSV with lower-cased column names; InputError for anything malformed."""
    try:
        data = pd.read_csv(path, skipinitialspace=True, encoding="utf-8-sig", low_memory=False)
    except UnicodeDecodeError:
        raise InputError("not a text file", path) from None
    except pd.errors.EmptyDataError:
        raise InputError("empty file", path) from None
    except pd.errors.ParserError as error:
        lines = str(error).strip().splitlines()
        raise InputError(f"malformed CSV: {lines[-1] if lines else error}", path) from None
    if not isinstance(data.index, pd.RangeIndex):  # pandas took the surplus as an index
        raise InputError("malformed CSV: lines with more values than header columns", path)
    data.columns = [str(name).strip().lower() for name in data.columns]
    missing = [name for name in required if name not in data.columns]
    if missing:
        raise InputError(f"no {', '.join(missing)} column(s) (has {', '.join(data.columns)})", path)
    return data


def _numbers(data: pd.DataFrame, column: str, path: Path, *, values: bool = True) -> np.ndarray:
    """A column as float64 (-5 as NaN for ``values``); InputError names a line with no number or
    an infinite one (NaN, an empty cell, stays: a frame without a value)."""
    numbers = pd.to_numeric(data[column], errors="coerce")
    bad = numbers.isna() & data[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            f"line {row + 2}: {column} is not a number: {str(data[column].iloc[row])!r}", path
        )
    numbers = numbers.to_numpy(dtype=np.float64, copy=True)
    infinite = np.isinf(numbers)
    if infinite.any():
        row = int(np.flatnonzero(infinite)[0])
        raise InputError(
            f"line {row + 2}: {column} is not a finite number: {str(data[column].iloc[row])!r}",
            path,
        )
    if values:
        numbers[numbers == INVALID_LABEL] = np.nan
    return numbers


def _frames(values: np.ndarray, column: str, path: Path) -> np.ndarray:
    """Frame numbers as int64; InputError for missing, fractional, negative or absurdly large
    ones (beyond MAX_FRAME: not exact in float64, and no video has that many frames)."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.round(values)) | (values < 0)
        bad |= values > MAX_FRAME
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"line {row + 2}: bad {column} number {values[row]!r}", path)
    return values.astype(np.int64)


def _table(frames: np.ndarray, values: np.ndarray, path: Path) -> pd.DataFrame:
    """A frame table; InputError when a frame appears twice."""
    table = pd.DataFrame(values, columns=list(VALUES), index=pd.Index(frames, name="frame"))
    duplicated = table.index.duplicated()
    if duplicated.any():
        raise InputError(f"frame {int(table.index[duplicated][0])} appears twice", path)
    return table.sort_index()


def read_affwild2(path: str | os.PathLike) -> pd.DataFrame:
    """An Aff-Wild2 label file (``valence,arousal``, one line per frame, -5 invalid)."""
    path = Path(path)
    data = _read_csv(path, VALUES)
    values = np.column_stack([_numbers(data, name, path) for name in VALUES])
    return _table(np.arange(len(data), dtype=np.int64), values, path)


def read_challenge(path: str | os.PathLike) -> pd.DataFrame:
    """A challenge submission file (``image_location,valence,arousal``; 1-based image numbers)."""
    path = Path(path)
    data = _read_csv(path, ("image_location", *VALUES))
    locations = data["image_location"].astype(str).str.strip()
    numbers = locations.str.extract(_IMAGE_NUMBER, expand=False)
    if numbers.isna().any():
        row = int(np.flatnonzero(numbers.isna().to_numpy())[0])
        raise InputError(
            f"line {row + 2}: image_location {locations.iloc[row]!r} is not <video>/NNNNN.jpg", path
        )
    videos = sorted(set(locations.str.rpartition("/")[0]))
    if len(videos) > 1:
        raise InputError(f"rows of several videos ({', '.join(videos[:3])}): one per file", path)
    frames = _frames(numbers.astype(np.float64).to_numpy(), "image", path) - 1
    if (frames < 0).any():
        raise InputError("image numbers are 1-based: found 0", path)
    values = np.column_stack([_numbers(data, name, path) for name in VALUES])
    return _table(frames, values, path)


def read_generic(path: str | os.PathLike, *, columns: Sequence[str] = VALUES) -> pd.DataFrame:
    """A CSV with a 0-based ``frame`` column and valence/arousal columns (``columns``)."""
    path = Path(path)
    columns = [name.lower() for name in columns]
    data = _read_csv(path, ("frame", *columns))
    frames = _frames(_numbers(data, "frame", path, values=False), "frame", path)
    values = np.column_stack([_numbers(data, name, path) for name in columns])
    return _table(frames, values, path)


def left_right(faces: pd.DataFrame, columns: Sequence[str] = VALUES) -> tuple[int, int]:
    """The face ids of the left and the right person of a two-person video (Aff-Wild2's
    ``_left`` / ``_right``): the two tracks with the most frames that have values in
    ``columns``, ordered by the median horizontal centre of their boxes on those frames.

    The one rule for both directions: ``avemo annotate --format abaw --max-faces 2`` writes the
    pair with it, and ``avemo evaluate`` reads an annotate CSV against ``_left``/``_right``
    labels with it. ``faces`` needs ``face_id``, ``face_x``, ``face_width`` and ``columns``.
    """
    columns = list(columns)
    for name in ("face_x", "face_width", *columns):
        if name not in faces.columns:
            raise InputError(f"no {name} column: cannot tell the left and right face")
    faces = faces[faces["face_id"] >= 0]
    valued = faces[~np.isnan(faces[columns].to_numpy(np.float64)).any(axis=1)]
    counts = valued["face_id"].value_counts(sort=False)
    counts = counts.sort_index(kind="stable").sort_values(ascending=False, kind="stable")
    if len(counts) < 2:
        raise InputError(
            f"{len(counts)} face track(s) with values: a two-person video's left and right faces "
            "need two (annotate with --max-faces 2)"
        )
    ids = counts.index[:2].tolist()  # the two tracks with the most frames with values
    tracks = valued[valued["face_id"].isin(ids)]
    centre = (tracks["face_x"] + tracks["face_width"] / 2).groupby(tracks["face_id"]).median()
    left, right = centre.sort_values(kind="stable").index.tolist()
    return int(left), int(right)


def _side_face(faces: pd.DataFrame, side: str, columns: list[str], path: Path) -> int:
    """The face id on the ``side`` of the image (:func:`left_right`)."""
    try:
        left, right = left_right(faces, columns)
    except InputError as error:
        raise InputError(f"the {side} face: {error.message}", path) from None
    return left if side == "left" else right


def read_avemo(
    path: str | os.PathLike,
    *,
    face_id: int | None = None,
    side: str | None = None,
    columns: Sequence[str] = VALUES,
) -> pd.DataFrame:
    """An ``avemo annotate`` CSV; one face chosen as the module docstring says.

    The table covers every frame in the file; frames where the chosen face has no row, or no
    value, are NaN. The chosen id is in ``table.attrs["face_id"]`` (None: the whole file).
    """
    path = Path(path)
    columns = [name.lower() for name in columns]
    if side is not None and side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    data = _read_csv(path, ("frame", "face_id", *columns))
    data["frame"] = _frames(_numbers(data, "frame", path, values=False), "frame", path)
    ids = _numbers(data, "face_id", path, values=False)
    data["face_id"] = np.nan_to_num(ids, nan=-1).astype(np.int64)
    for name in columns:
        data[name] = _numbers(data, name, path)
    for name in ("face_x", "face_width"):
        if name in data.columns:
            data[name] = _numbers(data, name, path, values=False)
    frames = np.unique(data["frame"].to_numpy())
    faces = data[data["face_id"] >= 0]
    chosen: int | None = None
    if side is not None:
        chosen = _side_face(faces, side, columns, path)
    elif face_id is not None:
        present = sorted(set(faces["face_id"].tolist()))
        if face_id not in present:
            raise InputError(f"no face id {face_id} (ids: {', '.join(map(str, present))})", path)
        chosen = int(face_id)
    elif faces["frame"].duplicated().any():
        present = ", ".join(map(str, sorted(set(faces["face_id"].tolist()))))
        raise InputError(
            f"several faces per frame (ids {present}): choose one with --face-id", path
        )
    rows = faces if chosen is None else faces[faces["face_id"] == chosen]
    if rows["frame"].duplicated().any():
        frame = int(rows["frame"][rows["frame"].duplicated()].iloc[0])
        raise InputError(f"face {chosen} appears twice in frame {frame}", path)
    values = rows.set_index("frame")[columns].reindex(frames).to_numpy(np.float64, copy=True)
    table = _table(frames, values, path)
    table.attrs["face_id"] = chosen
    return table


def read_table(
    path: str | os.PathLike,
    *,
    face_id: int | None = None,
    side: str | None = None,
    columns: Sequence[str] | None = None,
    raw: bool = False,
) -> pd.DataFrame:
    """Read any supported file (format from its header) into a frame table.

    ``face_id`` and ``side`` apply to avemo CSVs (``side`` only works there: the others have no
    face boxes); ``columns`` to avemo and generic CSVs. ``raw`` reads an avemo CSV's unsmoothed
    ``valence_raw, arousal_raw`` when it has them and no ``columns`` are given (for callers that
    smooth themselves: smoothing annotate's smoothed columns again would filter twice).
    """
    path = Path(path)
    kind = detect_format(path)
    if side is not None and kind != "avemo":
        raise InputError(
            f"a {kind} file has no face boxes, so the {side} face of a two-person video cannot be "
            "chosen from it: name it <video>_left/_right or use an avemo CSV",
            path,
        )
    if kind == "affwild2":
        table = read_affwild2(path)
    elif kind == "challenge":
        table = read_challenge(path)
    elif kind == "avemo":
        if columns is None and raw and set(RAW_VALUES) <= set(_header(path)):
            columns = RAW_VALUES
        return read_avemo(path, face_id=face_id, side=side, columns=columns or VALUES)
    else:
        table = read_generic(path, columns=columns or VALUES)
    table.attrs["face_id"] = None
    return table


def as_table(data: pd.DataFrame, name: str = "table") -> pd.DataFrame:
    """An in-memory DataFrame (``frame`` column or index; valence, arousal) as a frame table."""
    if "frame" in data.columns:
        data = data.set_index("frame")
    missing = [column for column in VALUES if column not in data.columns]
    if missing:
        raise InputError(f"no {', '.join(missing)} column(s)", name)
    frames = np.asarray(data.index, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(frames) | (frames != np.round(frames)) | (frames < 0)
    if bad.any() or (frames > MAX_FRAME).any():
        raise InputError("frame numbers must be non-negative integers", name)
    values = data[list(VALUES)].to_numpy(dtype=np.float64, copy=True)
    if np.isinf(values).any():
        raise InputError("valence/arousal values must be finite numbers (or NaN)", name)
    values[values == INVALID_LABEL] = np.nan
    table = _table(frames.astype(np.int64), values, Path(name))
    table.attrs["face_id"] = data.attrs.get("face_id")
    return table


def find_files(path: str | os.PathLike) -> dict[str, Path]:
    """Video name (file stem) -> file, for one file or every readable file under a folder.

    Folders are searched recursively for ``.csv``/``.txt`` files (``*.faces.csv`` from
    ``avemo faces`` is skipped, as are other suffixes); every one must be readable and in a
    supported format, else InputError names it (a file left out silently would turn its video
    into one without predictions). Two files with the same stem are an error.
    """
    path = Path(path)
    if path.is_file():
        return {path.stem: path}
    if not path.is_dir():
        raise InputError("no such file or folder", path)
    found: dict[str, Path] = {}
    for candidate in sorted(path.rglob("*")):
        if candidate.suffix.lower() not in SUFFIXES or candidate.name.endswith(".faces.csv"):
            continue
        if candidate.is_dir():
            continue
        if not candidate.is_file():  # a broken link, a FIFO (opening it would block), ...
            what = "a broken link" if candidate.is_symlink() else "not a regular file"
            raise InputError(f"cannot read: {what}", candidate)
        try:
            detect_format(candidate)
        except InputError as error:  # never silently left out: its video would look unpredicted
            raise InputError(
                f"{error.message} (every .csv/.txt file in {path} is read; move others out)",
                candidate,
            ) from None
        if candidate.stem in found:
            raise InputError(
                f"two files for video {candidate.stem!r}: {found[candidate.stem]} and {candidate}",
                path,
            )
        found[candidate.stem] = candidate
    return found


def split_side(name: str) -> tuple[str, str] | None:
    """``("video10_1", "left")`` for ``"video10_1_left"``; None for other names."""
    match = _SIDE.match(name)
    return (match["base"], match["side"]) if match else None


def pair_base(name: str) -> str:
    """The video a ``<base>_left`` / ``<base>_right`` name was cut from (else the name itself);
    the two halves of an Aff-Wild2 two-person video share its file and audio track (SPEC 8)."""
    split = split_side(name)
    return split[0] if split else name
