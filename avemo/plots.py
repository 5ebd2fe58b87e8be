"""Plots (matplotlib, Agg): evaluation traces and scatter, and annotation overviews.

``evaluate --plots``: per video the prediction and label over time (:func:`plot_video`) and one
valence-arousal scatter of all videos (:func:`plot_scatter`). ``avemo plot``: per annotate CSV
its valence and arousal over time per face, with the frames without a face and without voice
shaded, and the valence-arousal density (:func:`plot_annotation`). Both share the figure, trace
and plane helpers. Figures are drawn with ``matplotlib.figure.Figure`` (no pyplot, so no GUI
backend and no global state) and written atomically. matplotlib is an optional dependency
(``pip install "avemo[plots]"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avemo.errors import AvemoError, InputError
from avemo.files import atomic_path
from avemo.labels import VALUES

if TYPE_CHECKING:
    import pandas as pd

    from avemo.evaluate import Video

SCATTER_POINTS = 20_000  # at most this many frames (a seeded sample) in the scatter
SCATTER_NAME = "va_scatter.png"
DPI = 100
VOICE_THRESHOLD = 0.5  # frames with a lower `voice` are shaded as "no voice"
DENSITY_GRID = 30  # hexagons across the valence-arousal plane
TABLE_COLUMNS = ("frame", "timestamp", "face_id", "success", "valence", "arousal")


def _figure(**options):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise AvemoError(
            'plots need matplotlib: pip install "avemo[plots]" (or matplotlib)'
        ) from None
    return Figure(layout="constrained", **options)


def _save(figure, path: Path, **options) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI, **options)


def _trace(frames: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Values on a contiguous frame axis, NaN (a gap in the line) for frames not scored."""
    axis = np.arange(frames.min(), frames.max() + 1)
    full = np.full((len(axis), values.shape[1]), np.nan)
    full[frames - axis[0]] = values
    return axis, full


def _plane(ax) -> None:
    """The valence-arousal square: axes through 0, equal aspect."""
    ax.axhline(0.0, color="0.8", linewidth=0.8)
    ax.axvline(0.0, color="0.8", linewidth=0.8)
    ax.set_xlim(-1.05, 1.05)
    ax.set_ylim(-1.05, 1.05)
    ax.set_box_aspect(1)
    ax.set_xlabel("valence")


def plot_video(video: Video, path: str | os.PathLike) -> Path:
    """Prediction and label over time, valence above arousal, with each dimension's CCC."""
    path = Path(path)
    figure = _figure(figsize=(10, 5))
    axes = figure.subplots(2, 1, sharex=True)
    axis, label = _trace(video.frames, video.label)
    _, pred = _trace(video.frames, video.pred)
    for i, (ax, dimension) in enumerate(zip(axes, VALUES, strict=True)):
        ax.axhline(0.0, color="0.8", linewidth=0.8)
        ax.plot(axis, pred[:, i], color="C0", linewidth=1.0, alpha=0.8, label="prediction")
        ax.plot(axis, label[:, i], color="black", linewidth=1.2, label="label", zorder=3)
        value = video.scores.get(f"ccc_{dimension}", float("nan"))
        ccc = "n/a" if np.isnan(value) else f"{value:.3f}"
        ax.set_title(f"{dimension}: CCC {ccc}", loc="left", fontsize="medium")
        ax.set_ylabel(dimension)
        ax.set_ylim(-1.05, 1.05)
    axes[-1].set_xlabel("frame (0-based)")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right", ncols=2)
    figure.suptitle(video.name)
    _save(figure, path)
    return path


def plot_scatter(videos: Sequence[Video], path: str | os.PathLike, seed: int = 0) -> Path:
    """Labels and predictions of every scored frame in the valence-arousal plane."""
    path = Path(path)
    label = np.concatenate([v.label for v in videos])
    pred = np.concatenate([v.pred for v in videos])
    keep = ~(np.isnan(label).any(axis=1) | np.isnan(pred).any(axis=1))
    label, pred = label[keep], pred[keep]
    if len(label) > SCATTER_POINTS:
        pick = np.random.default_rng(seed).choice(len(label), SCATTER_POINTS, replace=False)
        label, pred = label[pick], pred[pick]
    figure = _figure(figsize=(10, 5))
    axes = figure.subplots(1, 2, sharex=True, sharey=True)
    for ax, values, title, color in zip(
        axes, (label, pred), ("labels", "predictions"), ("black", "C0"), strict=True
    ):
        _plane(ax)
        ax.scatter(values[:, 0], values[:, 1], s=3, alpha=0.4, color=color, linewidths=0)
        ax.set_title(f"{title} ({len(values)} frames)", fontsize="medium")
    axes[0].set_ylabel("arousal")
    _save(figure, path, bbox_inches="tight")  # constrained layout alone clips square panels' titles
    return path


def plot_videos(videos: Sequence[Video], directory: str | os.PathLike) -> list[Path]:
    """``<directory>/<video>.png`` for every video and ``<directory>/va_scatter.png``."""
    directory = Path(directory)
    _figure()  # fail before writing anything when matplotlib is missing
    written = [plot_video(v, directory / f"{v.name}.png") for v in videos if len(v.frames)]
    written.append(plot_scatter(videos, directory / SCATTER_NAME))
    return written


def read_annotation(path: str | os.PathLike) -> pd.DataFrame:
    """An ``avemo annotate`` CSV/TSV, checked for the columns the plots need."""
    import pandas as pd

    path = Path(path)
    try:
        table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read: {error}", path) from None
    if missing := [c for c in TABLE_COLUMNS if c not in table.columns]:
        raise InputError(f"not an avemo annotate table (no {', '.join(missing)})", path)
    return table


