"""Cost of overlay videos: ``avemo render`` encode fps at 640x480, and ``annotate --overlay``
against plain ``annotate`` (default model) on the same 640x480 30 fps video with audio.

Uses the test video of ``benchmarks/annotate.py`` (the sample face on a grey 640x480 background,
synthetic audio). Each annotate run is a fresh process; the two are alternated ``--repeats``
times and the best of each is kept (the machine is shared).

    python benchmarks/overlay.py              # 1 minute of video
    python benchmarks/overlay.py --minutes 0.5
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _annotate_benchmark():
    spec = importlib.util.spec_from_file_location("bench_annotate", HERE / "annotate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(video: str, out: str, overlay: bool) -> None:
    """One ``annotate_file`` run (the work of ``avemo annotate [--overlay]`` for one video)."""
    from avemo.annotate import annotate_file

    start = time.perf_counter()
    table = annotate_file(Path(video), Path(out) / "run", overlay=overlay)
    seconds = time.perf_counter() - start
    record = json.loads((Path(out) / "run.json").read_text())
    print(json.dumps({"frames": len(table), "seconds": seconds, "stages": record["stages_s"]}))


def run_child(video: Path, out: Path, overlay: bool) -> dict:
    command = [sys.executable, __file__, "--child", str(video), str(out), json.dumps(overlay)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import av
    import pandas as pd

    from avemo.decode import iter_frames
    from avemo.render import Overlay, encoder, render

    bench = _annotate_benchmark()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = bench.make_video(tmp / "face.mp4", args.minutes * 60)
        runs = {False: [], True: []}
        for _ in range(args.repeats):
            for overlay in (False, True):
                runs[overlay].append(run_child(video, tmp / f"out{int(overlay)}", overlay))
        for overlay in (False, True):
            best = min(runs[overlay], key=lambda r: r["seconds"])
            fps = best["frames"] / best["seconds"]
            label = "annotate --overlay" if overlay else "annotate          "
            print(
                f"{label}: {fps:.1f} fps ({best['frames']} frames in {best['seconds']:.1f} s, "
                f"best of {args.repeats}); stages (s) {best['stages']}",
                flush=True,
            )
        plain = min(r["seconds"] for r in runs[False])
        with_overlay = min(r["seconds"] for r in runs[True])
        print(f"annotate --overlay runs at {plain / with_overlay:.0%} of the speed without it")

        csv = tmp / "out0" / "run.csv"
        frames = [f.image for f in iter_frames(video)][:300]
        overlay = Overlay(pd.read_csv(csv), 640, 480)
        start = time.perf_counter()
        for index, image in enumerate(frames):
            overlay.draw(image.copy(), index)
        draw = len(frames) / (time.perf_counter() - start)
        start = time.perf_counter()
        out = render(csv, video, tmp / "render.mp4")
        seconds = time.perf_counter() - start
        with av.open(str(out)) as container:
            count = container.streams.video[0].frames
        print(
            f"avemo render at 640x480 ({encoder()}): {count / seconds:.1f} fps "
            f"({count} frames in {seconds:.1f} s: decode, draw, encode, audio copy); "
            f"drawing alone {draw:.0f} fps",
            flush=True,
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
    else:
        main()
