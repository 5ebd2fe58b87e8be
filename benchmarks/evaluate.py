"""Time `avemo.evaluate` on a synthetic set the size of Aff-Wild2's validation set.

70 videos, 376,000 frames in all (label files with -5 stretches; avemo CSVs with NaN stretches),
written to a temporary folder; then reading + scoring, smoothing, video pooling, the bootstrap
and the plots are timed separately. Usage: python benchmarks/evaluate.py [--videos N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from avemo.evaluate import evaluate
from avemo.metrics import ccc

FRAMES = 376_000  # about Aff-Wild2's validation set


def synthesise(root: Path, videos: int, seed: int = 0) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    lengths = rng.multinomial(FRAMES - 500 * videos, np.full(videos, 1 / videos)) + 500
    (root / "labels").mkdir()
    (root / "pred").mkdir()
    for i, n in enumerate(lengths):
        label = np.tanh(np.cumsum(rng.normal(0, 0.03, (n, 2)), axis=0))
        pred = np.clip(label + rng.normal(0, 0.25, (n, 2)), -1, 1)
        label[rng.integers(n) :][: n // 20] = -5.0
        pred[rng.integers(n) :][: n // 50] = np.nan
        pd.DataFrame(label, columns=["valence", "arousal"]).to_csv(
            root / "labels" / f"video{i}.txt", index=False, float_format="%.3f"
        )
        frames = np.arange(n)
        pd.DataFrame(
            {
                "frame": frames,
                "timestamp": frames / 30,
                "face_id": 0,
                "success": 1,
                "confidence": 0.9,
                "valence": pred[:, 0],
                "arousal": pred[:, 1],
                "face_x": 100.0,
                "face_y": 80.0,
                "face_width": 120.0,
                "face_height": 150.0,
            }
        ).to_csv(root / "pred" / f"video{i}.csv", index=False, float_format="%.6f")
    return root / "pred", root / "labels"


def timed(label: str, function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    print(f"{label:42s} {time.perf_counter() - start:7.2f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=70)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pred, labels = timed("synthesise", synthesise, Path(tmp), args.videos)
        result = timed("evaluate (read + score, concat)", evaluate, pred, labels)
        print(f"  {result.summary['n_videos']} videos, {result.summary['n_frames']} frames")
        timed("evaluate --smooth", evaluate, pred, labels, smooth=True)
        timed("evaluate --pooling video", evaluate, pred, labels, pooling="video")
        timed("evaluate --bootstrap 1000", evaluate, pred, labels, bootstrap=1000)
        timed(
            "evaluate --plots (every video + scatter)",
            evaluate,
            pred,
            labels,
            plots=Path(tmp) / "p",
        )
        x = np.random.default_rng(1).normal(size=(2, FRAMES))
        timed(f"ccc() on {FRAMES} frames, 100 times", lambda: [ccc(*x) for _ in range(100)])


if __name__ == "__main__":
    main()
