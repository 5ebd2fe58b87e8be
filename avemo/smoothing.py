"""The reference's temporal smoothing of per-frame predictions (SPEC 6).

A centred box filter per video, 20 frames wide for valence and 50 for arousal, as
``scipy.ndimage.uniform_filter1d`` in constant mode (frames outside the video count as 0).
``annotate`` applies it (on by default) and ``evaluate --smooth`` applies it to predictions
before scoring.

NaN-aware: frames without a prediction (NaN) are left out of their neighbours' averages and stay
NaN themselves. Without NaNs the result is exactly the reference filter; with NaNs each output is
the mean of the valid values in its window, where frames outside the video still count as zeros
(``mode="constant"``), so that edges behave as in the reference.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter1d

VALENCE_WINDOW = 20  # frames, box filter width for valence (reference)
AROUSAL_WINDOW = 50  # frames, box filter width for arousal (reference)
WINDOWS = (VALENCE_WINDOW, AROUSAL_WINDOW)  # per column of an N x 2 (valence, arousal) array


def smooth(
    values: np.ndarray, windows: tuple[int, ...] = WINDOWS, *, mode: str = "constant"
) -> np.ndarray:
    """Box-filter each column of ``values`` (N x D, one video in frame order) over time.

    ``windows[i]`` is the width in frames for column ``i`` (default: valence 20, arousal 50; a
    width of 1 leaves a column unchanged). ``mode`` is ``uniform_filter1d``'s boundary mode;
    ``"constant"`` (zeros outside) is the reference's. Returns a new float64 array.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(windows):
        raise ValueError(f"values must be N x {len(windows)}, got shape {values.shape}")
    if any(int(w) < 1 for w in windows):
        raise ValueError(f"window widths must be >= 1 frame, got {windows}")
    out = np.full_like(values, np.nan)
    if len(values) == 0:
        return out
    valid = ~np.isnan(values)
    for i, width in enumerate(windows):
        column, present = values[:, i], valid[:, i]
        if int(width) == 1:
            out[:, i] = column
            continue
        if present.all():
            out[:, i] = uniform_filter1d(column, int(width), mode=mode, cval=0.0)
            continue
        # normalised convolution: mean of the valid values in each window; frames outside the
        # video are zeros that count (cval 1 for the weights), as in the reference
        total = uniform_filter1d(np.where(present, column, 0.0), int(width), mode=mode, cval=0.0)
        weight = uniform_filter1d(present.astype(np.float64), int(width), mode=mode, cval=1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, i] = np.where(present & (weight > 0), total / weight, np.nan)
    return out
