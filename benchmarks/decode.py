"""Decoding speed and memory on 640x480 30 fps clips of 1 and 10 minutes.

    python benchmarks/decode.py [--minutes 1 10] [--codec libx264|mpeg4] [--keep DIR]

Builds each clip with PyAV (moving textured content, stereo 48 kHz AAC speech-like audio) into a
temporary folder (or ``--keep DIR``, reused on the next run), then measures, each in a fresh
subprocess so that each peak memory belongs to one measurement only:

- ``iter_frames``: decoded frames per second (RGB, upright) and peak RSS;
- ``AudioReader``: one 32-frame clip window per video frame, as the pipeline asks for them;
  audio seconds decoded per wall-clock second and peak RSS;
- ``load_audio``: the whole track in memory, for comparison (its memory grows with length).

RSS is sampled every 5 ms during each measurement; memory flat in video length shows as the
same peak for both lengths.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTH, HEIGHT, FPS = 640, 480, 30
AUDIO_RATE = 48_000  # Hz
CLIP_FRAMES = 32  # frames per clip window (SPEC 2)


def build(path: Path, minutes: float, codec: str) -> Path:
    """A 640x480 30 fps clip with moving texture and a stereo speech-like AAC track."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 256, (HEIGHT, WIDTH * 2, 3), dtype=np.uint8)
    texture = (texture // 2 + np.linspace(0, 127, WIDTH * 2, dtype=np.uint8)[None, :, None]).astype(
        np.uint8
    )
    frames = round(minutes * 60 * FPS)
    partial = path.with_suffix(".part.mp4")
    with av.open(str(partial), "w") as out:
        video = out.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = 2_000_000
        if codec == "libx264":
            video.options = {"preset": "veryfast"}
        audio = out.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        size = audio.codec_context.frame_size or 1024
        written = 0
        for i in range(frames):
            shift = (i * 4) % WIDTH
            image = np.ascontiguousarray(texture[:, shift : shift + WIDTH])
            box = (i * 7) % (WIDTH - 80)
            image[200:280, box : box + 80] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(video.encode(frame))
            while written < (i + 1) * AUDIO_RATE // FPS:  # keep audio interleaved with video
                t = (written + np.arange(size)) / AUDIO_RATE
                voice = np.sin(2 * np.pi * (150 + 40 * np.sin(2 * np.pi * 0.7 * t)) * t)
                mono = 0.3 * np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * voice
                block = np.stack([mono, 0.5 * mono]).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(block, format="fltp", layout="stereo")
                chunk.sample_rate, chunk.time_base = AUDIO_RATE, Fraction(1, AUDIO_RATE)
                chunk.pts = written
                out.mux(audio.encode(chunk))
                written += size
        out.mux(video.encode())
        out.mux(audio.encode())
    partial.rename(path)
    return path


def rss_mib() -> float:
    """Current resident set size (Linux /proc)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


class RssSampler(threading.Thread):
    """Samples the current RSS every few milliseconds; ``stop()`` returns the largest seen.

    (``ru_maxrss`` would not do: a forked child starts with its parent's high-water mark.)
    """

    def __init__(self, interval: float = 0.005):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, rss_mib(), True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mib())
            time.sleep(self.interval)

    def stop(self) -> float:
        self.running = False
        self.join()
        return max(self.peak, rss_mib())


def measure(path: Path, what: str) -> dict:
    """One measurement, run in its own process."""
    from avemo.decode import AudioReader, iter_frames, load_audio, probe

    info = probe(path)
    base = rss_mib()
    sampler = RssSampler()
    sampler.start()
    start = time.perf_counter()
    if what == "video":
        count = 0
        for frame in iter_frames(path, info=info):
            count += frame.image.shape[0] > 0
        seconds = time.perf_counter() - start
        result = {"frames": count, "fps": count / seconds}
    elif what == "reader":
        period = 1.0 / info.fps
        with AudioReader(path) as reader:
            for end in range(info.num_frames):
                reader.window((end - CLIP_FRAMES + 1) * period, (end + 1) * period)
        seconds = time.perf_counter() - start
        result = {"windows": info.num_frames, "realtime": info.duration / seconds}
    else:
        audio = load_audio(path, info=info)
        seconds = time.perf_counter() - start
        result = {"samples": len(audio.samples), "realtime": info.duration / seconds}
    return result | {"seconds": seconds, "base_mib": base, "peak_mib": sampler.stop()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10])
    parser.add_argument("--codec", default="libx264", choices=["libx264", "mpeg4"])
    parser.add_argument("--keep", type=Path, help="folder to build the clips in and reuse")
    parser.add_argument("--measure", nargs=2, metavar=("PATH", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.keep or Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"{WIDTH}x{HEIGHT} {FPS} fps {args.codec}, stereo {AUDIO_RATE} Hz AAC")
        for minutes in args.minutes:
            path = folder / f"bench_{minutes:g}min_{args.codec}.mp4"
            start = time.perf_counter()
            build(path, minutes, args.codec)
            print(
                f"\n{minutes:g} min ({path.stat().st_size / 2**20:.0f} MiB, built/reused in "
                f"{time.perf_counter() - start:.0f} s)"
            )
            for what in ("video", "reader", "load_audio"):
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(path), what],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(out.stdout)
                speed = (
                    f"{r['fps']:.0f} frames/s"
                    if what == "video"
                    else (f"{r['realtime']:.0f}x real time")
                )
                print(
                    f"  {what:<10} {speed:>18}  {r['seconds']:6.1f} s  RSS {r['base_mib']:.0f} MiB "
                    f"before, peak {r['peak_mib']:.0f} MiB (+{r['peak_mib'] - r['base_mib']:.0f})"
                )


if __name__ == "__main__":
    main()
