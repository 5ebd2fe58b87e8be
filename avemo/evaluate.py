"""Score per-frame predictions against labels with the ABAW / Aff-Wild2 conventions (SPEC 8).

Videos are matched by name (file stem): a label file ``<video>.txt`` takes the prediction file
``<video>.csv``/``<video>.txt``, and Aff-Wild2's two-person videos ``<base>_left``/``<base>_right``
fall back to one avemo CSV ``<base>.csv`` with two face tracks (see ``avemo.labels``). Frames are
aligned by frame index, never by position:

- frames whose label is -5 or NaN (either dimension) are not scored;
- labelled frames without a prediction (past the end of the predictions, or NaN because no face
  was seen) are counted as ``n_missing`` and reported; ``missing`` says what happens to them:
  ``drop`` (default: not scored), ``zero`` (scored as 0, 0) or ``ffill`` (the last prediction
  before them, 0 before a video's first prediction);
- predicted frames without a label line are ignored and reported.

``smooth=True`` box-filters each video's predictions first (``avemo.smoothing``, NaN-aware), then
the missing policy applies. ``pooling="concat"`` (the challenge's) scores all scored frames of all
videos as one series; ``pooling="video"`` scores each video and reports the mean and the
(population) standard deviation over videos, leaving out videos where a metric is undefined.
Bootstrap intervals resample videos with replacement (seeded) and recompute the pooled value.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path
from avemo.labels import VALUES, as_table, find_files, read_table, split_side
from avemo.metrics import SCORE_KEYS, moments, score, score_moments

log = logging.getLogger("avemo")

POOLINGS = ("concat", "video")
MISSING = ("drop", "zero", "ffill")
CONFIDENCE = 0.95  # coverage of the bootstrap intervals
NOTES_SHOWN = 5  # per-video notes logged one by one; the rest are summarised in one line
_MISSING_TEXT = {"drop": "dropped", "zero": "scored as 0", "ffill": "given the previous prediction"}

Source = str | os.PathLike | Mapping[str, pd.DataFrame]


@dataclass
class Video:
    """One labelled video, aligned: the frames that have a valid label, and their predictions."""

    name: str
    label_file: str
    prediction_file: str  # "" when no prediction matched
    face_id: int | None
    frames: np.ndarray  # 0-based frames with a valid label
    label: np.ndarray  # len(frames) x 2
    pred: np.ndarray  # len(frames) x 2; NaN where the frame is not scored
    n_missing: int
    n_extra: int
    scores: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class Result:
    """What ``evaluate`` found: ``summary`` (the --json keys), ``per_video`` and ``notes``."""

    summary: dict
    per_video: pd.DataFrame
    notes: list[str]
    missing: str = "drop"

    def table(self) -> str:
        """The summary as a readable text table (the CLI prints it)."""
        s = self.summary
        video = s["pooling"] == "video"
        lines = [
            f"{s['n_videos']} videos, {s['n_frames']} frames scored, pooling {s['pooling']}"
            + (" (mean ± std over videos)" if video else " (all frames concatenated)"),
            f"{s['n_missing']} labelled frames without prediction"
            + (f" ({_MISSING_TEXT[self.missing]})" if s["n_missing"] else ""),
        ]
        rows = [["", "CCC", "PCC", "RMSE", "SAGR"]]
        for dimension in (*VALUES, "mean"):
            row = [dimension]
            for metric in ("ccc", "pcc", "rmse", "sagr"):
                key = f"{metric}_{dimension}"
                if key in s:
                    row.append(_cell(s, key))
                else:  # the mean row of PCC, RMSE, SAGR: plain average of the two dimensions
                    row.append(_number((s[f"{metric}_valence"] + s[f"{metric}_arousal"]) / 2))
            rows.append(row)
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            lines.append("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        lines.append("CCC mean = (CCC valence + CCC arousal) / 2, the challenge score")
        if "bootstrap" in s:
            lines.append(
                f"[a, b]: {CONFIDENCE:.0%} bootstrap interval over videos "
                f"({s['bootstrap']} resamples, seed {s['seed']})"
            )
        if any("n/a" in cell for row in rows for cell in row):
            lines.append("n/a: undefined (fewer than 2 frames with a label and a prediction)")
        return "\n".join(lines)

    def to_json(self) -> str:
        """``summary`` as strict JSON: undefined or non-finite values are null (never the
        ``NaN``/``Infinity`` literals that JSON does not have)."""
        clean = {
            key: None if isinstance(value, float) and not math.isfinite(value) else value
            for key, value in self.summary.items()
        }
        return json.dumps(clean, indent=2, allow_nan=False)


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def _cell(summary: dict, key: str) -> str:
    text = _number(summary[key])
    if f"{key}_std" in summary and text != "n/a":
        text += f" ± {_number(summary[f'{key}_std'])}"
    if f"{key}_ci_low" in summary and text != "n/a":
        text += f" [{_number(summary[f'{key}_ci_low'])}, {_number(summary[f'{key}_ci_high'])}]"
    return text


def _sources(source: Source, role: str) -> dict[str, Path | pd.DataFrame]:
    if isinstance(source, Mapping):
        return {str(name): as_table(data, f"{role} {name}") for name, data in source.items()}
    return dict(find_files(source))


def _some(names, shown: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _origin(source: Path | pd.DataFrame, name: str) -> str:
    """The file a table came from, or its name for an in-memory table."""
    return str(source) if isinstance(source, Path) else name


def _read(source: Path | pd.DataFrame, **options) -> pd.DataFrame:
    return source if isinstance(source, pd.DataFrame) else read_table(source, **options)


def _check_labels(table: pd.DataFrame, name: str) -> None:
    values = table.to_numpy()
    outside = np.abs(values) > 1
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise InputError(
            f"label {VALUES[column]} {values[row, column]:g} at frame {table.index[row]} is "
            "outside [-1, 1] (and not -5): not a valence/arousal label file?",
            name,
        )


def _smoothed(frames: np.ndarray, values: np.ndarray, last: int) -> np.ndarray:
    """``avemo.smoothing.smooth`` of a video's predictions given only at ``frames`` (sorted; NaN
    rows are frames without a prediction), on the timeline ``0..last``, without allocating the
    timeline: runs of frames closer than the widest window are filtered on a dense stretch that
    reaches one window past them (NaN there, or the video's edge), which gives each of them the
    same window as the whole timeline would."""
    from avemo.smoothing import WINDOWS
    from avemo.smoothing import smooth as box_filter

    reach = max(WINDOWS)
    out = np.full_like(values, np.nan)
    present = np.flatnonzero(~np.isnan(values).any(axis=1))
    if not len(present):
        return out
    breaks = np.flatnonzero(np.diff(frames[present]) > reach) + 1
    for run in np.split(present, breaks):
        low = max(int(frames[run[0]]) - reach, 0)
        high = min(int(frames[run[-1]]) + reach, last)
        stretch = np.full((high - low + 1, values.shape[1]), np.nan)
        stretch[frames[run] - low] = values[run]
        out[run] = box_filter(stretch)[frames[run] - low]
    return out


def _align(
    label: pd.DataFrame, pred: pd.DataFrame | None, *, smooth: bool, missing: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(frames, label, pred, n_missing, n_extra) of one video, the missing policy applied.

    Works on the frames present in the two tables only, so memory follows the number of rows,
    never the largest frame number."""
    valid = label.dropna()
    frames = valid.index.to_numpy()
    out = np.full((len(frames), 2), np.nan)
    n_extra = 0
    if pred is not None and len(pred):
        known = pred.index.to_numpy()  # sorted, unique (labels._table)
        values = pred.to_numpy(dtype=np.float64, copy=True)
        values[np.isnan(values).any(axis=1)] = np.nan  # half a prediction is no prediction
        if smooth:
            last = max(int(label.index.max()) if len(label) else -1, int(known[-1]))
            values = _smoothed(known, values, last)
        n_extra = int((~pred.index.isin(label.index)).sum())
        slot = np.minimum(np.searchsorted(known, frames), len(known) - 1)
        hit = known[slot] == frames
        out[hit] = values[slot[hit]]
    absent = np.isnan(out).any(axis=1)
    if missing == "ffill" and pred is not None and len(pred):  # the last prediction before
        good = ~np.isnan(values[:, 0])
        before = np.searchsorted(known[good], frames, side="right") - 1
        gaps = absent & (before >= 0)
        out[gaps] = values[good][before[gaps]]
    n_missing = int(absent.sum())
    if missing in ("zero", "ffill"):
        out = np.nan_to_num(out, nan=0.0)
    return frames, valid.to_numpy(), out, n_missing, n_extra


def _note(video: Video, n_labelled: int, missing: str) -> str:
    parts = []
    if not n_labelled:
        parts.append("no frame with a valid label")
    elif not video.prediction_file:
        parts.append(f"no prediction file: all {n_labelled} labelled frames missing")
    elif video.n_missing:
        parts.append(f"{video.n_missing} of {n_labelled} labelled frames without prediction")
    if video.n_missing and n_labelled:
        parts[-1] += f" ({_MISSING_TEXT[missing]})"
    if video.n_extra:
        parts.append(f"{video.n_extra} predicted frames without a label line (ignored)")
    if 0 < video.scores.get("n_frames", 0) < 2:
        parts.append("CCC and PCC undefined (fewer than 2 frames)")
    return "; ".join(parts)


def _bootstrap(videos: list[Video], pooling: str, resamples: int, seed: int) -> dict:
    """Percentile intervals of every metric over ``resamples`` resamplings of the videos."""
    rng = np.random.default_rng(seed)
    k = len(videos)
    counts = rng.multinomial(k, np.full(k, 1.0 / k), size=resamples).astype(np.float64)
    if pooling == "concat":
        stats = np.stack([moments(v.pred, v.label) for v in videos])  # k x 2 x 7
        replicates = score_moments(np.einsum("bk,kdm->bdm", counts, stats))
    else:
        replicates = {}
        for key in SCORE_KEYS:
            values = np.array([v.scores[key] for v in videos])
            defined = ~np.isnan(values)
            with np.errstate(invalid="ignore", divide="ignore"):
                replicates[key] = (counts @ np.where(defined, values, 0.0)) / (counts @ defined)
    tail = (1 - CONFIDENCE) / 2 * 100
    result: dict = {}
    for key in SCORE_KEYS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: undefined everywhere
            low, high = np.nanpercentile(replicates[key], [tail, 100 - tail])
        result[f"{key}_ci_low"], result[f"{key}_ci_high"] = float(low), float(high)
    return result | {"bootstrap": int(resamples), "seed": int(seed)}


def _pooled(videos: list[Video], pooling: str) -> dict:
    if pooling == "concat":
        pooled = score(
            np.concatenate([v.pred for v in videos]), np.concatenate([v.label for v in videos])
        )
        return {key: pooled[key] for key in SCORE_KEYS}
    result: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: undefined everywhere
        for key in SCORE_KEYS:
            values = np.array([v.scores[key] for v in videos])
            result[key] = float(np.nanmean(values))
            result[f"{key}_std"] = float(np.nanstd(values))
    return result


def _per_video(videos: list[Video], labelled: list[int]) -> pd.DataFrame:
    rows = []
    for video, n_labelled in zip(videos, labelled, strict=True):
        rows.append(
            {
                "video": video.name,
                "label_file": video.label_file,
                "prediction_file": video.prediction_file,
                "face_id": video.face_id,
                "n_labelled": n_labelled,
                "n_frames": video.scores.get("n_frames", 0),
                "n_missing": video.n_missing,
                "n_extra": video.n_extra,
                **{key: video.scores.get(key, np.nan) for key in SCORE_KEYS},
                "note": video.note,
            }
        )
    table = pd.DataFrame(rows)
    table["face_id"] = table["face_id"].astype("Int64")
    return table


@np.errstate(over="ignore")  # absurd (finite) predictions give inf metrics, reported as null
def evaluate(
    predictions: Source,
    labels: Source,
    *,
    pooling: str = "concat",
    missing: str = "drop",
    smooth: bool = False,
    face_id: int | None = None,
    bootstrap: int = 0,
    seed: int = 0,
    per_video: str | os.PathLike | None = None,
    plots: str | os.PathLike | None = None,
    json_path: str | os.PathLike | None = None,
    columns: tuple[str, str] | None = None,
) -> Result:
    """Score predictions against labels; see the module docstring for every convention.

    ``predictions`` and ``labels`` are each a file, a folder (searched recursively), or a mapping
    video name -> DataFrame (``frame`` column or index, ``valence``, ``arousal``). ``face_id``
    picks the face of avemo CSVs with several faces per frame; ``columns`` names the value
    columns of avemo/generic prediction CSVs (default ``valence, arousal``). ``bootstrap`` > 0
    adds ``<metric>_ci_low/_ci_high`` keys (resampling videos, ``seed``). ``per_video`` writes the
    per-video table as CSV; ``plots`` writes per-video traces and a valence-arousal scatter as
    PNGs into that folder; ``json_path`` the summary numbers as JSON. Bad options raise
    ``AvemoError``, bad or unmatched inputs ``InputError``.
    """
    if pooling not in POOLINGS:
        raise AvemoError(f"unknown pooling {pooling!r}: use {' or '.join(POOLINGS)}")
    if missing not in MISSING:
        raise AvemoError(f"unknown missing policy {missing!r}: use {', '.join(MISSING)}")
    if bootstrap < 0:
        raise AvemoError(f"bootstrap must be >= 0 resamples, got {bootstrap}")
    label_sources = _sources(labels, "labels")
    if not label_sources:
        raise InputError("no label files found", None if isinstance(labels, Mapping) else labels)
    prediction_sources = _sources(predictions, "predictions")
    # with --smooth, annotate CSVs are read unsmoothed, so that the filter is applied once
    options = {"face_id": face_id, "columns": columns, "raw": smooth}

    videos: list[Video] = []
    labelled: list[int] = []
    used: set[str] = set()
    for name in sorted(label_sources):
        label = _read(label_sources[name])
        _check_labels(label, _origin(label_sources[name], name))
        match, side = name, None
        split = split_side(name)
        if name not in prediction_sources and split:
            if isinstance(prediction_sources.get(split[0]), Path):  # <base>.csv with two faces
                match, side = split
        pred = None
        if match in prediction_sources:
            pred = _read(prediction_sources[match], side=side, **options)
            used.add(match)
        frames, label_values, pred_values, n_missing, n_extra = _align(
            label, pred, smooth=smooth, missing=missing
        )
        video = Video(
            name=name,
            label_file=_origin(label_sources[name], name),
            prediction_file="" if pred is None else _origin(prediction_sources[match], match),
            face_id=None if pred is None else pred.attrs.get("face_id"),
            frames=frames,
            label=label_values,
            pred=pred_values,
            n_missing=n_missing,
            n_extra=n_extra,
        )
        video.scores = score(pred_values, label_values)
        video.note = _note(video, len(frames), missing)
        videos.append(video)
        labelled.append(len(frames))

    notes = [f"{v.name}: {v.note}" for v in videos if v.note]
    unused = sorted(set(prediction_sources) - used)
    if not used:
        raise InputError(
            f"no prediction matches a label file by name (labels: {_some(label_sources)}; "
            f"predictions: {_some(unused) or 'none found'})"
        )
    if unused:
        notes.append(f"{len(unused)} prediction file(s) without labels ignored: {_some(unused)}")
    for note in notes[:NOTES_SHOWN] if len(notes) > NOTES_SHOWN + 1 else notes:
        log.warning(note)
    if len(notes) > NOTES_SHOWN + 1:
        log.warning(
            "... and %d more notes (missing or extra frames): see --per-video",
            len(notes) - NOTES_SHOWN,
        )

    scored = [v for v in videos if v.scores["n_frames"] > 0]
    if not scored:
        raise InputError("no frame has both a valid label and a prediction")
    summary = _pooled(scored, pooling)
    summary = (
        {key: summary[key] for key in SCORE_KEYS}
        | {
            "n_videos": len(scored),
            "n_frames": int(sum(v.scores["n_frames"] for v in scored)),
            "n_missing": int(sum(v.n_missing for v in videos)),
            "pooling": pooling,
        }
        | {key: value for key, value in summary.items() if key.endswith("_std")}
    )
    if bootstrap:
        summary |= _bootstrap(scored, pooling, bootstrap, seed)
    result = Result(summary, _per_video(videos, labelled), notes, missing)
    if per_video is not None:
        with atomic_path(per_video) as tmp:
            result.per_video.to_csv(tmp, index=False)
    if plots is not None:
        from avemo.plots import plot_videos

        plot_videos(scored, plots)
    if json_path is not None:
        with atomic_path(json_path) as tmp:
            tmp.write_text(result.to_json() + "\n")
    return result
