"""Speed, memory and stride cost of ``avemo annotate`` on 640x480 30 fps video.

Builds test videos from the bundled sample clip (a real talking face, played forwards and
backwards, scaled into a 640x480 frame, with a speech-like audio track) and runs each measurement
in its own subprocess so that peak memory is per run. Prints one line per run: frames per second
end to end (decode, detection, alignment, backbones, head, writing), peak RSS and the per-stage
seconds; before them the CCC of each stride's output with stride 1's (for the JCA, over several
random draws of its weights: an untrained network's stride cost depends on the draw).

    python benchmarks/annotate.py                 # default model 1 + 10 min, JCA 1 min, strides
    python benchmarks/annotate.py --minutes 1     # quicker
    python benchmarks/annotate.py --skip-jca
    python benchmarks/annotate.py --backend torch --jca-strides 4 8   # another runtime

The JCA configuration (journal: R(2+1)D-18 112x112 + audio ResNet18 + JCA head, L = 16) has no
trained weights here; it runs with random weights and ``allow_untrained`` purely to time it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FPS = 30
WIDTH, HEIGHT = 640, 480
AUDIO_RATE = 44_100


def make_video(path: Path, seconds: float) -> Path:
    """640x480 30 fps mpeg4 + AAC: the sample face looped, on a grey background, with audio."""
    import av
    import cv2

    from avemo.decode import iter_frames
    from avemo.files import sample_video

    frames = [f.image for f in iter_frames(sample_video())]
    frames = frames + frames[::-1]
    scale = HEIGHT / frames[0].shape[0]
    w = int(frames[0].shape[1] * scale) // 2 * 2
    canvas = np.full((HEIGHT, WIDTH, 3), 96, np.uint8)
    scaled = []
    for image in frames:
        out = canvas.copy()
        x0 = (WIDTH - w) // 2
        out[:, x0 : x0 + w] = cv2.resize(image, (w, HEIGHT), interpolation=cv2.INTER_LINEAR)
        scaled.append(out)
    n = int(seconds * FPS)
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 2_000_000
        audio = container.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        samples_per_frame = 1024
        t = 0
        total = int(seconds * AUDIO_RATE)
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(scaled[i % len(scaled)], format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
            while t < min(total, (i + 1) * AUDIO_RATE // FPS):
                time = (t + np.arange(samples_per_frame)) / AUDIO_RATE
                envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * time)  # syllable-like
                wave = envelope * np.sin(2 * np.pi * 180 * time) * 0.3
                wave += rng.normal(0, 0.02, samples_per_frame)
                chunk = av.AudioFrame.from_ndarray(
                    wave.astype(np.float32)[None], format="fltp", layout="mono"
                )
                chunk.sample_rate, chunk.pts = AUDIO_RATE, t
                for packet in audio.encode(chunk):
                    container.mux(packet)
                t += samples_per_frame
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return path


def jca_checkpoint(path: Path, seed: int = 0) -> Path:
    """The journal JCA configuration with random weights drawn with ``seed`` (marked
    untrained)."""
    import torch

    from avemo import models

    torch.manual_seed(seed)
    net = models.build(
        "pipeline",
        visual={"builder": "r2plus1d_18", "kwargs": {}},
        audio={"builder": "audio_resnet18", "kwargs": {}},
        head={"builder": "jca", "kwargs": {"seq_len": 16}},
        seq_len=16,
    )
    models.save(net, path, provenance={"trained": False, "source": "benchmark: random weights"})
    return path


def peak_rss_mib() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_one(video: str, model: str | None, options: dict, out: str) -> None:
    """Child process: annotate once, write the table and the numbers."""
    import time

    from avemo.annotate import annotate, resolve_model
    from avemo.writers import get_writer

    start = time.perf_counter()
    spec = resolve_model(model, allow_untrained=True)
    table = annotate(video, spec, allow_untrained=True, **options)
    write = time.perf_counter()
    get_writer("csv").write(table, out)
    end = time.perf_counter()
    record = table.attrs["avemo"]
    stages = dict(record["stages_s"], write=end - write)
    result = {
        "frames": len(table),
        "seconds": end - start,
        "fps": len(table) / (end - start),
        "peak_rss_mib": peak_rss_mib(),
        "stages_s": {k: round(v, 2) for k, v in stages.items()},
    }
    print(json.dumps(result))


def measure(video: Path, model: str | None, options: dict, out: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        str(video),
        json.dumps(model),
        json.dumps(options),
        str(out),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stride_ccc(dense: Path, strides) -> list[tuple[float, float]]:
    """Per stride: CCC of the smoothed output at that stride (the dense raw values on its grid,
    interpolated) with the smoothed dense output, valence and arousal."""
    import pandas as pd

    from avemo.clips import clip_ends, to_frames
    from avemo.metrics import ccc
    from avemo.smoothing import smooth

    raw = pd.read_csv(dense)[["valence_raw", "arousal_raw"]].to_numpy()
    reference = smooth(raw)
    out = []
    for stride in strides:
        ends = clip_ends(len(raw), stride)
        sparse = smooth(to_frames(ends, raw[ends], len(raw)))
        keep = np.isfinite(reference[:, 0]) & np.isfinite(sparse[:, 0])
        out.append(tuple(float(ccc(sparse[keep, d], reference[keep, d])) for d in range(2)))
    return out


def report(label: str, r: dict) -> None:
    print(
        f"{label}: {r['fps']:.1f} fps, peak RSS {r['peak_rss_mib']:.0f} MiB, "
        f"stages (s) {r['stages_s']}",
        flush=True,
    )


def main() -> None:
    from avemo.annotate import DEFAULT_STRIDE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--skip-jca", action="store_true")
    parser.add_argument("--backend", default="auto", help="--backend of every run (auto)")
    parser.add_argument(
        "--seeds", type=int, default=5, help="random JCAs whose stride cost is measured (5)"
    )
    parser.add_argument("--jca-strides", type=int, nargs="+", default=[DEFAULT_STRIDE["pipeline"]])
    parser.add_argument(
        "--stride-seconds",
        type=float,
        default=20.0,
        help="length of the clip for the stride-1 comparison",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # a cache of its own: the first (stride) runs convert the networks, the timed runs
        # after them find the conversions cached, as every run after a user's first does
        os.environ["AVEMO_HOME"] = str(tmp / "cache")
        jca = str(jca_checkpoint(tmp / "jca.safetensors"))
        short = make_video(tmp / "short.mp4", args.stride_seconds)
        # what each stride costs, from one stride-1 run per model: the clips a stride computes
        # are exactly those of stride 1 (tests/test_annotate.py), so a stride's output is the
        # dense output's values on its grid, interpolated and smoothed as annotate does
        runs = [("default model", None, {"backend": args.backend}, (2, 4, 8))]
        if not args.skip_jca:
            for seed in range(args.seeds):
                model = str(jca_checkpoint(tmp / f"jca_seed{seed}.safetensors", seed))
                label = f"JCA (random weights, seed {seed}), bf16"
                runs.append((label, model, {"bf16": True, "backend": args.backend}, (4, 8, 16)))
        for label, model, options, strides in runs:
            dense = tmp / "dense.csv"
            measure(short, model, {**options, "stride": 1, "smooth": False}, dense)
            for stride, (v, a) in zip(strides, stride_ccc(dense, strides), strict=True):
                print(
                    f"{label}: CCC stride {stride} vs stride 1 over {args.stride_seconds:g} s:"
                    f" valence {v:.4f}, arousal {a:.4f}",
                    flush=True,
                )
        for minutes in sorted(args.minutes):
            video = make_video(tmp / f"face_{minutes:g}min.mp4", minutes * 60)
            default = measure(video, None, {"backend": args.backend}, tmp / "d.csv")
            report(f"default model, {minutes:g} min", default)
            if args.skip_jca:
                continue
            for stride in args.jca_strides:
                for bf16 in (True, False) if minutes == min(args.minutes) else (True,):
                    options = {"bf16": bf16, "stride": stride, "backend": args.backend}
                    r = measure(video, jca, options, tmp / "jca.csv")
                    precision = "bf16" if bf16 else "fp32"
                    report(f"JCA L=16 {precision} stride {stride}, {minutes:g} min", r)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        run_one(sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4]), sys.argv[5])
    else:
        main()
