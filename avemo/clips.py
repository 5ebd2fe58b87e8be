"""Clips and sequences: which frames feed each clip, and how clips tile a video (SPEC 2).

A *clip* is 8 face crops sampled from the 32-frame window that ends at the clip's end frame; a
*sequence* is L clips whose end frames are 32 apart. With dense tiling every frame of the video is
the end frame of exactly one clip of exactly one sequence, so every frame gets one prediction.

Frame numbers here are 0-based (avemo's convention); SPEC's 1-based end frame ``e`` is ``e - 1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CLIP_FRAMES = 8  # frames per clip
CLIP_WINDOW = 32  # frames: window a clip samples from, and spacing of the clips of a sequence
# (minimum present frames in the window, dilation): 32 present -> every 4th frame, 24-31 -> every
# 3rd, 16-23 -> every 2nd, 8-15 -> the last 8 (fewer: the last one repeated)
DILATIONS = ((32, 4), (24, 3), (16, 2), (8, 1))
NO_FRAME = -1  # index of an all-zero frame in a clip (a window without any face)


def clip_frames(end: int, present: np.ndarray) -> np.ndarray:
    """The 8 frame indices (ascending) of the clip that ends at frame ``end``.

    ``present[i]`` says whether frame ``i`` has a face crop. Missing frames are skipped, not
    zeroed; frames before 0 or past ``len(present)`` are missing. A window with no face at all
    gives ``[NO_FRAME] * 8``, i.e. an all-zero clip.
    """
    start = max(end - CLIP_WINDOW + 1, 0)
    stop = min(end + 1, len(present))
    available = start + np.flatnonzero(present[start:stop]) if stop > start else np.array([], int)
    count = len(available)
    if count == 0:
        return np.full(CLIP_FRAMES, NO_FRAME, dtype=np.int64)
    for minimum, step in DILATIONS:
        if count >= minimum:
            # every `step`-th present frame, counted back from the last one
            return available[::-1][::step][:CLIP_FRAMES][::-1].astype(np.int64)
    padding = np.full(CLIP_FRAMES - count, available[-1])
    return np.concatenate([available, padding]).astype(np.int64)


def window_has_face(present: np.ndarray) -> np.ndarray:
    """For every frame, whether the 32-frame window ending there holds at least one face."""
    counts = np.cumsum(np.concatenate([[0], present.astype(np.int64)]))
    ends = np.arange(len(present)) + 1
    return (counts[ends] - counts[np.maximum(ends - CLIP_WINDOW, 0)]) > 0


def clip_ends(num_frames: int, stride: int = 1) -> np.ndarray:
    """End frames of the clips to compute: every frame (stride 1) or every ``stride``-th one.

    ``stride`` must divide 32 so that the computed clips form whole sequences. The grid starts at
    frame 0; frames after the last grid point get their values by holding the last one.
    """
    if stride < 1 or CLIP_WINDOW % stride:
        raise ValueError(f"stride must divide {CLIP_WINDOW}, got {stride}")
    return np.arange(0, num_frames, stride, dtype=np.int64)


def sequences(num_frames: int, seq_len: int, stride: int = 1) -> Iterator[np.ndarray]:
    """Dense tiling: yield sequences of ``seq_len`` clip end frames, 32 apart.

    Every end frame from :func:`clip_ends` appears in exactly one sequence. Sequences are
    grouped in blocks of ``32 * seq_len`` frames; in block ``m`` the sequence with offset ``j``
    holds the ends ``32 * seq_len * m + j + 32 * i`` for ``i`` in ``0 .. seq_len - 1``. Ends at or
    past ``num_frames`` are padding: zero input, no output (callers mask them with
    ``ends < num_frames``).
    """
    block = CLIP_WINDOW * seq_len
    offsets = clip_ends(CLIP_WINDOW, stride)
    for base in range(0, num_frames, block):
        for j in offsets:
            if base + j < num_frames:
                yield base + j + CLIP_WINDOW * np.arange(seq_len, dtype=np.int64)


def to_frames(ends: np.ndarray, values: np.ndarray, num_frames: int) -> np.ndarray:
    """Per-frame values from values at clip end frames, by linear interpolation.

    ``values`` is ``len(ends) x D`` with NaN where a clip had no prediction. NaN points are
    skipped (interpolation runs between the valid neighbours) and frames outside the computed
    range hold the nearest value; callers put NaN back on frames whose window has no face
    (:func:`window_has_face`).
    """
    values = np.asarray(values, dtype=np.float64)
    frames = np.arange(num_frames)
    out = np.full((num_frames, values.shape[1]), np.nan)
    for d in range(values.shape[1]):
        valid = ~np.isnan(values[:, d])
        if valid.any():
            out[:, d] = np.interp(frames, ends[valid], values[valid, d])
    return out
