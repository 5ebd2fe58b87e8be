"""Training data: cached features and labels as dense L-clip sequences, splits and folds.

Each video's clips are tiled into L-clip sequences exactly as annotation tiles a video
(:func:`avemo.clips.sequences`): every frame ends one clip of one sequence, clips past the end of
the video are zero padding. Labels are per-frame ``valence, arousal`` with NaN where a frame has
no valid label (-5 in Aff-Wild2 files, read by :mod:`avemo.labels`); the mask of a sequence is
False there and on padding, so those frames never enter the loss or the scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avemo.cache import Features, cached_videos, read_features
from avemo.clips import sequences
from avemo.errors import AvemoError, InputError
from avemo.labels import pair_base

VALIDATION_BATCH = 64  # sequences per forward pass when predicting a whole video


@dataclass
class Video:
    """One video's cached features and its per-frame labels (``frames x 2``, NaN: no label)."""

    features: Features
    labels: np.ndarray

    @property
    def name(self) -> str:
        return self.features.name


def label_files(folders: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """Video name -> label file, for every label file under the given folders or files."""
    from avemo.labels import find_files

    found: dict[str, Path] = {}
    for folder in folders:
        for name, path in find_files(folder).items():
            if name in found and found[name] != path:
                raise InputError(f"two label files for video {name!r}: {found[name]}", path)
            found[name] = path
    return found


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Per-frame ``valence, arousal`` (0-based frames) of a label file, NaN where invalid."""
    import pandas as pd

    from avemo.labels import read_table

    table = read_table(path)
    last = int(table.index.max()) + 1 if len(table) else 0
    return table.reindex(pd.RangeIndex(last)).to_numpy(dtype=np.float32)


def load_videos(
    features: str | os.PathLike, labels: dict[str, Path], names: Sequence[str]
) -> list[Video]:
    """The cached features and labels of ``names`` (all must be in the cache and labelled)."""
    cache = cached_videos(features)
    by_stem: dict[str, list[Path]] = {}
    for cached, path in cache.items():
        by_stem.setdefault(Path(cached).name, []).append(path)
    videos = []
    for name in names:
        found = [cache[name]] if name in cache else by_stem.get(Path(name).name, [])
        if len(found) != 1:
            problem = "no cached features" if not found else f"{len(found)} cached feature files"
            raise InputError(f"video {name!r} has labels but {problem}", features)
        path = found[0]
        videos.append(Video(read_features(path, Path(name).name), read_labels(labels[name])))
    return videos


def clip_rows(features: Features) -> np.ndarray:
    """For every frame (0-based), the cache row of the clip that ends there, or -1."""
    rows = np.full(features.num_frames, -1, dtype=np.int64)
    rows[features.frame - 1] = np.arange(len(features.frame))
    return rows


def gather(features: Features, rows: np.ndarray, ends: np.ndarray):
    """Audio and visual features of the clips ending at ``ends`` (any shape), zeros where no
    clip ends there (padding past the video), and where clips are (``valid``)."""
    inside = ends < len(rows)
    row = np.where(inside, rows[np.minimum(ends, len(rows) - 1)], -1)
    valid = row >= 0
    audio = np.zeros(ends.shape + (features.audio.shape[1],), dtype=np.float32)
    visual = np.zeros(ends.shape + (features.visual.shape[1],), dtype=np.float32)
    audio[valid] = features.audio[row[valid]]
    visual[valid] = features.visual[row[valid]]
    return audio, visual, valid


class SequenceDataset(torch.utils.data.Dataset):
    """Dense L-clip sequences over the cached features of several videos, with their labels.

    Item ``i`` is ``(audio L x Da, visual L x Dv, target L x 2, mask L x 2)``: clips past the end
    of the video (padding) have zero features, and the mask is False there and wherever a label
    is missing or invalid (-5 in the file; per dimension).
    """

    def __init__(self, videos: Sequence[Video], seq_len: int):
        self.videos = list(videos)
        self.seq_len = seq_len
        self.rows = [clip_rows(v.features) for v in self.videos]
        index = []
        for number, video in enumerate(self.videos):
            for ends in sequences(video.features.num_frames, seq_len):
                index.append((number, ends))
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def item(self, number: int, ends: np.ndarray):
        """The sequence of video ``number`` whose clips end at ``ends`` (0-based frames)."""
        video = self.videos[number]
        audio, visual, valid = gather(video.features, self.rows[number], ends)
        target = np.zeros((len(ends), 2), dtype=np.float32)
        labelled = ends < len(video.labels)
        target[labelled] = video.labels[ends[labelled]]
        mask = labelled[:, None] & ~np.isnan(target) & valid[:, None]
        target[~mask] = 0.0
        return (
            torch.from_numpy(audio),
            torch.from_numpy(visual),
            torch.from_numpy(target),
            torch.from_numpy(mask),
        )

    def __getitem__(self, i: int):
        return self.item(*self.index[i])


def predict_video(
    model: nn.Module,
    features: Features,
    seq_len: int,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = VALIDATION_BATCH,
) -> np.ndarray:
    """Per-frame predictions ``num_frames x 2`` of one video (NaN where no clip ends)."""
    rows = clip_rows(features)
    out = np.full((len(rows), 2), np.nan, dtype=np.float32)
    all_ends = list(sequences(len(rows), seq_len))
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(all_ends), batch_size):
            ends = np.stack(all_ends[start : start + batch_size])
            audio, visual, valid = gather(features, rows, ends)
            pred = model(torch.from_numpy(audio).to(device), torch.from_numpy(visual).to(device))
            out[ends[valid]] = pred.float().cpu().numpy()[valid]
    model.train(was_training)
    return out


def split_folds(names: Sequence[str], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint folds of video names, the two halves of a two-person video kept together.

    Groups of names (by :func:`pair_base`) are shuffled with ``seed`` and dealt out in turn, so
    the split depends only on the set of names, ``k`` and ``seed``.
    """
    if k < 2:
        raise AvemoError(f"--folds must be at least 2, got {k}")
    groups: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        groups.setdefault(pair_base(name), []).append(name)
    if len(groups) < k:
        raise AvemoError(f"{len(groups)} videos cannot make {k} folds")
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, base in enumerate(order):
        folds[i % k].extend(groups[base])
    return [sorted(fold) for fold in folds]


def validation_names(validation: str | os.PathLike | Sequence[str], labels: dict[str, Path]):
    """Validation video names from a label folder, a text file of names, or a list of names.

    A folder's label files are added to ``labels`` (Aff-Wild2 keeps them in their own folder).
    """
    if isinstance(validation, str | os.PathLike):
        path = Path(validation)
        if path.is_dir():
            found = label_files([path])
            if not found:
                raise InputError("no label files (*.txt) in the validation folder", path)
            labels.update(found)
            return sorted(found)
        if path.is_file():
            names = [line.strip() for line in path.read_text().splitlines()]
            names = [Path(n).stem if n.endswith(".txt") else n for n in names if n]
        else:
            raise InputError("no such validation folder or list file", path)
    else:
        names = list(validation)
    unknown = [n for n in names if n not in labels]
    if unknown:
        where = validation if isinstance(validation, str | os.PathLike) else None
        raise InputError(f"validation video {unknown[0]!r} has no label file", where)
    return sorted(names)
