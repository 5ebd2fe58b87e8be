"""Evaluation plots: per-video traces and one valence-arousal scatter (matplotlib, Agg).

Figures are drawn with ``matplotlib.figure.Figure`` (no pyplot, so no GUI backend and no global
state) and written atomically. matplotlib is an optional dependency (``pip install
"avemo[plots]"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from avemo.errors import AvemoError
from avemo.files import atomic_path
from avemo.labels import VALUES

if TYPE_CHECKING:
    from avemo.evaluate import Video

SCATTER_POINTS = 20_000  # at most this many frames (a seeded sample) in the scatter
SCATTER_NAME = "va_scatter.png"
DPI = 100


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
        ax.axhline(0.0, color="0.8", linewidth=0.8)
        ax.axvline(0.0, color="0.8", linewidth=0.8)
        ax.scatter(values[:, 0], values[:, 1], s=3, alpha=0.4, color=color, linewidths=0)
        ax.set_title(f"{title} ({len(values)} frames)", fontsize="medium")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_box_aspect(1)
        ax.set_xlabel("valence")
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
