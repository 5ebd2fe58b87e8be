"""Per-video summaries of an annotation: per face, how often it was seen and how it felt.

:func:`summarize_table` turns an ``avemo annotate`` table into the ``summary`` of its provenance
record (one entry per face track); :func:`collect` gathers the summaries of every record under
an output folder into one table, one row per video and face (``avemo summarize``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
# circumplex quadrants (valence, arousal signs; 0 counts as positive), named by their corner
QUADRANTS = {
    "positive_high": (1, 1),  # e.g. happy, excited
    "negative_high": (-1, 1),  # angry, afraid
    "negative_low": (-1, -1),  # sad, bored
    "positive_low": (1, -1),  # calm, content
}
MEANS = ("voice", "audio_share", "face_frontal")  # reliability columns averaged per face
SUMMARY_NAME = "summary.csv"


def _number(value) -> float | None:
    """A JSON-safe float: None for NaN."""
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _stats(values: np.ndarray, name: str) -> dict:
    values = values[~np.isnan(values)]
    out = {f"{name}_mean": math.nan, f"{name}_std": math.nan}
    out.update({f"{name}_q{round(q * 100):02d}": math.nan for q in QUANTILES})
    if len(values):
        out[f"{name}_mean"] = values.mean()
        out[f"{name}_std"] = values.std()
        out.update(
            {
                f"{name}_q{round(q * 100):02d}": v
                for q, v in zip(QUANTILES, np.quantile(values, QUANTILES), strict=True)
            }
        )
    return out


def summarize_face(rows: pd.DataFrame) -> dict:
    """The summary of one face's rows (one per frame) of an annotate table."""
    frames = len(rows)
    seen = int(rows["success"].sum())
    va = rows[["valence", "arousal"]].to_numpy(np.float64)
    predicted = va[~np.isnan(va).any(axis=1)]
    entry: dict = {
        "face_id": int(rows["face_id"].iloc[0]),
        "frames": frames,
        "frames_with_face": seen,
        "face_share": seen / frames if frames else math.nan,
        "frames_with_prediction": len(predicted),
    }
    entry.update(_stats(va[:, 0], "valence"))
    entry.update(_stats(va[:, 1], "arousal"))
    signs = np.where(predicted >= 0, 1, -1)
    for name, (v, a) in QUADRANTS.items():
        hits = ((signs[:, 0] == v) & (signs[:, 1] == a)).sum()
        entry[f"share_{name}"] = hits / len(predicted) if len(predicted) else math.nan
    for column in MEANS:
        values = rows[column].to_numpy(np.float64) if column in rows else np.array([])
        values = values[~np.isnan(values)]
        entry[f"{column}_mean"] = values.mean() if len(values) else math.nan
    size = rows["face_size"].to_numpy(np.float64) if "face_size" in rows else np.array([])
    size = size[~np.isnan(size)]
    entry["face_size_median"] = float(np.median(size)) if len(size) else math.nan
    return {k: _number(v) if isinstance(v, float | np.floating) else v for k, v in entry.items()}


def summarize_table(table: pd.DataFrame) -> list[dict]:
    """One summary per face track of an annotate table (face_id -1: a video without faces).

    Per face: ``frames`` (rows: every decoded frame), ``frames_with_face`` and ``face_share``
    (frames where the face was found), ``frames_with_prediction``, mean, population std and the
    5/25/50/75/95 % quantiles of valence and arousal over predicted frames, the share of
    predicted frames in each circumplex quadrant, the mean ``voice``, ``audio_share`` and
    ``face_frontal`` and the median ``face_size``. NaN statistics are ``None``.
    """
    return [summarize_face(rows) for _, rows in table.groupby("face_id", sort=True)]


def _records(paths) -> list[Path]:
    found: list[Path] = []
    for item in map(Path, paths):
        if item.is_dir():
            found += sorted(item.rglob("*.json"))
        elif item.exists():
            found.append(item)
        else:
            raise InputError("no such file or folder", item)
    return found


def collect(paths, output: str | os.PathLike | None = None) -> pd.DataFrame:
    """One row per video and face from the provenance records under ``paths`` (folders are
    searched for ``*.json``; records without a ``summary`` are skipped). Columns: ``video``
    (the record's path relative to its folder, without ``.json``), ``input``, ``model``, the
    video's ``duration_s`` and ``fps``, then the face summary. Written to ``output`` as CSV when
    given."""
    rows = []
    for item in map(Path, paths):
        root = item if item.is_dir() else item.parent
        for record_path in _records([item]):
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(record, dict) or not isinstance(record.get("summary"), list):
                continue
            video = record_path.relative_to(root).with_suffix("").as_posix()
            source = record.get("input", {})
            for face in record["summary"]:
                rows.append(
                    {
                        "video": video,
                        "input": source.get("path"),
                        "model": record.get("model", {}).get("name"),
                        "duration_s": source.get("duration"),
                        "fps": source.get("fps"),
                        **face,
                    }
                )
    if not rows:
        shown = ", ".join(map(str, paths))
        raise AvemoError(f"no annotation records with a summary in {shown} (run avemo annotate)")
    table = pd.DataFrame(rows)
    if output is not None:
        with atomic_path(output) as tmp:
            table.to_csv(tmp, index=False, na_rep="NaN", float_format="%.6g", lineterminator="\n")
    return table
