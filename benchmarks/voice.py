"""Cost of the ``voice`` column: Silero VAD (ONNX, onnxruntime, 1 thread) per minute of audio.

Times :func:`avemo.voice.frame_voice` end to end on the 640x480 test video of
``benchmarks/annotate.py`` (decoding its AAC audio to 16 kHz, the model, the per-frame window
means), and the model alone on the decoded samples.

    python benchmarks/voice.py                # 1 and 10 minutes
    python benchmarks/voice.py --minutes 1
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    args = parser.parse_args()
    import numpy as np

    from avemo.decode import load_audio, probe
    from avemo.voice import VAD_RATE, Detector, frame_voice

    spec = importlib.util.spec_from_file_location("bench_annotate", HERE / "annotate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    Detector()  # load the model once, outside the timings
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            video = bench.make_video(Path(tmp) / f"v{minutes:g}.mp4", minutes * 60)
            info = probe(video)
            times = np.arange(info.num_frames) / info.fps + info.start
            start = time.perf_counter()
            voice = frame_voice(video, times, info.fps)
            total = time.perf_counter() - start
            samples = load_audio(video, VAD_RATE, info=info).samples
            samples = samples[: len(samples) // 512 * 512]
            start = time.perf_counter()
            detector = Detector()
            for block in range(0, len(samples), 512 * 512):
                detector(samples[block : block + 512 * 512])
            model = time.perf_counter() - start
            print(
                f"{minutes:g} min: voice column {total / minutes:.2f} s per minute of audio "
                f"(decode + model + windows; mean voice {voice.mean():.2f}), "
                f"model alone {model / minutes:.2f} s per minute",
                flush=True,
            )


if __name__ == "__main__":
    main()
