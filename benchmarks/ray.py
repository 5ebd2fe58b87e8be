"""Benchmark `avemo annotate --ray`: Ray's overhead per video against a local run, and the
throughput with 1 and 2 workers.

    python benchmarks/ray.py              # 8 copies of the sample clip
    python benchmarks/ray.py --videos 16

The folder holds ``--videos`` copies of the sample clip (176x144, 120 frames, a person talking;
short on purpose, so that a per-video cost shows). Each run is a fresh ``python -m avemo
annotate`` process with the default model, each configuration ``--repeats`` times (the fastest
run counts: this machine is shared). "batch s" is the time the command itself reports in its
summary line (from the first video to the last: model loading included, interpreter start-up
excluded); "wall s" is the whole process; "in videos s" is the sum of the time annotate spent
inside the videos (each provenance record's ``elapsed_s``), so that "overhead s/video" = (batch
- in videos / workers) / videos is what a run costs around the videos: for a local run loading
the model and writing, for Ray also submitting, scheduling, serialising and starting workers
(which then load the model). Ray runs on a real cluster on this machine (tests/raycluster.py:
token auth, 1 CPU per node; 1 node for 1 worker, 2 nodes for 2), started before the timed
command, as a cluster would be. Also timed: a no-op Ray task per video (the pure scheduling
round trip) and the cluster's start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import raycluster  # noqa: E402

from avemo.files import sample_video  # noqa: E402


def annotate(folder: Path, out: Path, *extra: str, env=None) -> tuple[float, float, float]:
    """(wall s, batch s from the summary line, s inside the videos) of one `avemo annotate`."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "avemo", "annotate", str(folder), "-o", str(out), "--no-progress",
         *extra],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(result.stderr)
    batch = float(re.search(r"in ([\d.]+) s", result.stderr.splitlines()[-1]).group(1))
    inside = sum(json.loads(p.read_text())["elapsed_s"] for p in out.rglob("*.json"))
    return wall, batch, inside


def fastest(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return min(runs, key=lambda run: run[1])


def noop_round_trip(cluster: raycluster.Cluster, tasks: int) -> float:
    """Seconds per no-op task (1 CPU each) submitted and collected by a driver, warm workers."""
    code = (
        "import ray, time\n"
        f"ray.init(address={cluster.address!r}, log_to_driver=False)\n"
        "f = ray.remote(num_cpus=1)(lambda i: i)\n"
        "ray.get([f.remote(i) for i in range(4)])\n"
        "t = time.perf_counter()\n"
        f"ray.get([f.remote(i) for i in range({tasks})])\n"
        f"print((time.perf_counter() - t) / {tasks})\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="avemo-ray-bench-"))
    try:
        folder = work / "in"
        folder.mkdir()
        for i in range(args.videos):
            shutil.copy(sample_video(), folder / f"clip{i:02d}.mp4")
        n = args.videos
        print(f"{n} videos of 120 frames (176x144), default model, {os.cpu_count()} CPU cores, "
              f"load average {os.getloadavg()[0]:.1f} at the start")  # fmt: skip
        local = [annotate(folder, work / "local") for _ in range(args.repeats)]
        rows = [("local (1 process)", 1, fastest(local), None)]
        for nodes in (1, 2):
            start = time.perf_counter()
            cluster = raycluster.Cluster(nodes=nodes)
            started = time.perf_counter() - start
            try:
                runs = [
                    annotate(folder, work / f"ray{nodes}", "--ray", cluster.address,
                             env=cluster.env)
                    for _ in range(args.repeats)
                ]  # fmt: skip
                noop = noop_round_trip(cluster, 50)
            finally:
                cluster.stop()
            name = f"ray, {nodes} worker{'s' * (nodes > 1)}"
            rows.append((name, nodes, fastest(runs), (started, noop)))
        print(f"{'run':<20}{'wall s':>8}{'batch s':>9}{'in videos s':>13}{'videos/s':>10}"
              f"{'overhead s/video':>18}")  # fmt: skip
        for name, workers, (wall, batch, inside), _ in rows:
            overhead = (batch - inside / workers) / n
            print(
                f"{name:<20}{wall:>8.1f}{batch:>9.1f}{inside:>13.1f}{n / batch:>10.2f}"
                f"{overhead:>18.2f}"
            )
        for name, _, _, (started, noop) in rows[1:]:
            print(f"{name}: cluster start {started:.1f} s, no-op task round trip "
                  f"{noop * 1000:.1f} ms")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