def _shade(ax, time: np.ndarray, where: np.ndarray, **style) -> None:
    """Shade the spans of ``time`` where ``where`` holds, over the whole height of ``ax``."""
    if where.any():
        ax.fill_between(
            time, 0, 1, where=where, transform=ax.get_xaxis_transform(), step="mid", **style
        )


def plot_annotation(table: pd.DataFrame, path: str | os.PathLike, title: str = "") -> Path:
    """One annotate table as a PNG: valence and arousal over time per face (NaN frames leave
    gaps; grey where no face was found, hatched where ``voice`` < VOICE_THRESHOLD) beside the
    valence-arousal density of every predicted frame (hexagons) with each face's mean."""
    import pandas as pd

    path = Path(path)
    figure = _figure(figsize=(13, 5))
    grid = figure.add_gridspec(2, 2, width_ratios=(2.6, 1))
    trace_axes = [figure.add_subplot(grid[0, 0])]
    trace_axes.append(figure.add_subplot(grid[1, 0], sharex=trace_axes[0]))
    plane = figure.add_subplot(grid[:, 1])
    per_frame = table.groupby("frame")
    # in presentation-time order (frames of some AVI files decode with swapped timestamps)
    time = per_frame["timestamp"].first().sort_values(kind="stable")
    frames = time.index.to_numpy()
    time = time.to_numpy(np.float64)
    seen = per_frame["success"].max().reindex(frames).to_numpy() > 0
    voice = None
    if "voice" in table:
        voice = per_frame["voice"].max().reindex(frames).to_numpy(np.float64)
    position = pd.Series(np.arange(len(frames)), index=frames)
    faces = [f for f in sorted(table["face_id"].unique()) if f >= 0]
    for i, (ax, dimension) in enumerate(zip(trace_axes, VALUES, strict=True)):
        _shade(ax, time, ~seen, color="0.85", linewidth=0, label="no face")
        if voice is not None:
            quiet = ~(voice >= VOICE_THRESHOLD)
            _shade(
                ax,
                time,
                quiet,
                facecolor="none",
                hatch="//",
                edgecolor="0.75",
                linewidth=0,
                label=f"no voice (voice < {VOICE_THRESHOLD:g})",
            )
        ax.axhline(0.0, color="0.6", linewidth=0.8)
        for k, face in enumerate(faces):
            rows = table[table["face_id"] == face]
            index = position.reindex(rows["frame"].to_numpy()).to_numpy()
            values = np.full(len(frames), np.nan)
            values[index] = rows[dimension].to_numpy(np.float64)
            ax.plot(time, values, color=f"C{k}", linewidth=1.2, label=f"face {face}")
        ax.set_ylabel(dimension)
        ax.set_ylim(-1.05, 1.05)
        if i == 0:
            ax.tick_params(labelbottom=False)
    trace_axes[-1].set_xlabel("time (s)")
    _plane(plane)
    predicted = table[table["face_id"] >= 0][list(VALUES)].dropna().to_numpy(np.float64)
    if len(predicted):
        plane.hexbin(
            predicted[:, 0],
            predicted[:, 1],
            gridsize=DENSITY_GRID,
            extent=(-1, 1, -1, 1),
            mincnt=1,
            cmap="Blues",
            bins="log",
            linewidths=0.2,
        )
    for k, face in enumerate(faces):
        values = table[table["face_id"] == face][list(VALUES)].dropna().to_numpy(np.float64)
        if len(values):
            mean, std = values.mean(axis=0), values.std(axis=0)
            plane.errorbar(
                mean[0],
                mean[1],
                xerr=std[0],
                yerr=std[1],
                color=f"C{k}",
                marker="o",
                capsize=3,
                label=f"face {face} mean \u00b1 std",
            )
    plane.set_ylabel("arousal")
    plane.set_title(f"density ({len(predicted)} frames)", fontsize="medium")
    handles, labels = trace_axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside upper right", ncols=min(len(labels), 5))
    figure.suptitle(title or path.stem)
    _save(figure, path)
    return path


def find_annotations(inputs) -> list[tuple[Path, Path, bool]]:
    """``(file, name, named)`` for every input: files as given (name: the stem; ``named``),
    folders searched for ``*.csv``/``*.tsv`` (name: the path relative to the folder, without
    suffix)."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            for path in sorted(p for p in item.rglob("*") if p.suffix in (".csv", ".tsv")):
                found.append((path, path.relative_to(item).with_suffix(""), False))
        else:
            found.append((item, Path(item.stem), True))
    return found


def plot_annotations(inputs, directory: str | os.PathLike):
    """``DIR/<name>.png`` for every annotate table among ``inputs`` (:func:`find_annotations`).

    Returns ``(written, failed)``: the PNGs, and ``(file, message)`` for inputs that could not
    be read as annotate tables (in folders, CSVs of other kinds are skipped silently).
    """
    directory = Path(directory)
    _figure()  # fail before reading anything when matplotlib is missing
    written, failed = [], []
    for path, name, named in find_annotations(inputs):
        try:
            table = read_annotation(path)
        except InputError as error:
            if named or "not an avemo annotate table" not in error.message:
                failed.append((path, str(error)))
            continue
        target = directory / name.with_name(name.name + ".png")
        written.append(plot_annotation(table, target, title=name.as_posix()))
    return written, failed
